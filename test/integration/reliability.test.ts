/**
 * Fault scenarios on the real broker, each closed by the at-least-once accounting: every source offset has an
 * output, no output lacks a source, duplicates are counted, and the group's lag returns to zero.
 */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MskEvent } from "../../functions/core/msk.ts";
import { kafkaSink, producerSlot } from "../../functions/generator/main.ts";
import { GeneratorModel } from "../../functions/generator/model.ts";
import { runGenerator } from "../../functions/generator/run.ts";
import { type Accounting, account } from "../../functions/local/accounting.ts";
import { EmbeddedKafka, REPO_ROOT } from "../../functions/local/embedded-kafka.ts";
import { MskEventSourceHarness } from "../../functions/local/harness.ts";
import { containerSender, createHandler } from "../../functions/processor/processor.ts";
import { loadProcessorConfig } from "../../functions/shared/config.ts";
import { ESM_DEFAULTS } from "../../functions/shared/esm.ts";
import { createKafka, createProducer, ProducerSlot } from "../../functions/shared/kafka.ts";
import { sizeConfigs } from "../../functions/shared/topic-settings.ts";
import { ensureTopics } from "../../functions/shared/topics.ts";
import { groupLag, produce as produceRecords, waitFor } from "../support/kafka.ts";

/** A broker of its own: these scenarios stop it and delete topics. */
const broker = new EmbeddedKafka({ heap: "768m" });
beforeAll(async () => {
  await broker.start();
  // The harness parks records on the deployed on-failure topic after its retries: it must exist here too.
  await ensureTopics(createKafka({ brokers: [broker.brokers], clientId: "reliability-setup" }), [
    { topic: ESM_DEFAULTS.onFailureTopic, numPartitions: 1, configs: sizeConfigs("esmFailure") },
  ]);
});
afterAll(async () => {
  await broker.destroy();
});

function setup(partialBatchResponse = true) {
  const id = randomUUID().slice(0, 8);
  const topics = {
    source: `user-login-${id}`,
    processed: `processed-user-login-${id}`,
    deadLetter: `user-login-dlq-${id}`,
    // Shared by the scenarios; the accounting counts only this source's parked records.
    esmFailures: ESM_DEFAULTS.onFailureTopic,
  };
  const kafka = createKafka({ brokers: [broker.brokers], clientId: `reliability-${id}`, retries: 10 });
  const config = loadProcessorConfig({
    KAFKA_BROKERS: broker.brokers,
    SOURCE_TOPIC: topics.source,
    PROCESSED_TOPIC: topics.processed,
    DLQ_TOPIC: topics.deadLetter,
    PARTIAL_BATCH_RESPONSE: String(partialBatchResponse),
  });
  const container = containerSender(config);
  const handler = createHandler({ config, getSender: container.getSender });
  const groupId = `group-${id}`;
  const harness = new MskEventSourceHarness({
    kafka,
    bootstrapServers: broker.brokers,
    topic: topics.source,
    groupId,
    batchSize: 500,
    batchWindowMs: 100,
    retryBackoffMs: 200,
    maxRetryBackoffMs: 2000,
    invoke: (event: MskEvent) => handler(event, {} as never),
  });
  const createTopics = () =>
    ensureTopics(kafka, [
      { topic: topics.source, numPartitions: 3 },
      { topic: topics.processed, numPartitions: 3 },
      { topic: topics.deadLetter, numPartitions: 1, configs: sizeConfigs("deadLetter") },
    ]);
  return { kafka, topics, groupId, harness, container, createTopics };
}

async function settle(kafka: ReturnType<typeof createKafka>, groupId: string, topic: string, timeoutMs = 120_000) {
  await waitFor(
    "the group's lag back to zero",
    async () => {
      try {
        return (await groupLag(kafka, groupId, topic)) === 0;
      } catch {
        return false;
      }
    },
    timeoutMs,
    500,
  );
}

function expectAccounted(result: Accounting, inputs: number) {
  expect(result.inputs).toBe(inputs);
  expect(result.missing).toEqual([]);
  expect(result.orphans).toEqual([]);
  expect(result.lag).toBe(0);
  expect(result.outputs).toBe(inputs + result.duplicates);
  console.info(`accounting: ${inputs} inputs, ${result.duplicates} duplicates`);
}

describe("reliability under faults", { timeout: 420_000 }, () => {
  it("loses nothing when the broker is killed while the generator and harness run, and restarts 10 s later", async () => {
    const { kafka, topics, groupId, harness, container, createTopics } = setup();
    await createTopics();
    const producer = new ProducerSlot(async () => {
      const created = createProducer(kafka, 20);
      await created.connect();
      return created;
    });
    const stop = new AbortController();
    const generating = runGenerator({
      model: new GeneratorModel({ seed: 7, invalidRatio: 0.1 }),
      sink: kafkaSink(producer, topics.source),
      rate: 500,
      signal: stop.signal,
      retryMs: 200,
    });
    await harness.start();
    await waitFor("records flowing", () => harness.stats.recordsCommitted > 300, 60_000);
    const killedAt = Date.now();
    await broker.kill();
    await new Promise((resolve) => setTimeout(resolve, 10_000));
    await broker.start();
    // On a loaded machine the consumer group can take minutes to rejoin after the broker comes back.
    await waitFor("records flowing again", () => harness.stats.recordsCommitted > 1500, 240_000);
    const recoveredMs = Date.now() - killedAt;
    stop.abort();
    const sent = await generating;
    await producer.close();
    await settle(kafka, groupId, topics.source);
    await harness.stop();
    await container.close();
    const result = await account(kafka, topics, groupId);
    expect(sent.sent).toBeGreaterThan(0);
    expectAccounted(result, result.inputs);
    expect(result.inputs).toBeGreaterThanOrEqual(sent.sent);
    console.info(`broker kill: recovered (1500 committed) ${recoveredMs} ms after the kill`);
  });

  it("commits nothing past an unwritten dead letter while the DLQ topic is missing, and drains once it is back", async () => {
    const { kafka, topics, groupId, harness, container } = setup();
    await ensureTopics(kafka, [
      { topic: topics.source, numPartitions: 3 },
      { topic: topics.processed, numPartitions: 3 },
    ]);
    const model = new GeneratorModel({ seed: 8, invalidRatio: 0.3 });
    const producer = createProducer(kafka);
    await producer.connect();
    const records = Array.from({ length: 600 }, () => model.next());
    await producer.send({
      topic: topics.source,
      acks: -1,
      messages: records.map((r) => ({ key: r.key, value: r.value })),
    });
    await producer.disconnect();
    await harness.start();
    await waitFor("failed invocations while the DLQ is missing", () => harness.stats.failedInvocations >= 2, 120_000);
    expect(await groupLag(kafka, groupId, topics.source)).toBeGreaterThan(0);
    await ensureTopics(kafka, [{ topic: topics.deadLetter, configs: sizeConfigs("deadLetter") }]);
    await settle(kafka, groupId, topics.source);
    await harness.stop();
    await container.close();
    expectAccounted(await account(kafka, topics, groupId), 600);
  });

  it("handles the largest batch Lambda sends (10,000 records, about 6 MB) and single values near 1 MB", async () => {
    const { kafka, topics, groupId, container, createTopics } = setup();
    await createTopics();
    const config = loadProcessorConfig({
      KAFKA_BROKERS: broker.brokers,
      SOURCE_TOPIC: topics.source,
      PROCESSED_TOPIC: topics.processed,
      DLQ_TOPIC: topics.deadLetter,
    });
    const model = new GeneratorModel({ seed: 9, invalidRatio: 0.05 });
    const pad = "p".repeat(430);
    const producer = createProducer(kafka);
    await producer.connect();
    const values = Array.from({ length: 10_000 }, () => {
      const record = model.next();
      return {
        key: record.key,
        value: typeof record.value === "string" ? record.value.replace(/}$/, `, "pad": "${pad}"}`) : record.value,
      };
    });
    const big = JSON.stringify({
      ...JSON.parse(String(values[0]?.value).replace(/, "pad": "p+"}$/, "}")),
      blob: "b".repeat(950_000),
    });
    for (let i = 0; i < values.length; i += 1000)
      await producer.send({ topic: topics.source, acks: -1, messages: values.slice(i, i + 1000) });
    // Alone: with others it would exceed the broker's 1 MB limit per record batch.
    await producer.send({ topic: topics.source, acks: -1, messages: [{ key: "big", value: big }] });
    await producer.disconnect();
    const handler = createHandler({ config, getSender: container.getSender });
    const events: number[] = [];
    const harness = new MskEventSourceHarness({
      kafka,
      bootstrapServers: broker.brokers,
      topic: topics.source,
      groupId,
      batchSize: 10_000,
      batchWindowMs: 2000,
      invoke: (event) => {
        events.push(JSON.stringify(event).length);
        return handler(event, {} as never);
      },
    });
    await harness.start();
    await settle(kafka, groupId, topics.source);
    await harness.stop();
    await container.close();
    expect(Math.max(...events)).toBeGreaterThan(5 * 2 ** 20);
    expect(Math.max(...events)).toBeLessThanOrEqual(6 * 2 ** 20);
    const result = await account(kafka, topics, groupId);
    expectAccounted(result, 10_001);
    expect(result.duplicates).toBe(0);
  });
});

describe("reliability under faults (processes and poison)", { timeout: 300_000 }, () => {
  it("redelivers the uncommitted batch when the harness is killed mid-run and restarted, losing nothing", async () => {
    const { kafka, topics, groupId, createTopics } = setup();
    await createTopics();
    const model = new GeneratorModel({ seed: 10, invalidRatio: 0.1 });
    await produceRecords(
      kafka,
      topics.source,
      Array.from({ length: 4000 }, () => model.next()),
    );
    const start = (processedTopic: string) =>
      spawn(
        join(REPO_ROOT, "node_modules", ".bin", "tsx"),
        [
          join(REPO_ROOT, "bin", "harness.ts"),
          "--brokers",
          broker.brokers,
          "--topic",
          topics.source,
          "--group",
          groupId,
          "--batch-size",
          "100",
          "--batch-window-ms",
          "50",
          "--session-timeout-ms",
          "6000",
        ],
        {
          stdio: "ignore",
          env: { ...process.env, PROCESSED_TOPIC: processedTopic, DLQ_TOPIC: topics.deadLetter, LOG_LEVEL: "ERROR" },
          // Its own process group: tsx runs the harness in a child process, which a SIGKILL of tsx alone would orphan.
          detached: true,
        },
      );
    /** Signals the harness's whole process group (tsx and its child), as a terminal would, and waits for it. */
    const stop = async (child: ReturnType<typeof start>, signal: NodeJS.Signals) => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        process.kill(-(child.pid as number), signal);
        await exited;
      }
      // Whatever of the group outlived the launcher (a SIGKILLed tsx cannot pass the signal on) goes too.
      try {
        process.kill(-(child.pid as number), "SIGKILL");
      } catch {}
    };
    // The first container cannot finish its batch (its processed topic does not exist): it is killed mid-batch.
    const first = start(`${topics.processed}-missing`);
    const admin = kafka.admin();
    await admin.connect();
    await waitFor(
      "the first harness to join and hold a batch",
      async () => {
        const { groups } = await admin.describeGroups([groupId]);
        return groups[0]?.state === "Stable";
      },
      60_000,
      200,
    );
    await admin.disconnect();
    await new Promise((resolve) => setTimeout(resolve, 2000));
    await stop(first, "SIGKILL");
    expect(await groupLag(kafka, groupId, topics.source)).toBe(4000);
    const second = start(topics.processed);
    try {
      await settle(kafka, groupId, topics.source);
    } finally {
      await stop(second, "SIGTERM");
    }
    expectAccounted(await account(kafka, topics, groupId), 4000);
  });

  it("keeps every partition moving through a 20% poison mix at a high rate", async () => {
    const { kafka, topics, groupId, harness, container, createTopics } = setup();
    await createTopics();
    const producer = producerSlot(kafka);
    const sent = await runGenerator({
      model: new GeneratorModel({ seed: 11, invalidRatio: 0.2 }),
      sink: kafkaSink(producer, topics.source),
      rate: 3000,
      count: 9000,
      signal: new AbortController().signal,
    });
    await producer.close();
    await harness.start();
    await settle(kafka, groupId, topics.source);
    await harness.stop();
    await container.close();
    expect(Object.values(harness.stats.lagByPartition)).toEqual([0, 0, 0]);
    const result = await account(kafka, topics, groupId);
    expectAccounted(result, sent.sent);
    expect(result.deadLettered / result.outputs).toBeGreaterThan(0.2);
  });
});
