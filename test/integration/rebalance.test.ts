/**
 * Rebalances under load: harnesses join and leave the group while records flow. A harness stops invoking for
 * partitions it is losing, finishes and commits the invocation in flight, then rejoins; so no two harnesses ever
 * invoke for the same partition at once, and every record has an output.
 */
import { randomUUID } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import type { MskEvent } from "../../functions/core/msk.ts";
import { account } from "../../functions/local/accounting.ts";
import { MskEventSourceHarness } from "../../functions/local/harness.ts";
import { createProducer } from "../../functions/shared/kafka.ts";
import { createTopicTrio, groupLag, processorFor, testKafka, waitFor } from "../support/kafka.ts";
import { validLogin } from "../support/msk.ts";

const { kafka, brokers } = testKafka("rebalance-test");
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Call {
  harness: string;
  partitions: string[];
  start: number;
  end: number;
}

const running: MskEventSourceHarness[] = [];
afterAll(async () => {
  await Promise.allSettled(running.map((h) => h.stop()));
});

describe("rebalances", () => {
  it("harnesses joining and leaving under load never invoke for one partition at once, and lose nothing", async () => {
    const topics = await createTopicTrio(kafka, 6);
    const groupId = `rebalance-${randomUUID()}`;
    const processor = processorFor(topics, { PARTIAL_BATCH_RESPONSE: "true" });
    const calls: Call[] = [];
    const batchSize = 50;
    const start = async (name: string) => {
      const harness = new MskEventSourceHarness({
        kafka,
        bootstrapServers: brokers.join(","),
        topic: topics.source,
        groupId,
        batchSize,
        batchWindowMs: 50,
        sessionTimeoutMs: 10_000,
        timeoutMs: 60_000,
        invoke: async (event: MskEvent, timeoutMs) => {
          const call: Call = {
            harness: name,
            partitions: Object.keys(event.records),
            start: performance.now(),
            end: 0,
          };
          calls.push(call);
          try {
            // Long enough that a rebalance lands while an invocation is in flight, and a backlog takes a while.
            await sleep(200);
            return await processor.invoke(event, timeoutMs);
          } finally {
            call.end = performance.now();
          }
        },
      });
      running.push(harness);
      await harness.start();
      return harness;
    };

    // A backlog of 6,000 records: each fetch hands A 1,000 records per partition, 120 invocations' worth (24 s);
    // then 2,000 more over 6 s, keyed over the 6 partitions.
    const producer = createProducer(kafka);
    await producer.connect();
    let sent = 0;
    const send = async (round: number) => {
      await producer.send({
        topic: topics.source,
        acks: -1,
        messages: Array.from({ length: 100 }, (_, i) => ({
          key: `user-${(round * 100 + i) % 500}`,
          value: JSON.stringify(validLogin({ user_id: `user-${round}-${i}` })),
        })),
      });
      sent += 100;
    };
    for (let round = 0; round < 60; round++) await send(round);
    const producing = (async () => {
      for (let round = 60; round < 80; round++) {
        await send(round);
        await sleep(300);
      }
    })();

    const a = await start("A");
    await sleep(1000);
    // B can join only once A has released its partitions: after the invocation in flight, not after A's backlog.
    const joining = performance.now();
    const b = await start("B");
    const joinMs = performance.now() - joining;
    expect(joinMs).toBeLessThan(12_000);
    await sleep(2000);
    const c = await start("C");
    await sleep(2000);
    await a.stop();
    await producing;
    await producer.disconnect();
    await waitFor(
      "the group to commit everything",
      async () => (await groupLag(kafka, groupId, topics.source)) === 0,
      60_000,
    );
    await Promise.all([b.stop(), c.stop()]);
    await processor.close();

    // No two harnesses in one partition at once.
    const overlaps: string[] = [];
    for (let i = 0; i < calls.length; i++) {
      for (let j = i + 1; j < calls.length; j++) {
        const x = calls[i] as Call;
        const y = calls[j] as Call;
        if (x.harness === y.harness || x.end <= y.start || y.end <= x.start) continue;
        const shared = x.partitions.filter((p) => y.partitions.includes(p));
        if (shared.length > 0) overlaps.push(`${x.harness}/${y.harness} on ${shared.join(",")}`);
      }
    }
    expect(overlaps).toEqual([]);

    // Each harness saw the group change, and partitions moved between harnesses.
    expect(a.stats.rebalances + b.stats.rebalances + c.stats.rebalances).toBeGreaterThanOrEqual(3);
    const owners = new Map<string, string[]>();
    for (const call of [...calls].sort((x, y) => x.start - y.start)) {
      for (const p of call.partitions) {
        const list = owners.get(p) ?? [];
        if (list[list.length - 1] !== call.harness) list.push(call.harness);
        owners.set(p, list);
      }
    }
    const moves = [...owners.values()].reduce((n, list) => n + list.length - 1, 0);
    expect(moves).toBeGreaterThan(0);

    // Full accounting: every record has an output, duplicates at most one in-flight batch per moved partition.
    const accounting = await account(kafka, topics, groupId);
    expect(accounting.inputs).toBe(sent);
    expect(accounting.missing).toEqual([]);
    expect(accounting.orphans).toEqual([]);
    expect(accounting.lag).toBe(0);
    expect(accounting.duplicates).toBeLessThanOrEqual(moves * batchSize);
    console.log(
      `rebalance test: ${sent} records, ${calls.length} invocations, ${moves} partition moves, ` +
        `${accounting.duplicates} duplicates, B joined in ${Math.round(joinMs)} ms, withdrawn ${a.stats.withdrawn + b.stats.withdrawn + c.stats.withdrawn}`,
    );
  });
});
