/**
 * Test helpers on a real broker: unique topics, producing, reading a topic to its end, group lag, polling waits.
 */
import { randomUUID } from "node:crypto";
import kafkajs, { CompressionTypes, type Kafka } from "kafkajs";
import { inject } from "vitest";
import type { MskEvent } from "../../functions/core/msk.ts";
import { type HarnessOptions, MskEventSourceHarness } from "../../functions/local/harness.ts";
import { lambdaContext } from "../../functions/local/lambda-runtime.ts";
import { headerText, readTopic as readTopicRecords } from "../../functions/local/read-topic.ts";
import { containerSender, createHandler, type HandlerResponse } from "../../functions/processor/processor.ts";
import { loadProcessorConfig } from "../../functions/shared/config.ts";
import { createKafka, createProducer } from "../../functions/shared/kafka.ts";
import { sizeConfigs } from "../../functions/shared/topic-settings.ts";
import { ensureTopics, groupLag } from "../../functions/shared/topics.ts";

export { groupLag };

const { CompressionCodecs } = kafkajs;

export function testKafka(clientId = "test"): { kafka: Kafka; brokers: string[] } {
  const brokers = inject("kafkaBrokers").split(",");
  return { kafka: createKafka({ brokers, clientId }), brokers };
}

export interface PipelineTopics {
  source: string;
  processed: string;
  deadLetter: string;
}

/** A unique source/processed/DLQ topic trio, created on the broker with each role's max.message.bytes. */
export async function createTopicTrio(kafka: Kafka, partitions = 3): Promise<PipelineTopics> {
  const id = randomUUID().slice(0, 8);
  const topics = {
    source: `user-login-${id}`,
    processed: `processed-user-login-${id}`,
    deadLetter: `user-login-dlq-${id}`,
  };
  await ensureTopics(kafka, [
    { topic: topics.source, numPartitions: partitions, configs: sizeConfigs("source") },
    { topic: topics.processed, numPartitions: partitions, configs: sizeConfigs("processed") },
    { topic: topics.deadLetter, numPartitions: 1, configs: sizeConfigs("deadLetter") },
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

/** Every record of a topic, from the beginning to the end offsets as they are now; headers as text. */
export async function readTopic(kafka: Kafka, topic: string, timeoutMs = 30_000): Promise<ReadRecord[]> {
  return (await readTopicRecords(kafka, topic, timeoutMs)).map((record) => ({
    partition: record.partition,
    offset: record.offset,
    key: record.key,
    value: record.value,
    headers: Object.fromEntries(
      Object.keys(record.headers).map((name) => [name, headerText(record.headers, name) ?? ""]),
    ),
  }));
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

/**
 * Runs the emulated event source mapping on the shared broker with a fresh consumer group until that group has
 * committed every offset of `options.topic`, then stops it.
 */
export async function drain(
  options: Omit<HarnessOptions, "kafka" | "bootstrapServers" | "groupId">,
  timeoutMs = 60_000,
): Promise<{ harness: MskEventSourceHarness; groupId: string }> {
  const { kafka, brokers } = testKafka("drain");
  const groupId = `group-${randomUUID()}`;
  const harness = new MskEventSourceHarness({ ...options, kafka, bootstrapServers: brokers.join(","), groupId });
  await harness.start();
  try {
    await waitFor(
      `${options.topic} drained`,
      async () => (await groupLag(kafka, groupId, options.topic)) === 0,
      timeoutMs,
    );
  } finally {
    await harness.stop();
  }
  return { harness, groupId };
}

/** Produces records (acks=all) in one request, compressed with `compression` (none by default). */
export async function produce(
  kafka: Kafka,
  topic: string,
  records: readonly { key: string | Buffer | null; value: string | Buffer | null }[],
  compression: CompressionTypes = CompressionTypes.None,
): Promise<void> {
  const producer = createProducer(kafka);
  await producer.connect();
  try {
    await producer.send({
      topic,
      acks: -1,
      compression,
      messages: records.map((r) => ({ key: r.key, value: r.value })),
    });
  } finally {
    await producer.disconnect();
  }
}

/** Points the processor's environment (read when its module loads) at the shared broker and these topics. */
export function processorEnvironment(brokers: readonly string[], topics: PipelineTopics): void {
  Object.assign(process.env, {
    KAFKA_BROKERS: brokers.join(","),
    SOURCE_TOPIC: topics.source,
    PROCESSED_TOPIC: topics.processed,
    DLQ_TOPIC: topics.deadLetter,
  });
}

/** The real handler with its own producer container, configured for the shared broker and these topics. */
export function processorFor(topics: PipelineTopics, env: Record<string, string> = {}) {
  const config = loadProcessorConfig({
    KAFKA_BROKERS: inject("kafkaBrokers"),
    SOURCE_TOPIC: topics.source,
    PROCESSED_TOPIC: topics.processed,
    DLQ_TOPIC: topics.deadLetter,
    ...env,
  });
  const container = containerSender(config);
  const handler = createHandler({ config, getSender: container.getSender });
  return {
    /** With the harness's timeout, as Lambda gives it: the sender stops starting requests near the deadline. */
    invoke: (event: MskEvent, timeoutMs?: number) =>
      handler(event, lambdaContext(undefined, timeoutMs)) as Promise<HandlerResponse>,
    close: container.close,
    container,
  };
}

type Factory = () => { compress(e: unknown): Promise<Buffer>; decompress(b: Buffer): Promise<Buffer> };

const CODEC_NAMES: Record<number, string> = {
  [CompressionTypes.GZIP]: "gzip",
  [CompressionTypes.Snappy]: "snappy",
  [CompressionTypes.LZ4]: "lz4",
  [CompressionTypes.ZSTD]: "zstd",
};

/**
 * The codecs (by name) of the record batches that kafkajs decompressed while `work` ran, and `work`'s result. kafkajs
 * picks a fetched batch's codec by the batch's attributes (`lookupCodecByAttributes(attributes)`, attributes & 0x07, in
 * node_modules/kafkajs/src/protocol/recordBatch/v0/decoder.js) from the factories in `CompressionCodecs`; this counts
 * those look-ups, so it names what is on the wire. An uncompressed batch looks up none.
 */
export async function codecsOnTheWire<T>(work: () => Promise<T>): Promise<{ codecs: string[]; result: T }> {
  const factories = CompressionCodecs as unknown as Record<number, Factory>;
  const originals = { ...factories };
  const seen = new Set<string>();
  for (const [type, factory] of Object.entries(originals)) {
    factories[Number(type)] = () => {
      const codec = factory();
      return {
        compress: (encoder) => codec.compress(encoder),
        decompress: (buffer) => {
          seen.add(CODEC_NAMES[Number(type)] as string);
          return codec.decompress(buffer);
        },
      };
    };
  }
  try {
    const result = await work();
    return { codecs: [...seen].sort(), result };
  } finally {
    Object.assign(factories, originals);
  }
}

/** The real handler (processorFor) behind the emulated ESM until `topics.source` is drained; the handler is closed. */
export async function drainWithProcessor(
  topics: PipelineTopics,
  options: { batchSize?: number; batchWindowMs?: number; env?: Record<string, string> } = {},
): Promise<{ harness: MskEventSourceHarness; groupId: string }> {
  const processor = processorFor(topics, options.env);
  try {
    return await drain({
      topic: topics.source,
      batchSize: options.batchSize ?? 100,
      batchWindowMs: options.batchWindowMs ?? 100,
      invoke: processor.invoke,
    });
  } finally {
    await processor.close();
  }
}
