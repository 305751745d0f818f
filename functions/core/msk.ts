/**
 * The shape of the event Lambda's Amazon MSK / self-managed Kafka event source mapping delivers.
 * Keys and values are base64; headers are arrays of single-entry objects whose value is the header's bytes.
 */

/** One header: its name and its value's bytes (null for a header without a value). */
export interface MskRecordHeader {
  [name: string]: number[] | null;
}

export interface MskRecord {
  topic: string;
  partition: number;
  offset: number;
  timestamp: number;
  timestampType: "CREATE_TIME" | "LOG_APPEND_TIME" | string;
  key?: string | null;
  value?: string | null;
  headers?: MskRecordHeader[];
}

/**
 * The eventSource values accepted: "aws:kafka" from an Amazon MSK event source mapping; "SelfManagedKafka" from a
 * self-managed Apache Kafka one (the Lambda Developer Guide's example event for self-managed Kafka), and
 * "aws:SelfManagedKafka", which other published self-managed examples show. The event shape is the same.
 */
export const EVENT_SOURCES = ["aws:kafka", "SelfManagedKafka", "aws:SelfManagedKafka"] as const;
export type EventSource = (typeof EVENT_SOURCES)[number];

export interface MskEvent {
  eventSource: EventSource;
  eventSourceArn?: string;
  bootstrapServers?: string;
  /** Records grouped by "topic-partition", each group in offset order. */
  records: Record<string, MskRecord[]>;
}

export class InvalidEventError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidEventError";
  }
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/**
 * Checks that `event` is an MSK event and returns it typed; otherwise throws an InvalidEventError that says what
 * is wrong. Checks the envelope and each record's coordinates, not the record contents (bad contents go to the DLQ).
 */
export function parseMskEvent(event: unknown): MskEvent {
  if (!isObject(event)) throw new InvalidEventError("not an MSK event: expected a JSON object");
  if (!(EVENT_SOURCES as readonly unknown[]).includes(event.eventSource)) {
    const quoted = EVENT_SOURCES.map((source) => JSON.stringify(source));
    const accepted = `${quoted.slice(0, -1).join(", ")} or ${quoted.at(-1)}`;
    throw new InvalidEventError(
      `not an MSK event: eventSource must be ${accepted}, got ${JSON.stringify(event.eventSource) ?? "nothing"}`,
    );
  }
  if (!isObject(event.records)) {
    throw new InvalidEventError('not an MSK event: "records" must be an object of "topic-partition" arrays');
  }
  for (const [group, records] of Object.entries(event.records)) {
    if (!Array.isArray(records)) {
      throw new InvalidEventError(`not an MSK event: records["${group}"] must be an array`);
    }
    for (let i = 0; i < records.length; i++) {
      const record: unknown = records[i];
      const where = `records["${group}"][${i}]`;
      if (!isObject(record)) throw new InvalidEventError(`not an MSK event: ${where} must be an object`);
      if (typeof record.topic !== "string") throw new InvalidEventError(`${where}.topic must be a string`);
      if (!Number.isInteger(record.partition)) throw new InvalidEventError(`${where}.partition must be an integer`);
      if (!Number.isInteger(record.offset)) throw new InvalidEventError(`${where}.offset must be an integer`);
      if (record.value != null && typeof record.value !== "string") {
        throw new InvalidEventError(`${where}.value must be a base64 string or null`);
      }
      if (record.key != null && typeof record.key !== "string") {
        throw new InvalidEventError(`${where}.key must be a base64 string or null`);
      }
      if (record.headers != null && !Array.isArray(record.headers)) {
        throw new InvalidEventError(`${where}.headers must be an array`);
      }
    }
  }
  return event as unknown as MskEvent;
}

/** The identifier Lambda uses for a record group: "topic-partition". */
export const partitionId = (record: Pick<MskRecord, "topic" | "partition">): string =>
  `${record.topic}-${record.partition}`;
