/**
 * Seeded chaos: randomized fault schedules (functions/local/chaos.ts) over generator + harness + handler on a broker
 * of this file's own, every client through one FaultProxy, each schedule closed by the full accounting. The promise
 * under test: no record is ever lost, no partition wedged, whatever the network or the broker does meanwhile.
 *
 *   npx vitest run test/integration/chaos.test.ts                      seeds 1..30
 *   CHAOS_SEEDS=7,12 npx vitest run test/integration/chaos.test.ts     replay those seeds
 *   CHAOS_SEED_BASE=100 CHAOS_COUNT=50 npx vitest run ...              seeds 101..150
 *   CHAOS_LOG=1 ...                                                    with the processor's log (LOG_LEVEL)
 *
 * At the end: a per-fault-type table on the console and in .cache/chaos-summary.json.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ChaosEnvironment,
  ChaosError,
  describePlan,
  failureText,
  planSchedule,
  replayCommand,
  resultLine,
  runSchedule,
  type ScheduleResult,
  scheduleProblems,
  summarize,
  summaryTable,
} from "../../functions/local/chaos.ts";
import { EmbeddedKafka, REPO_ROOT } from "../../functions/local/embedded-kafka.ts";
import { FaultProxy } from "../../functions/local/fault-proxy.ts";
import { parseLogLevel, setLogLevel } from "../../functions/shared/log.ts";

function seedsToRun(): number[] {
  const listed = process.env.CHAOS_SEEDS?.trim();
  if (listed) {
    return listed.split(",").map((text) => {
      const seed = Number(text.trim());
      if (!Number.isInteger(seed)) throw new Error(`CHAOS_SEEDS must list whole numbers, got "${listed}"`);
      return seed;
    });
  }
  const base = Number(process.env.CHAOS_SEED_BASE ?? 0);
  const count = Number(process.env.CHAOS_COUNT ?? 30);
  return Array.from({ length: count }, (_, i) => base + i + 1);
}

const plans = seedsToRun().map((seed) => planSchedule(seed));
const results: ScheduleResult[] = [];
let proxy: FaultProxy;
let broker: EmbeddedKafka;
let env: ChaosEnvironment;
const fileStarted = Date.now();

beforeAll(async () => {
  // Under faults the processor logs failed batches by the hundred, as it should: CHAOS_LOG=1 shows them.
  setLogLevel(process.env.CHAOS_LOG ? parseLogLevel(process.env.LOG_LEVEL) : "SILENT");
  // Proxy first: it holds its port while the broker starts, and reads the broker's real port per connection.
  proxy = new FaultProxy({ targetPort: () => broker.proxiedPort });
  const port = await proxy.start();
  broker = new EmbeddedKafka({ heap: "768m", proxiedListener: { advertisedPort: port } });
  await broker.start();
  env = { brokers: broker.brokers, proxiedBrokers: broker.proxiedBrokers, proxy, settleTimeoutMs: 60_000 };
});

afterAll(async () => {
  if (results.length > 0) {
    const seconds = ((Date.now() - fileStarted) / 1000).toFixed(0);
    console.info(`chaos: ${results.length} schedules in ${seconds} s\n${summaryTable(results)}`);
    const dir = join(REPO_ROOT, ".cache");
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, "chaos-summary.json"),
      `${JSON.stringify(
        {
          at: new Date().toISOString(),
          seconds: Number(seconds),
          seeds: results.map((r) => r.plan.seed),
          byType: summarize(results),
          schedules: results.map((r) => ({
            seed: r.plan.seed,
            type: r.plan.type,
            partialBatchResponse: r.plan.partialBatchResponse,
            sent: r.generator.sent,
            inputs: r.accounting.inputs,
            outputs: r.accounting.outputs,
            missing: r.accounting.missing.length,
            orphans: r.accounting.orphans.length,
            duplicates: r.accounting.duplicates,
            fired: r.firings.map((f) => ({ type: f.type, fired: f.fired, detail: f.detail })),
            settledMs: r.settledMs,
            elapsedMs: r.elapsedMs,
            ok: scheduleProblems(r).length === 0,
          })),
        },
        null,
        2,
      )}\n`,
    );
  }
  await proxy?.stop();
  await broker?.destroy();
});

describe("chaos: seeded fault schedules, each closed by the accounting", () => {
  for (const plan of plans) {
    it(`seed ${plan.seed}: ${plan.type}`, { timeout: 180_000 }, async () => {
      let result: ScheduleResult;
      try {
        result = await runSchedule(plan, env);
      } catch (error) {
        if (error instanceof ChaosError) throw error;
        throw new Error(
          `seed ${plan.seed} (${plan.type}) failed to run: ${(error as Error).message}\n${describePlan(plan)}\nreplay: ${replayCommand(plan.seed)}`,
          { cause: error },
        );
      }
      results.push(result);
      const message = failureText(result);
      const { accounting } = result;
      expect(scheduleProblems(result), message).toEqual([]);
      expect(accounting.missing, message).toEqual([]);
      expect(accounting.orphans, message).toEqual([]);
      expect(accounting.lag, message).toBe(0);
      expect(accounting.inputs, message).toBeGreaterThan(0);
      expect(accounting.outputs, message).toBe(accounting.inputs + accounting.duplicates);
      for (const firing of result.firings)
        expect(firing.fired, `${firing.type}: ${firing.detail}\n${message}`).toBeGreaterThan(0);
      console.info(resultLine(result));
    });
  }
});
