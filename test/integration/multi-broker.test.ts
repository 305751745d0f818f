/**
 * With more than one broker, kafkajs 2.2.4's own producer retries lose records silently: on a retry inside one send it
 * re-sends only to the brokers that have not answered (`brokersWithoutResponse`, node_modules/kafkajs/src/producer/
 * sendMessages.js) but assigns partitions anew first, so a record now mapped to a broker that did answer is never
 * sent, and the send resolves. The pipeline's producers therefore have no retries of their own and the sender retries
 * whole requests with a new producer (createProducer in functions/shared/kafka.ts, kafkaSender in
 * functions/processor/sender.ts). This is the regression test on two real brokers.
 *
 * Broker 1 is an EmbeddedKafka (also the controller), broker 2 an EmbeddedBrokerNode; each has a FaultProxy in front
 * of its PROXIED listener. Producers under test bootstrap at broker 1's proxy and so reach both brokers only through
 * the proxies; the test reads and administers directly (broker 1's own listener), bypassing them. Topics are placed
 * with replicaAssignment: partition 0 on broker 1, partition 1 on broker 2. A drop-request fault cuts one client id's
 * Produce request to broker 2 on the wire (the broker never sees it) while the one to broker 1 of the same send
 * succeeds.
 *
 * The control tests show the hazard with kafkajs's retries (the send resolves, records are missing). The pipeline tests
 * fail the same way if the processor's producer is given kafkajs retries again (createProducer(kafka, 5) in
 * containerSender: checked, 4 and 3 records missing though the handler reported all written).
 */
import { randomUUID } from "node:crypto";
import { type Kafka, Partitioners, type Producer } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MskEvent } from "../../functions/core/msk.ts";
import { HEADER } from "../../functions/core/process.ts";
import { EmbeddedBrokerNode } from "../../functions/local/embedded-broker-node.ts";
import { EmbeddedKafka } from "../../functions/local/embedded-kafka.ts";
import { FaultProxy } from "../../functions/local/fault-proxy.ts";
import { toMskRecord } from "../../functions/local/msk-event.ts";
import { headerText, readTopic, type TopicRecord } from "../../functions/local/read-topic.ts";
import { containerSender, createHandler, type HandlerResponse } from "../../functions/processor/processor.ts";
import { loadProcessorConfig } from "../../functions/shared/config.ts";
import { createKafka, createProducer } from "../../functions/shared/kafka.ts";
import { sizeConfigs } from "../../functions/shared/topic-settings.ts";
import { validLogin } from "../support/msk.ts";

let broker1: EmbeddedKafka | undefined;
let broker2: EmbeddedBrokerNode | undefined;
const proxy1 = new FaultProxy({ targetPort: () => broker1?.proxiedPort ?? 0 });
const proxy2 = new FaultProxy({ targetPort: () => broker2?.proxiedPort ?? 0 });
/** Clients that bypass the proxies: admin and reading. */
let direct: Kafka;

beforeAll(async () => {
  broker1 = new EmbeddedKafka({ heap: "512m", proxiedListener: { advertisedPort: await proxy1.start() } });
  await broker1.start();
  direct = createKafka({ brokers: [broker1.brokers], clientId: "multi-broker-direct", retries: 10 });
  // The group coordinator on broker 1, created while it is the only broker (FindCoordinator creates
  // __consumer_offsets): the test reads with consumer groups, also while broker 2 is down.
  const admin = direct.admin();
  await admin.connect();
  try {
    await admin.describeGroups(["multi-broker-coordinator"]);
    const [offsets] = (await admin.fetchTopicMetadata({ topics: ["__consumer_offsets"] })).topics;
    if (!offsets || offsets.partitions.some((p) => p.leader !== 1))
      throw new Error("__consumer_offsets not on broker 1");
  } finally {
    await admin.disconnect();
  }
  broker2 = new EmbeddedBrokerNode({
    cluster: broker1,
    nodeId: 2,
    heap: "512m",
    proxiedListener: { advertisedPort: await proxy2.start() },
  });
  await broker2.start();
});

afterAll(async () => {
  await proxy1.stop();
  await proxy2.stop();
  await broker2?.destroy();
  await broker1?.destroy();
});

const uniqueId = () => randomUUID().slice(0, 8);
const drops = () => proxy2.stats.faults["drop-request"];

/** Creates topics whose partition p has the replicas `replicas[p]` (preferred leader first). */
async function createTopics(
  specs: readonly { topic: string; replicas: number[][]; configs?: Record<string, string> }[],
): Promise<void> {
  const admin = direct.admin();
  await admin.connect();
  try {
    await admin.createTopics({
      waitForLeaders: true,
      topics: specs.map((spec) => ({
        topic: spec.topic,
        replicaAssignment: spec.replicas.map((replicas, partition) => ({ partition, replicas })),
        configEntries: Object.entries(spec.configs ?? {}).map(([name, value]) => ({ name, value })),
      })),
    });
  } finally {
    await admin.disconnect();
  }
}

/** Partition `partition` of `topic` as the cluster's metadata has it now: leader and in-sync replicas. */
async function partitionOf(topic: string, partition: number): Promise<{ leader?: number; isr: number[] }> {
  const admin = direct.admin();
  await admin.connect();
  try {
    const [metadata] = (await admin.fetchTopicMetadata({ topics: [topic] })).topics;
    const found = metadata?.partitions.find((p) => p.partitionId === partition);
    return { leader: found?.leader, isr: found?.isr ?? [] };
  } finally {
    await admin.disconnect();
  }
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** A key that kafkajs's default (murmur2) partitioner puts on `partition` of a two-partition topic. */
function keyFor(partition: number, from = 0): string {
  const partitioner = Partitioners.DefaultPartitioner();
  const partitionMetadata = [0, 1].map((p) => ({
    partitionId: p,
    leader: 1,
    partitionErrorCode: 0,
    replicas: [1],
    isr: [1],
  }));
  for (let i = from; ; i++) {
    const key = `key-${i}`;
    if (partitioner({ topic: "t", partitionMetadata, message: { key, value: null } }) === partition) return key;
  }
}

interface Input {
  readonly key: string | null;
  readonly value: string;
}

const invalid = (n: number): Input => ({ key: null, value: `not json ${n}` });
const valid = (n: number, partition: number): Input => ({
  key: keyFor(partition, n * 100),
  value: JSON.stringify(validLogin({ user_id: `user-${n}` })),
});

/** The MSK event Lambda would deliver for `inputs` at offsets first, first + 1, ... of source partition 0. */
function eventOf(source: string, inputs: readonly Input[], first: number): MskEvent {
  const records = inputs.map((input, i) =>
    toMskRecord(source, 0, {
      offset: String(first + i),
      timestamp: String(Date.now()),
      key: input.key === null ? null : Buffer.from(input.key),
      value: Buffer.from(input.value),
    }),
  );
  return { eventSource: "aws:kafka", eventSourceArn: "arn:local", records: { [`${source}-0`]: records } };
}

interface PipelineTopics {
  readonly source: string;
  readonly processed: string;
  readonly deadLetter: string;
}

/** The real handler with a container's producer, reaching the brokers through the proxies as `clientId`. */
function pipeline(topics: PipelineTopics, clientId: string) {
  const config = loadProcessorConfig({
    KAFKA_BROKERS: broker1?.proxiedBrokers,
    SOURCE_TOPIC: topics.source,
    PROCESSED_TOPIC: topics.processed,
    DLQ_TOPIC: topics.deadLetter,
    PARTIAL_BATCH_RESPONSE: "true",
    KAFKA_CLIENT_ID: clientId,
  });
  const container = containerSender(config);
  const handler = createHandler({ config, getSender: container.getSender });
  /**
   * Invokes as the event source mapping would: the batch, then again from the failed offset while one fails.
   * `beforeRetry` runs before each re-invocation. Checks each response's account of itself.
   */
  const run = async (inputs: readonly Input[], first: number, beforeRetry = async () => {}) => {
    const responses: HandlerResponse[] = [];
    let from = first;
    for (let invocation = 1; invocation <= 5; invocation++) {
      const start = from;
      const event = eventOf(topics.source, inputs.slice(start - first), start);
      const response = (await handler(event, {} as never)) as HandlerResponse;
      responses.push(response);
      const { summary, batchItemFailures } = response;
      expect(summary.in).toBe(first + inputs.length - start);
      if (batchItemFailures.length === 0) {
        expect(summary.written).toBe(summary.in);
        return responses;
      }
      // One source partition: one failure, and every record before it is reported written.
      expect(batchItemFailures).toHaveLength(1);
      expect(batchItemFailures[0]?.itemIdentifier.partition).toBe(`${topics.source}-0`);
      from = batchItemFailures[0]?.itemIdentifier.offset as number;
      expect(from).toBeGreaterThanOrEqual(start);
      expect(summary.written).toBeGreaterThanOrEqual(from - start);
      await beforeRetry();
    }
    throw new Error(`${topics.source}: still failing after 5 invocations`);
  };
  return { container, run };
}

interface Ledger {
  readonly outputs: number;
  readonly missing: number[];
  readonly duplicates: number;
  readonly orphans: string[];
  /** Outputs per topic and partition: "processed/0", "dlq/1", ... -> count. */
  readonly perPartition: Record<string, number>;
}

/** Which inputs (source offsets) have an output naming them in source.offset; read bypassing the proxies. */
async function ledger(topics: PipelineTopics, offsets: readonly number[]): Promise<Ledger> {
  const read = async (topic: string) => (await readTopic(direct, topic)).map((r) => ({ topic, record: r }));
  const outputs: { topic: string; record: TopicRecord }[] = [
    ...(await read(topics.processed)),
    ...(await read(topics.deadLetter)),
  ];
  const seen = new Map<number, number>();
  const orphans: string[] = [];
  const perPartition: Record<string, number> = {};
  for (const { topic, record } of outputs) {
    const where = `${topic === topics.processed ? "processed" : "dlq"}/${record.partition}`;
    perPartition[where] = (perPartition[where] ?? 0) + 1;
    const text = (name: string) => headerText(record.headers, name);
    const source = `${text(HEADER.sourceTopic)}-${text(HEADER.sourcePartition)}`;
    const offset = Number(text(HEADER.sourceOffset));
    if (source !== `${topics.source}-0` || !offsets.includes(offset)) orphans.push(`${source}@${offset}`);
    else seen.set(offset, (seen.get(offset) ?? 0) + 1);
  }
  let duplicates = 0;
  for (const count of seen.values()) duplicates += count - 1;
  const missing = offsets.filter((offset) => !seen.has(offset));
  return { outputs: outputs.length, missing, duplicates, orphans, perPartition };
}

/** One line for the test log: what the invocations reported and what the topics hold. */
function report(responses: readonly HandlerResponse[], producers: number, result: Ledger): string {
  const written = responses.map((r) => r.summary.written).join(", ");
  const failures = responses.map((r) => r.batchItemFailures.length).join(", ");
  return (
    `${responses.length} invocation(s) (written ${written}; batchItemFailures ${failures}), ${producers} producers, ` +
    `${result.outputs} outputs ${JSON.stringify(result.perPartition)}, ${result.duplicates} duplicates, ` +
    `${result.missing.length} missing`
  );
}

const range = (first: number, count: number) => Array.from({ length: count }, (_, i) => first + i);

describe("kafkajs's own producer retries with two brokers (control: the hazard is real)", () => {
  const variants: [string, (kafka: Kafka) => Producer][] = [
    ["retries: 5 (createProducer)", (kafka) => createProducer(kafka, 5)],
    [
      "idempotent: true",
      (kafka) => kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false }),
    ],
  ];
  it.each(variants)("a producer with %s resolves a send whose records are not all written", async (name, make) => {
    const id = uniqueId();
    const topic = `control-${id}`;
    await createTopics([{ topic, replicas: [[1], [2]] }]);
    const clientId = `control-${id}`;
    const producer = make(createKafka({ brokers: [broker1?.proxiedBrokers as string], clientId }));
    await producer.connect();
    // An odd count: round-robin moves every record to the other partition on kafkajs's retry, so those first meant
    // for broker 2 go to broker 1, which answered, and are never sent. A few rounds in case timing ever hides it.
    const count = 5;
    const rounds: { sent: number; onTopic: number; copies: number }[] = [];
    try {
      for (let round = 0; round < 3 && !rounds.some((r) => r.onTopic < r.sent); round++) {
        const before = drops();
        proxy2.inject({ kind: "drop-request", apiKey: 0, clientId, times: 1 });
        const values = range(0, count).map((i) => `round-${round}-record-${i}`);
        await producer.send({ topic, acks: -1, messages: values.map((value) => ({ key: null, value })) });
        expect(drops() - before, "the Produce to broker 2 was cut").toBe(1);
        const written = (await readTopic(direct, topic)).map((r) => String(r.value)).filter((v) => values.includes(v));
        rounds.push({ sent: count, onTopic: new Set(written).size, copies: written.length });
      }
    } finally {
      await producer.disconnect();
    }
    const observed = rounds.map((r) => `${r.sent} sent, ${r.onTopic} on the topic (${r.copies} copies)`);
    console.info(`control, ${name}: ${observed.join("; ")}`);
    expect(
      rounds.some((r) => r.onTopic < r.sent),
      "the send resolved and lost records",
    ).toBe(true);
  });
});

describe("the pipeline with two brokers: no kafkajs retries, whole requests retried with a new producer", () => {
  it("loses nothing when the first Produce to broker 2 is cut (key-less dead letters, keyed processed records)", async () => {
    const id = uniqueId();
    const topics = { source: `src-${id}`, processed: `out-${id}`, deadLetter: `dlq-${id}` };
    await createTopics([
      { topic: topics.processed, replicas: [[1], [2]], configs: sizeConfigs("processed") },
      { topic: topics.deadLetter, replicas: [[1], [2]], configs: sizeConfigs("deadLetter") },
    ]);
    const clientId = `pipeline-${id}`;
    const { container, run } = pipeline(topics, clientId);
    // 7 invalid key-less records (round-robin over both DLQ partitions), 6 valid keyed ones on both partitions.
    const inputs = range(0, 13).map((n) => (n % 2 === 0 ? invalid(n) : valid(n, (n >> 1) % 2)));
    const before = drops();
    proxy2.inject({ kind: "drop-request", apiKey: 0, clientId, times: 1 });
    try {
      const responses = await run(inputs, 0);
      expect(drops() - before, "the Produce to broker 2 was cut").toBe(1);
      const result = await ledger(topics, range(0, inputs.length));
      console.info(`pipeline: ${inputs.length} inputs, ${report(responses, container.connects(), result)}`);
      expect(result.missing).toEqual([]);
      expect(result.orphans).toEqual([]);
      expect(result.outputs).toBe(inputs.length + result.duplicates);
      // The failed request retired its producer, and a new one sent the whole request again.
      expect(container.discards()).toBeGreaterThanOrEqual(1);
      // Both brokers took records: the dead letters on both DLQ partitions, the processed records on both partitions.
      for (const where of ["processed/0", "processed/1", "dlq/0", "dlq/1"]) {
        expect(result.perPartition[where] ?? 0, where).toBeGreaterThan(0);
      }
    } finally {
      await container.close();
    }
  });

  it("loses nothing when broker 2 shuts down as its Produce is cut and its partition's leadership moves to broker 1", async () => {
    const id = uniqueId();
    const topics = { source: `src-${id}`, processed: `out-${id}`, deadLetter: `dlq-${id}` };
    await createTopics([
      // Replication factor 2: partition 1 led by broker 2, followed by broker 1.
      {
        topic: topics.processed,
        replicas: [
          [1, 2],
          [2, 1],
        ],
        configs: sizeConfigs("processed"),
      },
      { topic: topics.deadLetter, replicas: [[1]], configs: sizeConfigs("deadLetter") },
    ]);
    expect((await partitionOf(topics.processed, 1)).leader).toBe(2);
    const clientId = `leader-${id}`;
    const { container, run } = pipeline(topics, clientId);
    const node = broker2 as EmbeddedBrokerNode;
    // Warm-up: the producer is connected and has the metadata (partition 1 on broker 2) before the fault.
    const warmUp = [valid(0, 0), valid(1, 1)];
    await run(warmUp, 0);
    const batch = [valid(2, 0), valid(3, 1), invalid(4), valid(5, 0), valid(6, 1), invalid(7), valid(8, 1)];
    const before = drops();
    // From here on every Produce of this client to broker 2 is cut (the broker never sees it), and the moment the
    // first is, broker 2 gets SIGTERM (controlled shutdown: partition 1's leadership moves to broker 1, which had
    // already answered that send). So partition 1's records can only be written on broker 1, after the move.
    const fault = proxy2.inject({ kind: "drop-request", apiKey: 0, clientId, times: Number.POSITIVE_INFINITY });
    let stopping: Promise<void> | undefined;
    const watch = setInterval(() => {
      if (!stopping && drops() > before) stopping = node.stop();
    }, 1);
    const leaderMoved = async () => {
      await stopping;
      await waitFor("partition 1 led by broker 1", async () => (await partitionOf(topics.processed, 1)).leader === 1);
    };
    try {
      const responses = await run(batch, warmUp.length, leaderMoved);
      clearInterval(watch);
      const cut = drops() - before;
      expect(cut, "a Produce to broker 2 was cut").toBeGreaterThanOrEqual(1);
      expect(stopping, "broker 2 was stopped").toBeDefined();
      await leaderMoved();
      expect(node.running).toBe(false);
      const offsets = range(0, warmUp.length + batch.length);
      const result = await ledger(topics, offsets);
      console.info(
        `leader moved: ${batch.length} inputs, ${cut} Produce request(s) to broker 2 cut, ` +
          report(responses, container.connects(), result),
      );
      expect(result.missing).toEqual([]);
      expect(result.orphans).toEqual([]);
      // Warm-up 1, 3, 6 and 8: partition 1's records, the batch's written on broker 1 as the new leader.
      expect(result.perPartition["processed/1"] ?? 0).toBeGreaterThanOrEqual(4);
      // After a restart broker 2 catches up as a follower; nothing is lost either.
      proxy2.clear(fault);
      await node.start();
      await waitFor("broker 2 back in sync", async () => (await partitionOf(topics.processed, 1)).isr.includes(2));
      expect((await ledger(topics, offsets)).missing).toEqual([]);
    } finally {
      clearInterval(watch);
      proxy2.clear(fault);
      await stopping;
      await container.close();
    }
  });
});
