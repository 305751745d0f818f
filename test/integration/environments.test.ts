/**
 * The harness's execution environments on worker threads (functions/local/worker-environment.ts): concurrent
 * invocations across partitions as one Lambda event poller runs them (up to 5), never two of one partition at once;
 * an environment serves one invocation at a time and keeps its own module state; a function that spins past its
 * timeout is stopped and replaced (the harness keeps its heartbeats: no rebalance); a runtime that dies fails only its
 * invocation. Real broker; the last case runs the real processor handler in workers and closes with the accounting.
 */

import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { closeSync, constants, mkdtempSync, openSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { MskEvent } from "../../functions/core/msk.ts";
import { account } from "../../functions/local/accounting.ts";
import { type FunctionEnvironment, HarnessOptionError, MskEventSourceHarness } from "../../functions/local/harness.ts";
import { DEFAULT_HANDLER } from "../../functions/local/lambda-runtime.ts";
import { harnessFunction, workerEnvironment } from "../../functions/local/worker-environment.ts";
import { ensureTopics } from "../../functions/shared/topics.ts";
import { createTopicTrio, drain, produce, testKafka, waitFor } from "../support/kafka.ts";
import { validLogin } from "../support/msk.ts";

const FIXTURE = resolve(import.meta.dirname, "../support/environment-fixture.ts");
const { kafka, brokers } = testKafka("environments-test");
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

interface Call {
  environment: string;
  invocations: number;
  threadId: number;
  records: number;
  remainingMs: number;
  partitions: string[];
  offsets: string[];
  start: number;
  end: number;
}

/** Worker environments of the fixture (or another handler), each invocation observed from this thread. */
function observedEnvironments(env: Record<string, string>, modulePath = FIXTURE) {
  const dir = mkdtempSync(join(tmpdir(), "environments-"));
  dirs.push(dir);
  const calls: Call[] = [];
  const made: FunctionEnvironment[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const newEnvironment = (): FunctionEnvironment => {
    const inner = workerEnvironment({ modulePath, env: { ...process.env, FIXTURE_DIR: dir, ...env } });
    made.push(inner);
    let busy = false;
    return {
      ...inner,
      invoke: async (event: MskEvent, timeoutMs: number) => {
        // An environment serves one invocation at a time: a second one here is a harness bug.
        expect(busy).toBe(false);
        busy = true;
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        const start = performance.now();
        try {
          const response = (await inner.invoke(event, timeoutMs)) as Omit<Call, "partitions" | "offsets">;
          const offsets = Object.entries(event.records).flatMap(([id, records]) =>
            records.map((r) => `${id}/${r.offset}`),
          );
          calls.push({ ...response, partitions: Object.keys(event.records), offsets, start, end: performance.now() });
          return response;
        } finally {
          inFlight--;
          busy = false;
        }
      },
    };
  };
  return { dir, calls, made, newEnvironment, maxInFlight: () => maxInFlight };
}

/**
 * A named pipe in `dir` that the fixture's "block" modes read synchronously (a native call a worker's terminate()
 * cannot interrupt, and no child process to outlive the test); `release` ends the read (open for writing, close: EOF).
 */
function pipeIn(dir: string): { release: () => void } {
  const path = join(dir, "fifo");
  expect(spawnSync("mkfifo", [path]).status).toBe(0);
  return {
    release: () => {
      try {
        closeSync(openSync(path, constants.O_WRONLY | constants.O_NONBLOCK));
      } catch {
        // ENXIO: no reader is blocked on it (any more).
      }
    },
  };
}

async function sourceTopic(records: number, partitions = 3): Promise<string> {
  const topic = `environments-${randomUUID().slice(0, 8)}`;
  await ensureTopics(kafka, [{ topic, numPartitions: partitions }]);
  await produce(
    kafka,
    topic,
    Array.from({ length: records }, (_, i) => ({ key: `key-${i}`, value: JSON.stringify({ i }) })),
  );
  return topic;
}

/** drain() with what these tests share: small batches soon, no on-failure topic, retries almost at once. */
const drainQuickly = (options: Parameters<typeof drain>[0]) =>
  drain({ batchSize: 100, batchWindowMs: 20, onFailureTopic: null, retryBackoffMs: 10, ...options });

describe("worker environments", () => {
  it("refuses concurrency it cannot give, naming the option", () => {
    const base = { kafka, bootstrapServers: brokers.join(","), topic: "t", onFailureTopic: null };
    const invoke = async () => ({});
    const close = async () => {};
    expect(() => new MskEventSourceHarness({ ...base, invoke, concurrency: 2 })).toThrow(
      /concurrency above 1 needs newEnvironment/,
    );
    expect(
      () => new MskEventSourceHarness({ ...base, newEnvironment: () => ({ invoke, close }), concurrency: 6 }),
    ).toThrow(new HarnessOptionError("concurrency must be a whole number from 1 to 5, got 6"));
    expect(() => new MskEventSourceHarness({ ...base })).toThrow(/give the function as invoke/);
  });

  it("invokes partitions concurrently, never one partition twice at once, each environment one invocation at a time", async () => {
    const topic = await sourceTopic(900);
    const observed = observedEnvironments({ FIXTURE_MODE: "slow", FIXTURE_DELAY_MS: "150" });
    await drainQuickly({
      topic,
      batchSize: 50,
      concurrency: 3,
      newEnvironment: observed.newEnvironment,
    });
    const { calls } = observed;
    // Every record delivered exactly once (nothing failed, so nothing is retried).
    const offsets = calls.flatMap((call) => call.offsets);
    expect(offsets.length).toBe(900);
    expect(new Set(offsets).size).toBe(900);
    expect(observed.maxInFlight()).toBeGreaterThanOrEqual(2);
    expect(observed.maxInFlight()).toBeLessThanOrEqual(3);
    // No two invocations of one partition overlap in time.
    for (const partition of new Set(calls.flatMap((call) => call.partitions))) {
      const spans = calls.filter((call) => call.partitions.includes(partition)).sort((a, b) => a.start - b.start);
      for (let i = 1; i < spans.length; i++) {
        expect(spans[i]?.start, `partition ${partition}`).toBeGreaterThanOrEqual(spans[i - 1]?.end as number);
      }
    }
    // At most three environments, each on its own thread, each counting its own invocations 1, 2, 3, ...
    const environments = new Map<string, Call[]>();
    for (const call of calls) environments.set(call.environment, [...(environments.get(call.environment) ?? []), call]);
    expect(environments.size).toBeGreaterThanOrEqual(2);
    expect(environments.size).toBeLessThanOrEqual(3);
    expect(new Set(calls.map((call) => call.threadId)).size).toBe(environments.size);
    for (const own of environments.values()) {
      expect(own.map((call) => call.invocations).sort((a, b) => a - b)).toEqual(own.map((_, i) => i + 1));
    }
    // The context's remaining time counts down from the harness's timeout (120 s by default).
    expect(calls.every((call) => call.remainingMs > 100_000 && call.remainingMs <= 120_000)).toBe(true);
    // Stopping closed every environment's clients (closeProducer ran in each).
    expect(readdirSync(observed.dir).filter((name) => name.startsWith("closed-")).length).toBe(environments.size);
  }, 60_000);

  it("stops a function that spins past its timeout, replaces its environment, keeps the group, and retries", async () => {
    const topic = await sourceTopic(30, 1);
    const observed = observedEnvironments({ FIXTURE_MODE: "spin-once", FIXTURE_DELAY_MS: "0" });
    // The spin outlasts the session timeout: an in-process function would have stalled the harness's heartbeats.
    const { harness } = await drainQuickly({
      topic,
      timeoutMs: 8000,
      sessionTimeoutMs: 6000,
      newEnvironment: observed.newEnvironment,
    });
    expect(harness.stats.timedOut).toBe(1);
    expect(harness.stats.rebalances).toBe(0);
    expect(harness.stats.recordsCommitted).toBe(30);
    // The spinning environment was stopped (its runtime is gone) and the retry ran in a new one.
    expect(observed.made.length).toBe(2);
    expect(observed.made[0]?.alive?.()).toBe(false);
    // Bisected on the error (the deployed default), both halves in the new environment.
    expect(observed.calls.map((call) => call.offsets.length)).toEqual([15, 15]);
    expect(observed.calls.map((call) => call.invocations)).toEqual([1, 2]);
    expect(new Set(observed.calls.map((call) => call.environment)).size).toBe(1);
  }, 60_000);

  it("fails only the invocation whose runtime died, and runs the retry in a new environment", async () => {
    const topic = await sourceTopic(20, 1);
    const observed = observedEnvironments({ FIXTURE_MODE: "crash-once", FIXTURE_DELAY_MS: "0" });
    const { harness } = await drainQuickly({
      topic,
      bisectBatchOnError: false,
      newEnvironment: observed.newEnvironment,
    });
    expect(harness.stats.failedInvocations).toBe(1);
    expect(harness.stats.timedOut).toBe(0);
    expect(harness.stats.recordsCommitted).toBe(20);
    expect(observed.made.length).toBe(2);
    expect(observed.made[0]?.alive?.()).toBe(false);
    expect(observed.calls.map((call) => call.offsets.length)).toEqual([20]);
  }, 60_000);

  it("replaces an environment whose module failed to load (Lambda's init error), and delivers everything", async () => {
    const topic = await sourceTopic(10, 1);
    const observed = observedEnvironments({ FIXTURE_MODE: "init-fail-once", FIXTURE_DELAY_MS: "0" });
    const { harness } = await drainQuickly({
      topic,
      retryAttempts: 3,
      newEnvironment: observed.newEnvironment,
    });
    expect(harness.stats.discarded).toBe(0);
    expect(harness.stats.failedInvocations).toBe(1);
    expect(observed.made.length).toBe(2);
    expect(observed.made[0]?.alive?.()).toBe(false);
    expect(observed.calls.flatMap((call) => call.offsets).length).toBe(10);
  }, 60_000);

  it("does not count the environment's init against the invocation's timeout", async () => {
    const topic = await sourceTopic(5, 1);
    const observed = observedEnvironments({ FIXTURE_MODE: "slow-init", FIXTURE_DELAY_MS: "0" });
    const { harness } = await drainQuickly({
      topic,
      timeoutMs: 1000,
      newEnvironment: observed.newEnvironment,
    });
    expect(harness.stats.timedOut).toBe(0);
    expect(harness.stats.failedInvocations).toBe(0);
    expect(observed.calls.map((call) => call.offsets.length)).toEqual([5]);
  }, 60_000);

  it("never invokes an environment whose runtime died after its last response", async () => {
    const topic = await sourceTopic(5, 1);
    const observed = observedEnvironments({ FIXTURE_MODE: "crash-after-once", FIXTURE_DELAY_MS: "0" });
    const groupId = `environments-${randomUUID()}`;
    const harness = new MskEventSourceHarness({
      kafka,
      bootstrapServers: brokers.join(","),
      topic,
      groupId,
      batchSize: 100,
      batchWindowMs: 20,
      onFailureTopic: null,
      retryAttempts: 0,
      newEnvironment: observed.newEnvironment,
    });
    await harness.start();
    try {
      await waitFor("the first records", () => harness.stats.recordsCommitted === 5);
      await waitFor("the first runtime to die", () => observed.made[0]?.alive?.() === false);
      await produce(
        kafka,
        topic,
        Array.from({ length: 5 }, (_, i) => ({ key: `later-${i}`, value: "{}" })),
      );
      await waitFor("the later records", () => harness.stats.recordsCommitted === 10);
    } finally {
      await harness.stop();
    }
    // With no retries, an invocation handed to the dead runtime would have discarded the later records.
    expect(harness.stats.failedInvocations).toBe(0);
    expect(harness.stats.discarded).toBe(0);
    expect(observed.calls.flatMap((call) => call.offsets).length).toBe(10);
    expect(observed.made.length).toBe(2);
  }, 60_000);

  it("never invokes an environment whose runtime died before its first invocation: the harness's or the CLI's", async () => {
    const emptyEvent = { records: {} } as unknown as MskEvent;
    // The harness: newEnvironment hands it an environment that loaded and then died.
    const dir = mkdtempSync(join(tmpdir(), "environments-"));
    dirs.push(dir);
    const env = { ...process.env, FIXTURE_DIR: dir, FIXTURE_MODE: "die-after-load-once", FIXTURE_DELAY_MS: "0" };
    const dead = workerEnvironment({ modulePath: FIXTURE, env });
    await dead.ready();
    await waitFor("the first runtime to die", () => !dead.alive());
    const made = [dead];
    const topic = await sourceTopic(10, 2);
    const { harness } = await drainQuickly({
      topic,
      retryAttempts: 0,
      concurrency: 2,
      newEnvironment: () => made.shift() ?? workerEnvironment({ modulePath: FIXTURE, env }),
    });
    // With no retries, an invocation handed to the dead runtime would have discarded its records.
    expect({ failed: harness.stats.failedInvocations, discarded: harness.stats.discarded }).toEqual({
      failed: 0,
      discarded: 0,
    });
    expect(harness.stats.recordsCommitted).toBe(10);
    // The CLIs' function (bin/harness.ts, bin/start.ts): its first environment, loaded at start, dies while waiting.
    const cliDir = mkdtempSync(join(tmpdir(), "environments-"));
    dirs.push(cliDir);
    Object.assign(process.env, { FIXTURE_DIR: cliDir, FIXTURE_MODE: "die-after-load-once", FIXTURE_DELAY_MS: "0" });
    const cli = await harnessFunction(2, FIXTURE);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const environment = await (cli.options.newEnvironment as () => FunctionEnvironment)();
    await environment.ready?.();
    expect(environment.alive?.()).toBe(true);
    expect(await environment.invoke(emptyEvent, 5000)).toMatchObject({ records: 0 });
    await environment.close();
    await cli.close();
  }, 60_000);

  it("closes an environment within about 12 s even when its idle thread is stuck in a native call", async () => {
    const dir = mkdtempSync(join(tmpdir(), "environments-"));
    dirs.push(dir);
    const pipe = pipeIn(dir);
    const environment = workerEnvironment({
      modulePath: FIXTURE,
      env: { ...process.env, FIXTURE_DIR: dir, FIXTURE_MODE: "block-after-response-once" },
    });
    try {
      await environment.ready();
      await environment.invoke({ records: {} } as unknown as MskEvent, 5000);
      await new Promise((resolve) => setTimeout(resolve, 200));
      // Blocked, not dead: the read is under way.
      expect(environment.alive()).toBe(true);
      const started = performance.now();
      await environment.close();
      // 10 s for the handler's clients (the blocked thread cannot close them), then at most 2 s for the thread, while
      // the native call goes on.
      expect(performance.now() - started).toBeGreaterThan(9_500);
      expect(performance.now() - started).toBeLessThan(16_000);
    } finally {
      pipe.release();
    }
  }, 60_000);

  it("acts on a timeout at once even while the function blocks in a native call", async () => {
    const topic = await sourceTopic(4, 1);
    const observed = observedEnvironments({ FIXTURE_MODE: "block-once", FIXTURE_DELAY_MS: "0" });
    const pipe = pipeIn(observed.dir);
    const started = performance.now();
    const { harness } = await drainQuickly({
      topic,
      timeoutMs: 1000,
      bisectBatchOnError: false,
      newEnvironment: observed.newEnvironment,
    }).finally(() => pipe.release());
    // 1 s timeout, at most 2 s waiting for the thread, the retry in a new environment, while the native call goes on.
    expect(performance.now() - started).toBeLessThan(6500);
    expect(harness.stats.timedOut).toBe(1);
    expect(observed.calls.map((call) => call.offsets.length)).toEqual([4]);
  }, 60_000);

  it("keeps the in-process environment after the function throws a value that has no text", async () => {
    const topic = await sourceTopic(20, 1);
    let calls = 0;
    const seen: number[] = [];
    const { harness } = await drainQuickly({
      topic,
      batchSize: 5,
      retryAttempts: 2,
      bisectBatchOnError: false,
      invoke: async (event) => {
        calls++;
        // String(Object.create(null)) throws: the harness must still fail this batch alone and go on.
        if (calls === 1) throw Object.create(null);
        for (const records of Object.values(event.records)) for (const record of records) seen.push(record.offset);
        return {};
      },
    });
    expect(harness.stats.discarded).toBe(0);
    expect(harness.stats.failedInvocations).toBe(1);
    expect(new Set(seen).size).toBe(20);
  }, 60_000);

  it("runs the real processor in three environments: every record has its output once, lag 0", async () => {
    const topics = await createTopicTrio(kafka, 3);
    const records = Array.from({ length: 600 }, (_, i) => ({
      key: `user-${i}`,
      value: i % 10 === 0 ? "{not json" : JSON.stringify(validLogin({ user_id: `user-${i}` })),
    }));
    await produce(kafka, topics.source, records);
    const env = {
      KAFKA_BROKERS: brokers.join(","),
      SOURCE_TOPIC: topics.source,
      PROCESSED_TOPIC: topics.processed,
      DLQ_TOPIC: topics.deadLetter,
    };
    const observed = observedEnvironments(env, DEFAULT_HANDLER);
    const { harness, groupId } = await drainQuickly({
      topic: topics.source,
      batchSize: 40,
      // As deployed: the default on-failure topic.
      onFailureTopic: undefined,
      concurrency: 3,
      newEnvironment: observed.newEnvironment,
    });
    const result = await account(kafka, topics, groupId);
    expect(result).toMatchObject({ inputs: 600, processed: 540, deadLettered: 60, duplicates: 0, lag: 0, ok: true });
    expect(harness.stats.processed).toBe(540);
    expect(harness.stats.deadLettered).toBe(60);
    expect(observed.maxInFlight()).toBeGreaterThanOrEqual(2);
  }, 90_000);
});
