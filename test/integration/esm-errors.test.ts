/**
 * The harness's error handling as the deployed event source mapping is configured (functions/shared/esm.ts
 * ESM_DEFAULTS): retries, bisect on error, maximum record age, the on-failure topic, partial batch responses only when
 * reported, the invocation timeout. Real broker, real handler; each test closes with the accounting of every record.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MskEvent } from "../../functions/core/msk.ts";
import { account } from "../../functions/local/accounting.ts";
import {
  FAILURE_HEADER,
  type HarnessOptions,
  type InvokeFunction,
  MskEventSourceHarness,
} from "../../functions/local/harness.ts";
import { SEND_RESERVE_MS } from "../../functions/processor/processor.ts";
import { ESM_DEFAULTS, MIN_PROCESSOR_TIMEOUT_SECONDS, RETRIES_WITH_DESTINATION } from "../../functions/shared/esm.ts";
import { createProducer } from "../../functions/shared/kafka.ts";
import { sizeConfigs } from "../../functions/shared/topic-settings.ts";
import { ensureTopics } from "../../functions/shared/topics.ts";
import {
  createTopicTrio,
  groupLag,
  type PipelineTopics,
  processorFor,
  readTopic,
  testKafka,
  waitFor,
} from "../support/kafka.ts";
import { validLogin } from "../support/msk.ts";

const { kafka, brokers } = testKafka("esm-errors-test");
const producer = createProducer(kafka);
beforeAll(() => producer.connect());
afterAll(() => producer.disconnect());

interface Setup extends PipelineTopics {
  esmFailures: string;
}

/** A topic trio (one partition) plus its own on-failure topic, with `count` valid logins (offsets 0..count-1). */
async function setup(count: number, timestamp: (i: number) => number = () => Date.now()): Promise<Setup> {
  const trio = await createTopicTrio(kafka, 1);
  const esmFailures = `esm-failures-${randomUUID().slice(0, 8)}`;
  await ensureTopics(kafka, [{ topic: esmFailures, numPartitions: 1, configs: sizeConfigs("esmFailure") }]);
  await producer.send({
    topic: trio.source,
    acks: -1,
    messages: Array.from({ length: count }, (_, i) => ({
      key: `key-${i}`,
      value: JSON.stringify(validLogin({ user_id: `user-${i}` })),
      headers: { trace: `t-${i}`, empty: "" },
      timestamp: String(timestamp(i)),
    })),
  });
  return { ...trio, esmFailures };
}

const offsetsOf = (event: MskEvent) => Object.values(event.records).flatMap((records) => records.map((r) => r.offset));

/** Runs a harness until its group has committed everything, then stops it; records each invocation's offsets. */
async function run(
  topics: Setup,
  options: Partial<HarnessOptions> & { invoke: InvokeFunction },
): Promise<{ harness: MskEventSourceHarness; groupId: string; invocations: number[][] }> {
  const groupId = `esm-errors-${randomUUID()}`;
  const invocations: number[][] = [];
  const harness = new MskEventSourceHarness({
    kafka,
    bootstrapServers: brokers.join(","),
    topic: topics.source,
    groupId,
    batchSize: 100,
    batchWindowMs: 50,
    retryBackoffMs: 10,
    maxRetryBackoffMs: 20,
    onFailureTopic: topics.esmFailures,
    ...options,
    invoke: (event, timeoutMs) => {
      invocations.push(offsetsOf(event));
      return options.invoke(event, timeoutMs);
    },
  });
  await harness.start();
  try {
    await waitFor(
      "the group to commit every record",
      async () => (await groupLag(kafka, groupId, topics.source)) === 0,
    );
  } finally {
    await harness.stop();
  }
  return { harness, groupId, invocations };
}

describe("the harness's error handling, as deployed", () => {
  it("defaults to what the stack deploys", () => {
    expect(ESM_DEFAULTS).toMatchObject({
      retryAttempts: 10,
      maxRecordAgeSeconds: 86_400,
      bisectBatchOnError: true,
      reportBatchItemFailures: true,
      onFailureTopic: "user-login-esm-failures",
      functionTimeoutSeconds: 120,
    });
    // The stack's shortest processor timeout leaves time to write after the sender's reserve.
    expect(MIN_PROCESSOR_TIMEOUT_SECONDS * 1000).toBeGreaterThan(SEND_RESERVE_MS + 10_000);
  });

  it("bisects a failing batch down to the poison record, parks it after its retries with its bytes, processes the rest", async () => {
    const topics = await setup(20);
    const processor = processorFor(topics, { PARTIAL_BATCH_RESPONSE: "true" });
    const { harness, groupId, invocations } = await run(topics, {
      retryAttempts: 6,
      invoke: (event, timeoutMs) => {
        if (offsetsOf(event).includes(13)) throw new Error("poison record at offset 13");
        return processor.invoke(event, timeoutMs);
      },
    });
    await processor.close();
    // 20 -> 10 + 10 -> (10..14) + (15..19) -> (10..12) + (13,14) -> 13 + 14: then 13 alone until its retries end.
    const withPoison = invocations.filter((offsets) => offsets.includes(13)).map((offsets) => offsets.length);
    expect(withPoison).toEqual([20, 10, 5, 2, 1, 1, 1]);
    expect(harness.stats.bisections).toBe(4);
    expect(harness.stats.parkedByReason).toEqual({ RetryAttemptsExhausted: 1 });

    const parked = await readTopic(kafka, topics.esmFailures);
    expect(parked).toHaveLength(1);
    const [record] = parked;
    expect(record?.key?.toString()).toBe("key-13");
    expect(JSON.parse(record?.value?.toString() ?? "")).toMatchObject({ user_id: "user-13" });
    expect(record?.headers).toMatchObject({
      trace: "t-13",
      empty: "",
      [FAILURE_HEADER.reason]: "RetryAttemptsExhausted",
      [FAILURE_HEADER.error]: "poison record at offset 13",
      [FAILURE_HEADER.topic]: topics.source,
      [FAILURE_HEADER.partition]: "0",
      [FAILURE_HEADER.offset]: "13",
      [FAILURE_HEADER.attempts]: "7",
    });
    const accounting = await account(kafka, topics, groupId);
    expect(accounting).toMatchObject({ inputs: 20, processed: 19, parked: 1, missing: [], orphans: [], lag: 0 });
    expect(accounting.ok).toBe(true);
  });

  it("retries each partition's share of a failed batch alone, so a poison record does not take others with it", async () => {
    const trio = await createTopicTrio(kafka, 3);
    const esmFailures = `esm-failures-${randomUUID().slice(0, 8)}`;
    await ensureTopics(kafka, [{ topic: esmFailures, numPartitions: 1, configs: sizeConfigs("esmFailure") }]);
    const topics = { ...trio, esmFailures };
    await producer.send({
      topic: trio.source,
      acks: -1,
      messages: [0, 1, 2].map((partition) => ({
        key: partition === 1 ? "poison" : `key-${partition}`,
        value: JSON.stringify(validLogin({ user_id: `user-${partition}` })),
        partition,
      })),
    });
    const poison = Buffer.from("poison").toString("base64");
    const processor = processorFor(topics, { PARTIAL_BATCH_RESPONSE: "true" });
    const partitionsPerCall: number[] = [];
    const { harness, groupId } = await run(topics, {
      retryAttempts: 2,
      batchWindowMs: 500,
      invoke: (event, timeoutMs) => {
        partitionsPerCall.push(Object.keys(event.records).length);
        if (Object.values(event.records).some((rs) => rs.some((r) => r.key === poison))) throw new Error("poison");
        return processor.invoke(event, timeoutMs);
      },
    });
    await processor.close();
    expect(partitionsPerCall[0]).toBe(3);
    expect(partitionsPerCall.slice(1).every((n) => n === 1)).toBe(true);
    expect(harness.stats.parked).toBe(1);
    const parked = await readTopic(kafka, esmFailures);
    expect(parked.map((r) => r.key?.toString())).toEqual(["poison"]);
    expect(await account(kafka, topics, groupId)).toMatchObject({ processed: 2, parked: 1, missing: [], lag: 0 });
  });

  it("without bisect retries the whole batch, then parks all of it", async () => {
    const topics = await setup(10);
    const { harness, groupId, invocations } = await run(topics, {
      retryAttempts: 2,
      bisectBatchOnError: false,
      invoke: async () => {
        throw new Error("always fails");
      },
    });
    expect(invocations.map((offsets) => offsets.length)).toEqual([10, 10, 10]);
    expect(harness.stats.bisections).toBe(0);
    expect(harness.stats.parked).toBe(10);
    const parked = await readTopic(kafka, topics.esmFailures);
    expect(parked.map((r) => r.headers[FAILURE_HEADER.offset])).toEqual(
      Array.from({ length: 10 }, (_, i) => String(i)),
    );
    expect((await account(kafka, topics, groupId)).ok).toBe(true);
  });

  it("retries from the first failed offset of a partial batch response, then parks from there", async () => {
    const topics = await setup(10);
    const { harness, groupId, invocations } = await run(topics, {
      retryAttempts: 2,
      invoke: async (event) => ({
        batchItemFailures: [
          { itemIdentifier: { partition: `${topics.source}-0`, offset: Math.max(6, offsetsOf(event)[0] ?? 0) } },
        ],
      }),
    });
    expect(invocations).toEqual([
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      [6, 7, 8, 9],
      [6, 7, 8, 9],
    ]);
    expect(harness.stats.recordsCommitted).toBe(10);
    const parked = await readTopic(kafka, topics.esmFailures);
    expect(parked.map((r) => r.headers[FAILURE_HEADER.offset])).toEqual(["6", "7", "8", "9"]);
    expect(parked[0]?.headers[FAILURE_HEADER.error]).toBe("partial batch failure");
    // Offsets 0..5 had no output (the function wrote nothing): committed because the response said they succeeded.
    expect((await account(kafka, topics, groupId)).missing).toEqual(["0/0", "0/1", "0/2", "0/3", "0/4", "0/5"]);
  });

  it("ignores batchItemFailures without ReportBatchItemFailures, as Lambda does: the batch counts as a success", async () => {
    const topics = await setup(10);
    const { harness, invocations } = await run(topics, {
      reportBatchItemFailures: false,
      invoke: async () => ({ batchItemFailures: [{ itemIdentifier: { partition: `${topics.source}-0`, offset: 3 } }] }),
    });
    expect(invocations).toEqual([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]);
    expect(harness.stats).toMatchObject({ failedInvocations: 0, recordsCommitted: 10, parked: 0 });
    expect(await readTopic(kafka, topics.esmFailures)).toEqual([]);
  });

  it("parks records older than the maximum record age without invoking for them, and processes the rest", async () => {
    const old = Date.now() - 2 * 3600_000;
    const topics = await setup(10, (i) => (i % 3 === 0 ? old : Date.now()));
    const processor = processorFor(topics, { PARTIAL_BATCH_RESPONSE: "true" });
    const { harness, groupId, invocations } = await run(topics, {
      maxRecordAgeSeconds: 3600,
      invoke: (event, timeoutMs) => processor.invoke(event, timeoutMs),
    });
    await processor.close();
    const delivered = invocations.flat();
    expect(delivered.sort((a, b) => a - b)).toEqual([1, 2, 4, 5, 7, 8]);
    expect(harness.stats.parkedByReason).toEqual({ RecordAgeExceeded: 4 });
    const parked = await readTopic(kafka, topics.esmFailures);
    expect(parked.map((r) => r.headers[FAILURE_HEADER.offset])).toEqual(["0", "3", "6", "9"]);
    expect(parked.every((r) => r.headers[FAILURE_HEADER.reason] === "RecordAgeExceeded")).toBe(true);
    const accounting = await account(kafka, topics, groupId);
    expect(accounting).toMatchObject({ processed: 6, parked: 4, missing: [], lag: 0 });
  });

  it("fails an invocation that outlives the timeout, and retries it", async () => {
    const topics = await setup(5);
    const processor = processorFor(topics, { PARTIAL_BATCH_RESPONSE: "true" });
    let calls = 0;
    const { harness, groupId } = await run(topics, {
      timeoutMs: 1000,
      invoke: async (event) => {
        if (++calls === 1) {
          await new Promise((resolve) => setTimeout(resolve, 3000));
          return {};
        }
        // Its own 60 s context: under a 1 s one the sender would start no request (SEND_RESERVE_MS).
        return processor.invoke(event);
      },
    });
    await processor.close();
    expect(harness.stats.timedOut).toBe(1);
    expect(harness.stats.parked).toBe(0);
    expect(harness.stats.invocations).toBeGreaterThan(1);
    expect((await account(kafka, topics, groupId)).ok).toBe(true);
  });

  it("applies 10 retries when retries are infinite and a failure topic is set, as Lambda does", async () => {
    const topics = await setup(1);
    const { harness, invocations } = await run(topics, {
      retryAttempts: -1,
      invoke: async () => {
        throw new Error("never succeeds");
      },
    });
    expect(invocations).toHaveLength(RETRIES_WITH_DESTINATION + 1);
    expect(harness.stats.parked).toBe(1);
  });

  it("discards records that exhaust their retries when there is no failure topic (Lambda skips them), and says so", async () => {
    const topics = await setup(3);
    const { harness, groupId } = await run(topics, {
      onFailureTopic: null,
      retryAttempts: 1,
      invoke: async () => {
        throw new Error("fails");
      },
    });
    expect(harness.stats).toMatchObject({ discarded: 3, parked: 0, recordsCommitted: 3 });
    expect((await account(kafka, topics, groupId)).missing).toHaveLength(3);
  });

  it("a failure topic that refuses a record holds up only that record's partition, and parks it once it accepts", async () => {
    const trio = await createTopicTrio(kafka, 2);
    const esmFailures = `esm-failures-${randomUUID().slice(0, 8)}`;
    // Smaller than the poison record, which is incompressible: the failure topic refuses it until raised.
    await ensureTopics(kafka, [{ topic: esmFailures, numPartitions: 1, configs: { "max.message.bytes": "2048" } }]);
    const topics = { ...trio, esmFailures };
    const poison = randomBytes(4096);
    await producer.send({ topic: trio.source, acks: -1, messages: [{ key: "poison", value: poison, partition: 0 }] });
    const processor = processorFor(topics, { PARTIAL_BATCH_RESPONSE: "true" });
    const refusals: string[] = [];
    const groupId = `esm-errors-${randomUUID()}`;
    const harness = new MskEventSourceHarness({
      kafka,
      bootstrapServers: brokers.join(","),
      topic: trio.source,
      groupId,
      batchWindowMs: 50,
      retryBackoffMs: 10,
      maxRetryBackoffMs: 200,
      retryAttempts: 0,
      onFailureTopic: esmFailures,
      onFailureTopicError: (error) => refusals.push((error as { type?: string }).type ?? String(error)),
      invoke: (event, timeoutMs) => {
        if (offsetsOf(event).length > 0 && Object.keys(event.records).includes(`${trio.source}-0`)) {
          throw new Error("partition 0's record always fails");
        }
        return processor.invoke(event, timeoutMs);
      },
    });
    await harness.start();
    try {
      await waitFor("the failure topic to refuse the poison record", () => refusals.length >= 2);
      // Partition 1 flows meanwhile.
      await producer.send({
        topic: trio.source,
        acks: -1,
        messages: Array.from({ length: 5 }, (_, i) => ({
          value: JSON.stringify(validLogin({ user_id: `p1-${i}` })),
          partition: 1,
        })),
      });
      await waitFor("partition 1 processed", async () => (await readTopic(kafka, trio.processed)).length === 5);
      expect(await groupLag(kafka, groupId, trio.source)).toBe(1);
      expect(refusals).toContain("MESSAGE_TOO_LARGE");
      // Raise the limit: the next retry parks it, byte for byte.
      const admin = kafka.admin();
      await admin.connect();
      await admin.alterConfigs({
        validateOnly: false,
        resources: [{ type: 2, name: esmFailures, configEntries: [{ name: "max.message.bytes", value: "2097152" }] }],
      });
      await admin.disconnect();
      await waitFor("the poison record parked", async () => (await groupLag(kafka, groupId, trio.source)) === 0);
    } finally {
      await harness.stop();
      await processor.close();
    }
    const parked = await readTopic(kafka, esmFailures);
    expect(parked.map((r) => r.value?.equals(poison))).toEqual([true]);
    const accounting = await account(kafka, topics, groupId);
    expect(accounting).toMatchObject({ inputs: 6, processed: 5, parked: 1, missing: [], orphans: [], lag: 0 });
  });

  it("a partition retrying a function error pauses alone: another partition's records go on meanwhile", async () => {
    const trio = await createTopicTrio(kafka, 2);
    const topics = { ...trio, esmFailures: ESM_DEFAULTS.onFailureTopic };
    await producer.send({
      topic: trio.source,
      acks: -1,
      messages: [{ key: "stuck", value: JSON.stringify(validLogin()), partition: 0 }],
    });
    const processor = processorFor(topics, { PARTIAL_BATCH_RESPONSE: "true" });
    const groupId = `esm-errors-${randomUUID()}`;
    let failures = 0;
    const harness = new MskEventSourceHarness({
      kafka,
      bootstrapServers: brokers.join(","),
      topic: trio.source,
      groupId,
      batchWindowMs: 50,
      retryBackoffMs: 1000,
      maxRetryBackoffMs: 1000,
      retryAttempts: -1,
      onFailureTopic: null,
      invoke: (event, timeoutMs) => {
        if (Object.keys(event.records).includes(`${trio.source}-0`)) {
          failures++;
          throw new Error("partition 0 keeps failing");
        }
        return processor.invoke(event, timeoutMs);
      },
    });
    await harness.start();
    try {
      await waitFor("partition 0 failing", () => failures >= 1);
      for (let i = 0; i < 3; i++) {
        await producer.send({
          topic: trio.source,
          acks: -1,
          messages: [{ value: JSON.stringify(validLogin({ user_id: `p1-${i}` })), partition: 1 }],
        });
        await waitFor(
          `partition 1's record ${i}`,
          async () => (await readTopic(kafka, trio.processed)).length === i + 1,
        );
      }
      // Partition 0 is still retrying (infinite retries, nowhere to park), and still uncommitted.
      await waitFor("partition 0 retried after its backoff", () => failures >= 2);
      expect(await groupLag(kafka, groupId, trio.source)).toBe(1);
    } finally {
      await harness.stop();
      await processor.close();
    }
    expect(harness.stats).toMatchObject({ parked: 0, discarded: 0 });
  });

  it("never ages out a record without a timestamp (-1): it is invoked like any other", async () => {
    const topics = await setup(2, (i) => (i === 0 ? -1 : Date.now()));
    const processor = processorFor(topics, { PARTIAL_BATCH_RESPONSE: "true" });
    const timestamps: number[] = [];
    const { harness, groupId, invocations } = await run(topics, {
      maxRecordAgeSeconds: 60,
      invoke: (event, timeoutMs) => {
        for (const records of Object.values(event.records)) timestamps.push(...records.map((r) => r.timestamp));
        return processor.invoke(event, timeoutMs);
      },
    });
    await processor.close();
    expect(timestamps[0]).toBe(-1);
    expect(invocations.flat().sort()).toEqual([0, 1]);
    expect(harness.stats.parked).toBe(0);
    expect(await account(kafka, topics, groupId)).toMatchObject({ processed: 2, missing: [], lag: 0 });
  });

  it("takes a partial batch response naming records not in the batch, or a non-numeric offset, for a function error", async () => {
    for (const offset of [99, true, ""]) {
      const topics = await setup(3);
      const { harness, invocations } = await run(topics, {
        retryAttempts: 1,
        bisectBatchOnError: false,
        invoke: async () => ({ batchItemFailures: [{ itemIdentifier: { partition: `${topics.source}-0`, offset } }] }),
      });
      // Failed whole twice (the first try and one retry), then parked: nothing committed as a success.
      expect(invocations, String(offset)).toEqual([
        [0, 1, 2],
        [0, 1, 2],
      ]);
      expect(harness.stats.parked).toBe(3);
    }
  });

  it("refuses a missing failure topic at start and the source topic as failure topic, naming the fix", async () => {
    const topics = await createTopicTrio(kafka, 1);
    const harness = new MskEventSourceHarness({
      kafka,
      bootstrapServers: brokers.join(","),
      topic: topics.source,
      onFailureTopic: `missing-${randomUUID()}`,
      invoke: async () => ({}),
    });
    await expect(harness.start()).rejects.toThrow(/on-failure topic "missing-.*" does not exist .*--on-failure-topic/);
    expect(
      () =>
        new MskEventSourceHarness({
          kafka,
          bootstrapServers: brokers.join(","),
          topic: topics.source,
          onFailureTopic: topics.source,
          invoke: async () => ({}),
        }),
    ).toThrow(/must not be the source topic/);
    expect(
      () =>
        new MskEventSourceHarness({
          kafka,
          bootstrapServers: "b",
          topic: "t",
          maxRecordAgeSeconds: 30,
          invoke: async () => ({}),
        }),
    ).toThrow(/maximum record age .* from 60 to 604800, got 30/);
  });
});
