/**
 * The handler behind the emulated event source mapping, on a real Kafka broker.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MskEvent } from "../../functions/core/msk.ts";
import { MskEventSourceHarness } from "../../functions/local/harness.ts";
import { loadHandler } from "../../functions/local/lambda-runtime.ts";
import { createProducer } from "../../functions/shared/kafka.ts";
import {
  createTopicTrio,
  drain,
  drainWithProcessor,
  type PipelineTopics,
  processorEnvironment,
  readTopic,
  testKafka,
  waitFor,
} from "../support/kafka.ts";
import { validLogin } from "../support/msk.ts";

const { kafka, brokers } = testKafka("pipeline-test");
const producer = createProducer(kafka);

beforeAll(async () => {
  await producer.connect();
});
afterAll(async () => {
  await producer.disconnect();
});

interface Input {
  key: string | null;
  value: Buffer | string | null;
  expect: string;
}

/** A mixed set: valid, missing field, not JSON, tombstone, invalid UTF-8, string timestamp, array. */
function mixedInputs(count: number): Input[] {
  const inputs: Input[] = [];
  for (let i = 0; i < count; i++) {
    const kind = i % 10;
    const login = validLogin({ user_id: `user-${i}`, timestamp: 1_700_000_000 + i });
    if (kind === 1) {
      const { device_type: _missing, ...rest } = login;
      inputs.push({ key: `k${i}`, value: JSON.stringify(rest), expect: "SCHEMA_VIOLATION" });
    } else if (kind === 2) inputs.push({ key: `k${i}`, value: `not json ${i}`, expect: "INVALID_JSON" });
    else if (kind === 3) inputs.push({ key: `k${i}`, value: null, expect: "EMPTY_VALUE" });
    else if (kind === 4) inputs.push({ key: null, value: Buffer.from([0xc3, 0x28, i % 256]), expect: "INVALID_JSON" });
    else if (kind === 5) inputs.push({ key: null, value: "[1,2]", expect: "SCHEMA_VIOLATION" });
    else if (kind === 6)
      inputs.push({
        key: null,
        value: JSON.stringify({ ...login, timestamp: String(1_700_000_000 + i) }),
        expect: "processed",
      });
    else inputs.push({ key: i % 2 ? `k${i}` : null, value: JSON.stringify(login), expect: "processed" });
  }
  return inputs;
}

async function produceInputs(topic: string, inputs: Input[]): Promise<void> {
  await producer.send({
    topic,
    acks: -1,
    messages: inputs.map((input, i) => ({ key: input.key, value: input.value, headers: { "test-seq": String(i) } })),
  });
}

/** Every output by its source coordinates, with how many times each was written. */
async function outputsBySource(topics: PipelineTopics) {
  const processed = await readTopic(kafka, topics.processed);
  const dead = await readTopic(kafka, topics.deadLetter);
  const bySource = new Map<string, { kind: string; record: (typeof processed)[number] }[]>();
  for (const [kind, records] of [
    ["processed", processed],
    ["dead-letter", dead],
  ] as const) {
    for (const record of records) {
      const { "source.topic": topic, "source.partition": partition, "source.offset": offset } = record.headers;
      expect(topic, "every output names its source").toBe(topics.source);
      const id = `${partition}/${offset}`;
      bySource.set(id, [...(bySource.get(id) ?? []), { kind, record }]);
    }
  }
  return { processed, dead, bySource };
}

describe("the local pipeline on a real broker", () => {
  it("writes each input exactly once to processed or the DLQ, as specified, and commits every offset", async () => {
    const topics = await createTopicTrio(kafka);
    const inputs = mixedInputs(300);
    await produceInputs(topics.source, inputs);
    const { harness } = await drainWithProcessor(topics, { batchSize: 50 });

    const source = await readTopic(kafka, topics.source);
    const { processed, dead, bySource } = await outputsBySource(topics);
    expect(source).toHaveLength(300);
    expect(processed.length + dead.length).toBe(300);
    for (const input of source) {
      const outputs = bySource.get(`${input.partition}/${input.offset}`) ?? [];
      expect(outputs, `source ${input.partition}/${input.offset}`).toHaveLength(1);
      const [{ kind, record }] = outputs as [(typeof outputs)[number]];
      const spec = inputs[Number(input.headers["test-seq"])] as Input;
      expect(record.headers["test-seq"]).toBe(input.headers["test-seq"]);
      if (spec.expect === "processed") {
        expect(kind).toBe("processed");
        const json = JSON.parse(String(record.value));
        expect(json.created_at).toBe(new Date(JSON.parse(String(input.value)).timestamp * 1000).toISOString());
        expect(json.timestamp).toBeUndefined();
        expect(String(record.key)).toBe(input.key === null ? json.user_id : String(input.key));
      } else {
        expect(kind).toBe("dead-letter");
        expect(record.headers["error.code"]).toBe(spec.expect);
        expect(record.headers["error.message"]).toBeTruthy();
        expect(record.value === null ? null : [...record.value]).toEqual(
          input.value === null ? null : [...input.value],
        );
        expect(record.key === null ? null : String(record.key)).toBe(input.key === null ? null : String(input.key));
      }
    }
    expect(harness.stats).toMatchObject({
      recordsCommitted: 300,
      processed: processed.length,
      deadLettered: dead.length,
    });
  });

  it("delivers Lambda's event shape, at most batch-size records per event, each partition in offset order", async () => {
    const topics = await createTopicTrio(kafka);
    const inputs = mixedInputs(60);
    await produceInputs(topics.source, inputs);
    const events: MskEvent[] = [];
    await drain({
      topic: topics.source,
      batchSize: 7,
      batchWindowMs: 50,
      eventSourceArn: "arn:aws:kafka:us-east-1:123456789012:cluster/test/abc",
      invoke: async (event) => {
        events.push(event);
        return {};
      },
    });

    const lastOffset = new Map<string, number>();
    let total = 0;
    for (const event of events) {
      expect(event.eventSource).toBe("aws:kafka");
      expect(event.eventSourceArn).toBe("arn:aws:kafka:us-east-1:123456789012:cluster/test/abc");
      expect(event.bootstrapServers).toBe(brokers.join(","));
      const records = Object.entries(event.records);
      const size = records.reduce((n, [, list]) => n + list.length, 0);
      expect(size).toBeGreaterThan(0);
      expect(size).toBeLessThanOrEqual(7);
      total += size;
      for (const [id, list] of records) {
        for (const record of list) {
          expect(id).toBe(`${topics.source}-${record.partition}`);
          expect(record.offset).toBeGreaterThan(lastOffset.get(id) ?? -1);
          lastOffset.set(id, record.offset);
          expect(record.timestampType).toBe("CREATE_TIME");
          expect(typeof record.timestamp).toBe("number");
          const seq = Number(Buffer.from(record.headers?.[0]?.["test-seq"] ?? []).toString());
          const spec = inputs[seq] as Input;
          if (spec.value === null) expect(record.value).toBeNull();
          else expect(Buffer.from(record.value as string, "base64").equals(Buffer.from(spec.value))).toBe(true);
          if (spec.key === null) expect(record.key).toBeUndefined();
          else expect(Buffer.from(record.key as string, "base64").toString()).toBe(spec.key);
        }
      }
    }
    expect(total).toBe(60);
  });

  it("retries from the offset a partial batch response names, and commits up to it", async () => {
    const topics = await createTopicTrio(kafka, 1);
    await produceInputs(topics.source, mixedInputs(20));
    const delivered: number[][] = [];
    let failedOnce = false;
    const { harness } = await drain({
      topic: topics.source,
      batchSize: 20,
      batchWindowMs: 200,
      retryBackoffMs: 50,
      invoke: async (event) => {
        const offsets = Object.values(event.records).flatMap((list) => list.map((r) => r.offset));
        delivered.push(offsets);
        if (!failedOnce && offsets.includes(12)) {
          failedOnce = true;
          return { batchItemFailures: [{ itemIdentifier: { partition: `${topics.source}-0`, offset: 12 } }] };
        }
        return { batchItemFailures: [] };
      },
    });
    const all = delivered.flat();
    expect(new Set(all)).toEqual(new Set(Array.from({ length: 20 }, (_, i) => i)));
    const redelivered = all.filter((offset, i) => all.indexOf(offset) !== i);
    expect(redelivered).toEqual([12, 13, 14, 15, 16, 17, 18, 19].filter((o) => redelivered.includes(o)));
    expect(redelivered[0]).toBe(12);
    expect(harness.stats.failedInvocations).toBe(1);
  });

  it("retries a batch whose invocation threw, whole without bisect, so nothing is committed past it", async () => {
    const topics = await createTopicTrio(kafka, 1);
    await produceInputs(topics.source, mixedInputs(10));
    let calls = 0;
    const { harness } = await drain({
      topic: topics.source,
      batchSize: 100,
      batchWindowMs: 100,
      retryBackoffMs: 50,
      bisectBatchOnError: false,
      invoke: async () => {
        calls++;
        if (calls <= 2) throw new Error("boom");
        return {};
      },
    });
    expect(harness.stats.failedInvocations).toBe(2);
    expect(harness.stats.recordsCommitted).toBe(10);
    expect(harness.stats.recordsDelivered).toBe(30);
  });

  it("starts at a timestamp with AT_TIMESTAMP and at the end with LATEST", async () => {
    const topics = await createTopicTrio(kafka, 1);
    await produceInputs(topics.source, mixedInputs(5));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const from = Date.now();
    await new Promise((resolve) => setTimeout(resolve, 50));
    await produceInputs(topics.source, mixedInputs(3));

    const seen: number[] = [];
    const collect = async (event: MskEvent) => {
      seen.push(...Object.values(event.records).flatMap((list) => list.map((r) => r.offset)));
      return {};
    };
    const atTimestamp = new MskEventSourceHarness({
      kafka,
      bootstrapServers: brokers.join(","),
      topic: topics.source,
      groupId: `group-${randomUUID()}`,
      startingPosition: "AT_TIMESTAMP",
      startingTimestamp: from,
      batchWindowMs: 50,
      invoke: collect,
    });
    await atTimestamp.start();
    await waitFor("3 records", () => seen.length >= 3);
    await atTimestamp.stop();
    expect(seen).toEqual([5, 6, 7]);

    seen.length = 0;
    const latest = new MskEventSourceHarness({
      kafka,
      bootstrapServers: brokers.join(","),
      topic: topics.source,
      groupId: `group-${randomUUID()}`,
      startingPosition: "LATEST",
      batchWindowMs: 50,
      invoke: collect,
    });
    await latest.start();
    await produceInputs(topics.source, mixedInputs(2));
    await waitFor("2 records", () => seen.length >= 2);
    await latest.stop();
    expect(seen).toEqual([8, 9]);
  });

  it("runs the real handler module, configured from the environment", async () => {
    const topics = await createTopicTrio(kafka, 2);
    processorEnvironment(brokers, topics);
    const handler = await loadHandler();
    await produceInputs(topics.source, mixedInputs(40));
    await drain({
      topic: topics.source,
      batchWindowMs: 100,
      invoke: handler.invoke,
    });
    await handler.close();
    const { processed, dead, bySource } = await outputsBySource(topics);
    expect(processed).toHaveLength(20);
    expect(dead).toHaveLength(20);
    expect(bySource.size).toBe(40);
  });
});
