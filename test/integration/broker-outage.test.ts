/**
 * The broker goes away in the middle of a batch: the invocation fails, the harness retries, and once the broker is
 * back every input has an output. Runs on a broker of its own, so that stopping it disturbs no other test.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MskEvent } from "../../functions/core/msk.ts";
import { EmbeddedKafka } from "../../functions/local/embedded-kafka.ts";
import { MskEventSourceHarness } from "../../functions/local/harness.ts";
import { containerSender, createHandler } from "../../functions/processor/processor.ts";
import { loadProcessorConfig } from "../../functions/shared/config.ts";
import { createKafka, createProducer } from "../../functions/shared/kafka.ts";
import { sizeConfigs } from "../../functions/shared/topic-settings.ts";
import { ensureTopics } from "../../functions/shared/topics.ts";
import { groupLag, readTopic, waitFor } from "../support/kafka.ts";
import { validLogin } from "../support/msk.ts";

const broker = new EmbeddedKafka({ heap: "512m" });

beforeAll(async () => {
  await broker.start();
});
afterAll(async () => {
  await broker.destroy();
});

describe("a broker outage during a batch", () => {
  it("fails the invocation, retries it, and loses nothing once the broker is back", async () => {
    const kafka = createKafka({ brokers: [broker.brokers], clientId: "outage-test", retries: 10 });
    const topics = {
      source: "user-login",
      processed: "processed-user-login",
      deadLetter: "user-login-dlq",
      esmFailures: "user-login-esm-failures",
    };
    await ensureTopics(kafka, [
      { topic: topics.source, numPartitions: 2 },
      { topic: topics.processed, numPartitions: 2 },
      { topic: topics.deadLetter, configs: sizeConfigs("deadLetter") },
      { topic: topics.esmFailures, configs: sizeConfigs("esmFailure") },
    ]);
    const producer = createProducer(kafka);
    await producer.connect();
    const send = (from: number, count: number) =>
      producer.send({
        topic: topics.source,
        acks: -1,
        messages: Array.from({ length: count }, (_, i) => ({
          key: `user-${from + i}`,
          value: i % 5 === 4 ? "not json" : JSON.stringify(validLogin({ user_id: `user-${from + i}` })),
        })),
      });
    await send(0, 100);

    const config = loadProcessorConfig({ KAFKA_BROKERS: broker.brokers, PARTIAL_BATCH_RESPONSE: "true" });
    const container = containerSender(config);
    const handler = createHandler({ config, getSender: container.getSender });
    let invocations = 0;
    let failures = 0;
    let outage: Promise<void> | undefined;
    const invoke = async (event: MskEvent) => {
      invocations++;
      // The second batch finds the broker gone: its producer cannot write, so the invocation must not succeed.
      if (invocations === 2) outage = broker.kill();
      await outage;
      try {
        const response = await handler(event, {} as never);
        if (response.batchItemFailures.length > 0) failures++;
        return response;
      } catch (error) {
        failures++;
        throw error;
      }
    };
    const groupId = `group-${randomUUID()}`;
    const harness = new MskEventSourceHarness({
      kafka,
      bootstrapServers: broker.brokers,
      topic: topics.source,
      groupId,
      batchSize: 20,
      batchWindowMs: 100,
      retryBackoffMs: 200,
      invoke,
    });
    await harness.start();
    await waitFor("a failed invocation while the broker is down", () => failures > 0, 60_000);
    expect(broker.running).toBe(false);
    await broker.start();
    await send(100, 50);
    await waitFor(
      "every offset committed after the outage",
      async () => {
        try {
          return (await groupLag(kafka, groupId, topics.source)) === 0;
        } catch {
          return false;
        }
      },
      90_000,
      500,
    );
    await harness.stop();
    await container.close();
    await producer.disconnect();

    const outputs = [...(await readTopic(kafka, topics.processed)), ...(await readTopic(kafka, topics.deadLetter))];
    const seen = new Map<string, number>();
    for (const output of outputs) {
      const id = `${output.headers["source.partition"]}/${output.headers["source.offset"]}`;
      seen.set(id, (seen.get(id) ?? 0) + 1);
    }
    const source = await readTopic(kafka, topics.source);
    expect(source).toHaveLength(150);
    for (const input of source) {
      expect(
        seen.get(`${input.partition}/${input.offset}`) ?? 0,
        `${input.partition}/${input.offset}`,
      ).toBeGreaterThanOrEqual(1);
    }
    expect(seen.size).toBe(150);
    const duplicates = outputs.length - seen.size;
    console.info(`broker outage: ${failures} failed invocations, ${duplicates} duplicate outputs (at-least-once)`);
    expect(harness.stats.failedInvocations).toBeGreaterThanOrEqual(1);
  });
});
