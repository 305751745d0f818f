/**
 * Builds the event payload Lambda's Kafka event source mapping sends, from records a Kafka consumer fetched.
 */
import type { MskEvent, MskRecord, MskRecordHeader } from "../core/msk.ts";
import { fetchedHeaders } from "../shared/kafka.ts";

/** What the harness needs of a fetched Kafka message (kafkajs's KafkaMessage fits). */
export interface FetchedMessage {
  readonly offset: string;
  readonly timestamp: string;
  readonly attributes?: number;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers?: Readonly<Record<string, Buffer | string | null | (Buffer | string | null)[] | undefined>>;
  /**
   * The record batch the message came in (kafkajs sets it on every message of a v2 record batch, though its types
   * omit it): `timestampType` is decoded from the batch attributes, 1 for LOG_APPEND_TIME, 0 for CREATE_TIME.
   * A record's own `attributes` byte is unused in v2, so the timestamp type is only here.
   */
  readonly batchContext?: { readonly timestampType?: number };
}

/** The timestamp-type bit of the attributes of a v2 record batch, and of a v1 message (legacy message sets). */
const LOG_APPEND_TIME = 0x08;
/** kafkajs's TimestampTypes.LOG_APPEND_TIME, as decoded from a record batch's attributes. */
const KAFKAJS_LOG_APPEND_TIME = 1;

/** LOG_APPEND_TIME when the batch's attributes (or, for a legacy v1 message, its own) say so. */
function timestampTypeOf(message: FetchedMessage): "CREATE_TIME" | "LOG_APPEND_TIME" {
  const fromBatch = message.batchContext?.timestampType;
  const logAppend =
    fromBatch === undefined
      ? ((message.attributes ?? 0) & LOG_APPEND_TIME) !== 0
      : fromBatch === KAFKAJS_LOG_APPEND_TIME;
  return logAppend ? "LOG_APPEND_TIME" : "CREATE_TIME";
}

/** Lambda's header list: one single-entry object per header, its value as a byte array (null without a value). */
function headersOf(message: FetchedMessage): MskRecordHeader[] {
  return fetchedHeaders(message.headers).map(([name, value]) => {
    // An own property, whatever the name: `{ [name]: ... }` would turn "__proto__" into the object's prototype.
    const header = Object.create(null) as MskRecordHeader;
    Object.defineProperty(header, name, { value: value === null ? null : [...value], enumerable: true });
    return header;
  });
}

/** One record as Lambda delivers it: base64 key (absent when null) and value (null for a tombstone). */
export function toMskRecord(topic: string, partition: number, message: FetchedMessage): MskRecord {
  const record: MskRecord = {
    topic,
    partition,
    offset: Number(message.offset),
    timestamp: Number(message.timestamp),
    // For a LOG_APPEND_TIME batch kafkajs gives every record the batch's maxTimestamp: the broker's append time.
    timestampType: timestampTypeOf(message),
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
