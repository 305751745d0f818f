/**
 * Builds the event payload Lambda's Kafka event source mapping sends, from records a Kafka consumer fetched.
 */
import type { MskEvent, MskRecord, MskRecordHeader } from "../core/msk.ts";

/** What the harness needs of a fetched Kafka message (kafkajs's KafkaMessage fits). */
export interface FetchedMessage {
  readonly offset: string;
  readonly timestamp: string;
  readonly attributes?: number;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers?: Readonly<Record<string, Buffer | string | (Buffer | string)[] | undefined>>;
}

/** Kafka's record-batch attribute bit for LOG_APPEND_TIME timestamps. */
const LOG_APPEND_TIME = 0x08;

function headersOf(message: FetchedMessage): MskRecordHeader[] {
  const headers: MskRecordHeader[] = [];
  for (const name in message.headers) {
    const value = message.headers[name];
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) headers.push({ [name]: [...Buffer.from(v)] });
  }
  return headers;
}

/** One record as Lambda delivers it: base64 key (absent when null) and value (null for a tombstone). */
export function toMskRecord(topic: string, partition: number, message: FetchedMessage): MskRecord {
  const record: MskRecord = {
    topic,
    partition,
    offset: Number(message.offset),
    timestamp: Number(message.timestamp),
    timestampType: (message.attributes ?? 0) & LOG_APPEND_TIME ? "LOG_APPEND_TIME" : "CREATE_TIME",
    value: message.value === null ? null : message.value.toString("base64"),
    headers: headersOf(message),
  };
  if (message.key !== null) record.key = message.key.toString("base64");
  return record;
}

/** Bytes a record adds to the event's JSON (Lambda's 6 MB limit is on the payload): exact, plus the comma. */
export function mskRecordBytes(record: MskRecord): number {
  return JSON.stringify(record).length + 1;
}

export function buildMskEvent(
  groups: ReadonlyMap<string, readonly MskRecord[]>,
  source: { eventSourceArn: string; bootstrapServers: string },
): MskEvent {
  const records: Record<string, MskRecord[]> = {};
  for (const [id, group] of groups) records[id] = [...group];
  return {
    eventSource: "aws:kafka",
    eventSourceArn: source.eventSourceArn,
    bootstrapServers: source.bootstrapServers,
    records,
  };
}
