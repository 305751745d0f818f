/**
 * Reading a topic from the beginning to its end offsets as they are when the read starts, without committing
 * anything (a throw-away consumer group, deleted afterwards). For the DLQ tools and the tests.
 */
import { randomUUID } from "node:crypto";
import type { Kafka } from "kafkajs";
import { fetchedHeaders } from "../shared/kafka.ts";

/** Headers as fetched, repaired (see fetchedHeaders), in an object without a prototype; null for no value. */
export type TopicHeaders = Record<string, Buffer | null | (Buffer | null)[]>;

/** The pairs as a prototype-free object; a repeated name holds an array, in order. */
export function headerObject(pairs: readonly [string, Buffer | null][]): TopicHeaders {
  const headers = Object.create(null) as TopicHeaders;
  for (const [name, value] of pairs) {
    const existing = headers[name];
    if (existing === undefined) headers[name] = value;
    else if (Array.isArray(existing)) existing.push(value);
    else headers[name] = [existing, value];
  }
  return headers;
}

export interface TopicRecord {
  readonly partition: number;
  readonly offset: number;
  /** Epoch milliseconds. */
  readonly timestamp: number;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  /** The value's size when it was cut as it was read (ReadOptions.maxValueBytes); absent when whole. */
  readonly valueBytes?: number;
  readonly headers: TopicHeaders;
}

export interface ReadOptions {
  /** @default 30000 */
  readonly idleTimeoutMs?: number;
  /** Keep only this many bytes of each value (a page shows a few thousand characters; a value can be a megabyte). */
  readonly maxValueBytes?: number;
}

/** The last value of a header as text, or undefined. */
export function headerText(headers: TopicHeaders, name: string): string | undefined {
  const value = headers[name];
  const last = Array.isArray(value) ? value[value.length - 1] : value;
  return last === undefined ? undefined : last === null ? "" : last.toString();
}

/**
 * Reads until the end offsets; fails only when nothing arrives for `idleTimeoutMs` (large topics take long). With
 * `lastPerPartition`, only that many records at the end of each partition (a topic's latest records, for the console).
 */
export async function readTopic(
  kafka: Kafka,
  topic: string,
  idleTimeoutMs = 30_000,
  lastPerPartition?: number,
  options: ReadOptions = {},
): Promise<TopicRecord[]> {
  const maxValueBytes = options.maxValueBytes;
  const admin = kafka.admin();
  await admin.connect();
  const records: TopicRecord[] = [];
  const groupId = `reader-${randomUUID()}`;
  try {
    const ends = await admin.fetchTopicOffsets(topic);
    const remaining = new Map(
      ends.filter((p) => Number(p.high) > Number(p.low)).map((p) => [p.partition, Number(p.high)] as const),
    );
    const starts = new Map(
      ends.map((p) => {
        const low = Number(p.low);
        const from = lastPerPartition === undefined ? low : Math.max(low, Number(p.high) - lastPerPartition);
        return [p.partition, from] as const;
      }),
    );
    if (remaining.size === 0) return records;
    const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 100 });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    try {
      await new Promise<void>((resolve, reject) => {
        const idle = () =>
          setTimeout(
            () =>
              reject(
                new Error(`reading ${topic}: nothing arrived for ${idleTimeoutMs} ms, at ${records.length} records`),
              ),
            idleTimeoutMs,
          );
        let timer = idle();
        // A consumer that gives up (an authorization refusal, say) fails the read now, not after the idle timeout.
        consumer.on(consumer.events.CRASH, ({ payload }) => {
          if (payload.restart) return;
          clearTimeout(timer);
          reject(new Error(`reading ${topic}: ${payload.error.message}`, { cause: payload.error }));
        });
        void consumer.run({
          autoCommit: false,
          eachMessage: async ({ partition, message }) => {
            const end = remaining.get(partition);
            const offset = Number(message.offset);
            if (end === undefined || offset >= end || offset < (starts.get(partition) ?? 0)) return;
            clearTimeout(timer);
            timer = idle();
            const value = message.value;
            const cut = value !== null && maxValueBytes !== undefined && value.length > maxValueBytes;
            records.push({
              partition,
              offset,
              timestamp: Number(message.timestamp),
              key: message.key,
              // A copy: a slice would keep the whole fetched batch in memory.
              value: cut ? Buffer.from(value.subarray(0, maxValueBytes)) : value,
              ...(cut ? { valueBytes: value.length } : {}),
              headers: headerObject(fetchedHeaders(message.headers)),
            });
            if (offset + 1 >= end) remaining.delete(partition);
            if (remaining.size === 0) {
              clearTimeout(timer);
              resolve();
            }
          },
        });
        // A seek takes effect once run() has the partitions: the reader then starts at each partition's tail.
        if (lastPerPartition !== undefined) {
          for (const [partition, offset] of starts) {
            if (remaining.has(partition)) consumer.seek({ topic, partition, offset: String(offset) });
          }
        }
      });
    } finally {
      await consumer.disconnect();
      await admin.deleteGroups([groupId]).catch(() => {});
    }
    return records.sort((a, b) => a.partition - b.partition || a.offset - b.offset);
  } finally {
    await admin.disconnect();
  }
}
