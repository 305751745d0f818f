/**
 * npm run soak -- --minutes M --rate R [--invalid-ratio X]
 * Generator (a child process) + harness + handler (this process) on the embedded broker (or KAFKA_BROKERS) for M
 * minutes. Every minute: throughput, lag, DLQ share, heap and RSS of the harness. At the end: drain, the
 * at-least-once accounting, RSS growth after the first minute, and a verdict line.
 *
 * npm run soak -- --chaos --minutes M [--seed S]
 * Seeded fault schedules (functions/local/chaos.ts) back to back, consecutive seeds from S, for M minutes, on an
 * embedded broker of its own behind a fault proxy: one line per schedule, the per-fault-type accounting, a verdict.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { account, accountingText } from "../functions/local/accounting.ts";
import {
  describePlan,
  failureText,
  planSchedule,
  resultLine,
  runSchedule,
  type ScheduleResult,
  scheduleProblems,
  summaryTable,
} from "../functions/local/chaos.ts";
import { EmbeddedKafka } from "../functions/local/embedded-kafka.ts";
import { FaultProxy } from "../functions/local/fault-proxy.ts";
import { MskEventSourceHarness } from "../functions/local/harness.ts";
import { containerSender, createHandler } from "../functions/processor/processor.ts";
import { loadProcessorConfig, parseBrokers } from "../functions/shared/config.ts";
import { createKafka } from "../functions/shared/kafka.ts";
import { setLogLevel } from "../functions/shared/log.ts";
import { pipelineTopicSpecs } from "../functions/shared/topic-settings.ts";
import { ensureTopics, groupLag } from "../functions/shared/topics.ts";
import { PROJECT_ROOT } from "../lib/bundling.ts";
import { intFlag, numberFlag, parseFlags, runMain, UsageError, untilSignal } from "./cli.ts";

const USAGE = `usage: npm run soak -- --minutes M --rate R [--invalid-ratio X]
       npm run soak -- --chaos --minutes M [--seed S]
  --minutes M        how long to generate, or to run chaos schedules (default 5)
  --rate R           events per second (default 1000)
  --invalid-ratio X  share of deliberately bad records (default 0.05)
  --chaos            seeded fault schedules back to back (dropped and delayed requests, lost commits, refused and
                     cut connections, a refusing or re-created processed topic), each closed by the accounting;
                     on an embedded broker behind a fault proxy (KAFKA_BROKERS must not be set)
  --seed S           the first schedule's seed, the next ones S+1, S+2, ... (default: from the clock, printed)`;

const mb = (bytes: number) => (bytes / 2 ** 20).toFixed(0);

runMain(async () => {
  const flags = parseFlags(
    process.argv.slice(2),
    {
      minutes: { type: "string" },
      rate: { type: "string" },
      "invalid-ratio": { type: "string" },
      chaos: { type: "boolean" },
      seed: { type: "string" },
    },
    USAGE,
  );
  if (flags.help) return void console.log(USAGE);
  // Under --chaos the processor logs failed batches by the hundred, as it should: LOG_LEVEL=ERROR shows them.
  setLogLevel(flags.chaos && !process.env.LOG_LEVEL ? "SILENT" : "ERROR");
  const minutes = numberFlag(flags.minutes, "minutes", 5, 0.1, 24 * 60);
  if (flags.chaos) {
    if (flags.rate !== undefined || flags["invalid-ratio"] !== undefined) {
      throw new UsageError(
        `--rate and --invalid-ratio do not apply to --chaos (each schedule has its own)\n\n${USAGE}`,
      );
    }
    return chaosSoak(minutes, intFlag(flags.seed, "seed", 1 + (Date.now() % 1_000_000), 1, 2 ** 31 - 1));
  }
  if (flags.seed !== undefined) throw new UsageError(`--seed applies to --chaos only\n\n${USAGE}`);
  const rate = numberFlag(flags.rate, "rate", 1000, 1, 100_000);
  const invalidRatio = numberFlag(flags["invalid-ratio"], "invalid-ratio", 0.05, 0, 1);
  // Ctrl-C or SIGTERM: stop the generator, drain briefly, account and give the verdict; repeated signals do not
  // interrupt that (again after 5 s forces the exit; the broker goes with the process).
  let interrupted: { signal: NodeJS.Signals; at: number } | undefined;
  let generator: ChildProcess | undefined;
  let forcedSummary = () => {};
  void untilSignal(() => forcedSummary()).then((signal) => {
    interrupted = { signal, at: Date.now() };
    console.log(`${signal}: stopping the generator; then up to 30 s of draining, the accounting and the verdict`);
    generator?.kill("SIGINT");
  });
  let broker: EmbeddedKafka | undefined;
  let brokers: string[];
  if (process.env.KAFKA_BROKERS) brokers = parseBrokers(process.env.KAFKA_BROKERS);
  else {
    broker = new EmbeddedKafka({ heap: "2g" });
    brokers = [await broker.start()];
  }
  const id = Date.now().toString(36);
  const topics = {
    source: `soak-${id}`,
    processed: `soak-processed-${id}`,
    deadLetter: `soak-dlq-${id}`,
    esmFailures: `soak-esm-failures-${id}`,
  };
  const kafka = createKafka({ brokers, clientId: "soak", retries: 10 });
  await ensureTopics(kafka, pipelineTopicSpecs(topics, 3, topics.esmFailures));
  const config = loadProcessorConfig({
    KAFKA_BROKERS: brokers.join(","),
    SOURCE_TOPIC: topics.source,
    PROCESSED_TOPIC: topics.processed,
    DLQ_TOPIC: topics.deadLetter,
    PARTIAL_BATCH_RESPONSE: "true",
  });
  const container = containerSender(config);
  const handler = createHandler({ config, getSender: container.getSender });
  const groupId = `soak-${id}`;
  const harness = new MskEventSourceHarness({
    kafka,
    bootstrapServers: brokers.join(","),
    topic: topics.source,
    groupId,
    batchSize: 1000,
    batchWindowMs: 500,
    // The deployed error handling; parked records count as outputs in the accounting.
    onFailureTopic: topics.esmFailures,
    invoke: (event) => handler(event, {} as never),
  });
  await harness.start();
  generator = spawn(
    join(PROJECT_ROOT, "node_modules", ".bin", "tsx"),
    [
      join(PROJECT_ROOT, "bin", "generate.ts"),
      "--brokers",
      brokers.join(","),
      "--topic",
      topics.source,
      "--rate",
      String(rate),
      "--invalid-ratio",
      String(invalidRatio),
      "--duration",
      `${Math.round(minutes * 60)}s`,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  if (interrupted) generator.kill("SIGINT");
  let generatorSummary = "";
  generator.stderr?.on("data", (chunk: Buffer) => {
    const text = chunk.toString();
    if (text.includes("generator summary")) generatorSummary = text.trim();
  });
  const generatorDone = new Promise<void>((resolve) => generator?.once("exit", () => resolve()));
  console.log(`soak: ${minutes} min at ${rate}/s (${invalidRatio * 100}% invalid) on ${brokers.join(",")}`);
  const rss: number[] = [];
  let last = 0;
  const started = Date.now();
  forcedSummary = () =>
    console.log(`forced: ${harness.stats.recordsCommitted} records committed, no accounting. ${generatorSummary}`);
  const tick = setInterval(() => {
    const stats = harness.stats;
    const memory = process.memoryUsage();
    rss.push(memory.rss);
    const handled = stats.processed + stats.deadLettered;
    console.log(
      `minute ${rss.length}: ${((stats.recordsCommitted - last) / 60).toFixed(0)}/s, lag ${stats.lag}, DLQ ${handled ? ((stats.deadLettered * 100) / handled).toFixed(1) : "0"}%, ` +
        `heap ${mb(memory.heapUsed)} MB, RSS ${mb(memory.rss)} MB`,
    );
    last = stats.recordsCommitted;
  }, 60_000);
  await generatorDone;
  clearInterval(tick);
  rss.push(process.memoryUsage().rss);
  // Drain: wait until the group has committed everything (or give up 5 minutes past the run, 30 s past a Ctrl-C).
  const drainUntil = () => Math.min(started + (minutes + 5) * 60_000, interrupted ? interrupted.at + 30_000 : Infinity);
  while ((await groupLag(kafka, groupId, topics.source)) > 0 && Date.now() < drainUntil()) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  await harness.stop();
  await container.close();
  const result = await account(kafka, topics, groupId);
  console.log(generatorSummary);
  console.log(accountingText(result));
  const warm = rss[1] ?? rss[0];
  const growth = warm && rss.length > 1 ? ((rss[rss.length - 1] as number) - warm) / warm : 0;
  console.log(
    `RSS after warm-up ${warm ? mb(warm) : "?"} MB, at the end ${mb(rss[rss.length - 1] ?? 0)} MB (${(growth * 100).toFixed(1)}%)`,
  );
  const pass = result.ok && growth < 0.25;
  const cut = interrupted
    ? `; interrupted by ${interrupted.signal} after ${((interrupted.at - started) / 1000).toFixed(0)} s`
    : "";
  console.log(
    `VERDICT: ${pass ? "PASS" : "FAIL"} (${result.ok ? "nothing lost" : "accounting failed"}, ${result.duplicates} duplicates, RSS growth ${(growth * 100).toFixed(1)}%${cut})`,
  );
  await broker?.destroy();
  if (!pass) process.exitCode = 1;
});

/** --chaos: schedules with consecutive seeds for `minutes` (at least one), then the table and the verdict. */
async function chaosSoak(minutes: number, firstSeed: number): Promise<void> {
  if (process.env.KAFKA_BROKERS) {
    throw new UsageError(
      "--chaos runs its faults through a proxy in front of a broker listener of its own, so it starts an embedded " +
        `broker: unset KAFKA_BROKERS (set to ${process.env.KAFKA_BROKERS}) to run it`,
    );
  }
  let broker: EmbeddedKafka | undefined;
  // Proxy first: it holds its port while the broker starts, and reads the broker's real port per connection.
  const proxy = new FaultProxy({ targetPort: () => broker?.proxiedPort ?? 0 });
  const results: ScheduleResult[] = [];
  const errors: string[] = [];
  // Ctrl-C or SIGTERM: finish the current schedule, then the table and the verdict; repeated signals do not interrupt
  // that. Again after 5 s forces the exit, with the table so far; the broker (its own process group) goes with us.
  let interrupted: NodeJS.Signals | undefined;
  void untilSignal(() => {
    if (results.length > 0) console.log(summaryTable(results));
  }).then((signal) => {
    interrupted = signal;
    console.log(`${signal}: finishing the current schedule, then the summary and the verdict`);
  });
  try {
    broker = new EmbeddedKafka({ heap: "1g", proxiedListener: { advertisedPort: await proxy.start() } });
    await broker.start();
    const env = { brokers: broker.brokers, proxiedBrokers: broker.proxiedBrokers, proxy };
    console.log(
      `soak --chaos: ${minutes} min of schedules from seed ${firstSeed} on ${broker.brokers} (proxy ${proxy.address}); ` +
        `replay one with: npm run soak -- --chaos --minutes 0.1 --seed S`,
    );
    const started = Date.now();
    for (
      let seed = firstSeed;
      !interrupted && (results.length + errors.length === 0 || Date.now() - started < minutes * 60_000);
      seed++
    ) {
      const plan = planSchedule(seed);
      try {
        const result = await runSchedule(plan, env);
        results.push(result);
        console.log(resultLine(result));
        if (scheduleProblems(result).length > 0) console.log(failureText(result));
      } catch (error) {
        errors.push(`seed ${seed} (${plan.type})`);
        console.log(`seed ${seed} ${plan.type}: ERROR ${(error as Error).message}\n${describePlan(plan)}`);
      }
    }
    console.log(`${results.length + errors.length} schedules in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    if (results.length > 0) console.log(summaryTable(results));
  } finally {
    await proxy.stop();
    await broker?.destroy();
  }
  const failed = results
    .filter((r) => scheduleProblems(r).length > 0)
    .map((r) => `seed ${r.plan.seed} (${r.plan.type})`);
  const missing = results.reduce((n, r) => n + r.accounting.missing.length, 0);
  const duplicates = results.reduce((n, r) => n + r.accounting.duplicates, 0);
  const inputs = results.reduce((n, r) => n + r.accounting.inputs, 0);
  const pass = failed.length === 0 && errors.length === 0 && results.length > 0;
  console.log(
    `VERDICT: ${pass ? "PASS" : "FAIL"} (${results.length + errors.length} schedules, ${inputs} inputs, ${missing} missing, ` +
      `${duplicates} duplicates${failed.length + errors.length === 0 ? "" : `; failed: ${[...failed, ...errors].join(", ")}`}` +
      `${interrupted ? `; interrupted by ${interrupted}` : ""})`,
  );
  if (!pass) process.exitCode = 1;
}
