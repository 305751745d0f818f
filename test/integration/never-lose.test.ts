/**
 * Regressions of the "never lose a record, never wedge a partition" review, on the real broker with the real
 * handler: a producer reused after a partly failed request (defect 1), outputs the broker would refuse (defect 2),
 * headers named like Object.prototype members through the harness (defect 3).
 */
import { randomBytes, randomUUID } from "node:crypto";
import { ConfigResourceTypes, type Kafka, Partitioners } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MskEvent } from "../../functions/core/msk.ts";
import { toMskRecord } from "../../functions/local/msk-event.ts";
import { createProducer } from "../../functions/shared/kafka.ts";
import { ensureTopics } from "../../functions/shared/topics.ts";
import { createTopicTrio, drain, processorFor, readTopic, testKafka } from "../support/kafka.ts";
import { validLogin } from "../support/msk.ts";

const { kafka } = testKafka("never-lose-test");
const producer = createProducer(kafka);
beforeAll(() => producer.connect());
afterAll(() => producer.disconnect());

/** A key that kafkajs's default (murmur2) partitioner puts on `partition` of a topic with `count` partitions. */
function keyFor(partition: number, count: number): string {
  const partitioner = Partitioners.DefaultPartitioner();
  const partitionMetadata = Array.from({ length: count }, (_, p) => ({
    partitionId: p,
    leader: 1,
    partitionErrorCode: 0,
    replicas: [1],
    isr: [1],
  }));
  for (let i = 0; ; i++) {
    const key = `key-${i}`;
    if (partitioner({ topic: "t", partitionMetadata, message: { key, value: null } }) === partition) return key;
  }
}

async function setMaxMessageBytes(admin: Kafka, topic: string, bytes: number): Promise<void> {
  const client = admin.admin();
  await client.connect();
  try {
    await client.alterConfigs({
      validateOnly: false,
      resources: [
        {
          type: ConfigResourceTypes.TOPIC,
          name: topic,
          configEntries: [{ name: "max.message.bytes", value: `${bytes}` }],
        },
      ],
    });
  } finally {
    await client.disconnect();
  }
}

/** An MSK event of these source values, offsets from `first` on partition 0. */
function eventOf(topic: string, values: { key: string; value: string | Buffer }[], first = 0): MskEvent {
  const records = values.map((v, i) =>
    toMskRecord(topic, 0, {
      offset: String(first + i),
      timestamp: String(Date.now()),
      key: Buffer.from(v.key),
      value: Buffer.from(v.value),
    }),
  );
  return { eventSource: "aws:kafka", eventSourceArn: "arn:local", records: { [`${topic}-0`]: records } };
}

describe("a producer is never reused after a failed send (defect 1)", () => {
  it("writes a later batch's record to a partition that shared a refused request", async () => {
    const topics = await createTopicTrio(kafka, 2);
    // The broker refuses big records on the processed topic; the processor's configured limit does not know.
    await setMaxMessageBytes(kafka, topics.processed, 2048);
    const processor = processorFor(topics, { PARTIAL_BATCH_RESPONSE: "true" });
    // Random text: gzip cannot bring it under the broker's limit either.
    const big = JSON.stringify(validLogin({ user_id: "big", note: randomBytes(6000).toString("base64") }));
    const small = (id: string) => JSON.stringify(validLogin({ user_id: id }));
    // One request: a refused record for partition 0 and a small one for partition 1.
    const first = await processor.invoke(
      eventOf(topics.source, [
        { key: keyFor(1, 2), value: small("b-written") },
        { key: keyFor(0, 2), value: big },
      ]),
    );
    // The refused record is found (one at a time, then gzip-compressed) and only it stays unwritten.
    expect(first.batchItemFailures).toEqual([{ itemIdentifier: { partition: `${topics.source}-0`, offset: 1 } }]);
    expect(first.summary.written).toBe(1);
    // A later batch whose one record goes to partition 1 with as many records as the refused request had there.
    const second = await processor.invoke(eventOf(topics.source, [{ key: keyFor(1, 2), value: small("c-later") }], 5));
    expect(second.batchItemFailures).toEqual([]);
    expect(second.summary.written).toBe(1);
    const users = (await readTopic(kafka, topics.processed)).map((r) => JSON.parse(String(r.value)).user_id);
    expect(users).toContain("c-later");
    // Refusals the broker answered (too large) leave the producer's connection sound: it was kept.
    expect(processor.container.discards()).toBe(0);
    expect(processor.container.connects()).toBe(1);
    await processor.container.close();
  });
});

describe("outputs the broker would refuse never wedge a partition (defect 2)", () => {
  it("dead-letters a valid record whose processed form is over the limit, and fits a near-limit dead letter", async () => {
    const topics = await createTopicTrio(kafka, 1);
    // A valid event just under the source topic's 1 MiB limit: its processed form (plus source.* headers) is over.
    const base = Buffer.byteLength(JSON.stringify(validLogin({ note: "" })));
    const nearLimit = JSON.stringify(validLogin({ note: "漢".repeat(Math.floor((1_048_440 - base) / 3)) }));
    const invalid = `not json ${"y".repeat(1_048_400)}`;
    await producer.send({ topic: topics.source, acks: -1, messages: [{ key: "a", value: nearLimit }] });
    await producer.send({ topic: topics.source, acks: -1, messages: [{ key: "b", value: invalid }] });
    await producer.send({
      topic: topics.source,
      acks: -1,
      messages: [{ key: "c", value: JSON.stringify(validLogin()) }],
    });
    const processor = processorFor(topics);
    await drain({ topic: topics.source, invoke: processor.invoke });
    await processor.container.close();
    const dead = await readTopic(kafka, topics.deadLetter);
    expect(dead.map((r) => r.headers["error.code"])).toEqual(["OUTPUT_TOO_LARGE", "INVALID_JSON"]);
    expect(dead[0]?.value?.toString()).toBe(nearLimit);
    expect(dead[1]?.value?.length).toBe(Buffer.byteLength(invalid));
    expect(await readTopic(kafka, topics.processed)).toHaveLength(1);
  });

  it("fails the batch loudly, without losing or skipping, when the DLQ cannot take a dead letter", async () => {
    const id = randomUUID().slice(0, 8);
    const topics = { source: `src-${id}`, processed: `out-${id}`, deadLetter: `dlq-${id}` };
    // A misconfigured cluster: the DLQ has the source's limit, not the larger dead-letter one.
    await ensureTopics(kafka, [{ topic: topics.source }, { topic: topics.processed }, { topic: topics.deadLetter }]);
    const processor = processorFor(topics, { PARTIAL_BATCH_RESPONSE: "true" });
    const response = await processor.invoke(
      eventOf(topics.source, [
        { key: "ok", value: JSON.stringify(validLogin()) },
        // Random bytes (not UTF-8: INVALID_JSON): its dead letter is over the limit, gzip-compressed too.
        { key: "bad", value: randomBytes(1_048_400) },
      ]),
    );
    expect(response.summary.written).toBe(1);
    expect(response.batchItemFailures).toEqual([{ itemIdentifier: { partition: `${topics.source}-0`, offset: 1 } }]);
    expect(await readTopic(kafka, topics.deadLetter)).toHaveLength(0);
    await processor.container.close();
  });
});

describe("headers pass through byte for byte, whatever their names (defect 3)", () => {
  it("carries constructor, toString, hasOwnProperty and __proto__ headers through harness and handler", async () => {
    const topics = await createTopicTrio(kafka, 1);
    const headers = Object.create(null) as Record<string, Buffer | Buffer[]>;
    Object.assign(headers, {
      constructor: Buffer.from([0, 1, 2]),
      toString: Buffer.from("ts"),
      hasOwnProperty: [Buffer.from("h1"), Buffer.from("h2")],
    });
    Object.defineProperty(headers, "__proto__", { value: Buffer.from("p"), enumerable: true });
    headers["ünïcödé"] = Buffer.from([0xff, 0xfe]);
    await producer.send({
      topic: topics.source,
      acks: -1,
      messages: [
        { key: "k", value: JSON.stringify(validLogin()), headers },
        { key: "k", value: "not json", headers },
      ],
    });
    const processor = processorFor(topics);
    await drain({ topic: topics.source, invoke: processor.invoke });
    await processor.container.close();
    const { readTopic: readRaw } = await import("../../functions/local/read-topic.ts");
    for (const topic of [topics.processed, topics.deadLetter]) {
      const [record] = await readRaw(kafka, topic);
      expect(record, topic).toBeDefined();
      const got = record?.headers ?? {};
      expect(got.constructor).toEqual(Buffer.from([0, 1, 2]));
      expect(got.toString).toEqual(Buffer.from("ts"));
      expect(got.hasOwnProperty).toEqual([Buffer.from("h1"), Buffer.from("h2")]);
      expect(Object.getOwnPropertyDescriptor(got, "__proto__")?.value).toEqual(Buffer.from("p"));
      expect(got["ünïcödé"]).toEqual(Buffer.from([0xff, 0xfe]));
    }
  });
});
