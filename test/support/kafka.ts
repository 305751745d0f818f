/**
 * Test helpers on a real broker: unique topics, producing, reading a topic to its end, group lag, polling waits.
 */
import { randomUUID } from "node:crypto";
import type { IHeaders, Kafka } from "kafkajs";
import { inject } from "vitest";
import { createKafka } from "../../functions/shared/kafka.ts";
import { ensureTopics } from "../../functions/shared/topics.ts";

export function testKafka(clientId = "test"): { kafka: Kafka; brokers: string[] } {
  const brokers = inject("kafkaBrokers").split(",");
  return { kafka: createKafka({ brokers, clientId }), brokers };
}

export interface PipelineTopics {
  source: string;
  processed: string;
  deadLetter: string;
}

/** A unique source/processed/DLQ topic trio, created on the broker. */
export async function createTopicTrio(kafka: Kafka, partitions = 3): Promise<PipelineTopics> {
  const id = randomUUID().slice(0, 8);
  const topics = {
    source: `user-login-${id}`,
    processed: `processed-user-login-${id}`,
    deadLetter: `user-login-dlq-${id}`,
  };
  await ensureTopics(kafka, [
    { topic: topics.source, numPartitions: partitions },
    { topic: topics.processed, numPartitions: partitions },
    { topic: topics.deadLetter, numPartitions: 1 },
  ]);
  return topics;
}

export interface ReadRecord {
  partition: number;
  offset: number;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, string>;
}

function headerStrings(headers: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (value !== undefined) out[name] = (Array.isArray(value) ? value[value.length - 1] : value)?.toString() ?? "";
  }
  return out;
}

/** Every record of a topic, from the beginning to the end offsets as they are now. */
export async function readTopic(kafka: Kafka, topic: string, timeoutMs = 30_000): Promise<ReadRecord[]> {
  const admin = kafka.admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const remaining = new Map(ends.filter((p) => Number(p.high) > 0).map((p) => [p.partition, Number(p.high)]));
  const records: ReadRecord[] = [];
  if (remaining.size === 0) return records;
  const consumer = kafka.consumer({ groupId: `reader-${randomUUID()}`, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`reading ${topic} timed out with ${records.length} records`)),
        timeoutMs,
      );
      void consumer.run({
        eachMessage: async ({ partition, message }) => {
          records.push({
            partition,
            offset: Number(message.offset),
            key: message.key,
            value: message.value,
            headers: headerStrings(message.headers),
          });
          const end = remaining.get(partition);
          if (end !== undefined && Number(message.offset) + 1 >= end) remaining.delete(partition);
          if (remaining.size === 0) {
            clearTimeout(timer);
            resolve();
          }
        },
      });
    });
  } finally {
    await consumer.disconnect();
  }
  return records;
}

/** Sum over partitions of (end offset - committed offset) for a group. */
export async function groupLag(kafka: Kafka, groupId: string, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const ends = await admin.fetchTopicOffsets(topic);
    const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
    let lag = 0;
    for (const end of ends) {
      const offset = Number(committed?.partitions.find((p) => p.partition === end.partition)?.offset ?? -1);
      lag += Number(end.high) - Math.max(0, offset);
    }
    return lag;
  } finally {
    await admin.disconnect();
  }
}

/** Polls `check` every `intervalMs` until it returns true; fails with `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 30_000,
  intervalMs = 200,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
