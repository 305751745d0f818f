/**
 * npm run harness -- --brokers HOST:PORT [flags]
 * Runs the processor handler locally behind an emulated MSK event source mapping. SIGINT/SIGTERM stop it cleanly, with a
 * summary; repeated ones do not interrupt that (again after 5 s forces the exit).
 */

import { MAX_POLLER_CONCURRENCY, MskEventSourceHarness, type StartingPosition } from "../functions/local/harness.ts";
import { DEFAULT_HANDLER } from "../functions/local/lambda-runtime.ts";
import { startProgress, summaryText } from "../functions/local/progress.ts";
import { harnessFunction } from "../functions/local/worker-environment.ts";
import { loadConnectionConfig, loadTopics } from "../functions/shared/config.ts";
import {
  ESM_DEFAULTS,
  MAX_BATCH_SIZE,
  MAX_BATCH_WINDOW_MS,
  MAX_FUNCTION_TIMEOUT_SECONDS,
  MAX_RECORD_AGE_SECONDS,
  MAX_RETRY_ATTEMPTS,
  MIN_PROCESSOR_TIMEOUT_SECONDS,
  MIN_RECORD_AGE_SECONDS,
} from "../functions/shared/esm.ts";
import { connectKafka } from "../functions/shared/kafka.ts";
import { setLogLevel } from "../functions/shared/log.ts";
import { choiceFlag, intFlag, parseFlags, runMain, timestampFlag, toggleFlag, UsageError, untilSignal } from "./cli.ts";

const D = ESM_DEFAULTS;

const USAGE = `usage: npm run harness -- --brokers HOST:PORT [flags]
  --brokers B              bootstrap servers (default: KAFKA_BROKERS; KAFKA_AUTH etc. as for the processor)
  --topic T                source topic (default: SOURCE_TOPIC or user-login)
  --group G                consumer group id (default: user-login-processor)
  --batch-size N           records per invocation, 1..${MAX_BATCH_SIZE} (default: 100)
  --batch-window-ms N      longest wait to fill a batch, 0..${MAX_BATCH_WINDOW_MS} (default: 500)
  --starting-position P    TRIM_HORIZON (default) | LATEST | AT_TIMESTAMP, for a group without committed offsets
  --starting-timestamp T   with AT_TIMESTAMP: ISO-8601 time or epoch milliseconds
  --session-timeout-ms N   how long the group waits for a harness that died, 6000..300000 (default: 30000)
  --handler PATH           module exporting handler (default: the processor, ${DEFAULT_HANDLER})
  --concurrency N          invocations at once, each on other partitions, 1..${MAX_POLLER_CONCURRENCY} (one event poller's limit);
                           above 1 each runs in an execution environment of its own, a worker thread (default: 1,
                           in this process)
Error handling, defaulting to what the CDK stack deploys (functions/shared/esm.ts):
  --retry-attempts N       retries of a failed batch before its records are parked, -1 (infinite; 10 with an
                           on-failure topic, as Lambda) or 0..${MAX_RETRY_ATTEMPTS} (default: ${D.retryAttempts})
  --max-record-age-s S     records older than this are parked without an invocation, -1 (never) or
                           ${MIN_RECORD_AGE_SECONDS}..${MAX_RECORD_AGE_SECONDS} (default: ${D.maxRecordAgeSeconds})
  --bisect | --no-bisect   split a failed batch in two and retry each half (default: ${D.bisectBatchOnError ? "--bisect" : "--no-bisect"})
  --on-failure-topic T     where parked records go, with esm-failure.* headers; "none": they are discarded, as
                           Lambda skips them without a destination (default: ${D.onFailureTopic})
  --report-batch-item-failures | --no-report-batch-item-failures
                           honour the function's batchItemFailures; without, a returned response is a success (default:
                           ${D.reportBatchItemFailures ? "--report-batch-item-failures" : "--no-report-batch-item-failures"}; sets PARTIAL_BATCH_RESPONSE for the processor unless set)
  --timeout-s S            an invocation running longer fails (the function timeout), 1..${MAX_FUNCTION_TIMEOUT_SECONDS} (default: ${D.functionTimeoutSeconds})`;

runMain(async () => {
  const flags = parseFlags(
    process.argv.slice(2),
    {
      brokers: { type: "string" },
      topic: { type: "string" },
      group: { type: "string" },
      "batch-size": { type: "string" },
      "batch-window-ms": { type: "string" },
      "starting-position": { type: "string" },
      "starting-timestamp": { type: "string" },
      "session-timeout-ms": { type: "string" },
      handler: { type: "string" },
      concurrency: { type: "string" },
      "retry-attempts": { type: "string" },
      "max-record-age-s": { type: "string" },
      bisect: { type: "boolean" },
      "no-bisect": { type: "boolean" },
      "on-failure-topic": { type: "string" },
      "report-batch-item-failures": { type: "boolean" },
      "no-report-batch-item-failures": { type: "boolean" },
      "timeout-s": { type: "string" },
    },
    USAGE,
  );
  if (flags.help) return void console.log(USAGE);
  // The live progress line says what happens; per-batch logs would bury it. LOG_LEVEL=INFO shows them.
  if (!process.env.LOG_LEVEL) setLogLevel("ERROR");
  if (!flags.brokers && !process.env.KAFKA_BROKERS && !process.env.MSK_CLUSTER_ARN) {
    throw new UsageError(`--brokers is required (or set KAFKA_BROKERS or MSK_CLUSTER_ARN)\n\n${USAGE}`);
  }
  const startingPosition = choiceFlag<StartingPosition>(
    flags["starting-position"],
    "starting-position",
    ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"],
    "TRIM_HORIZON",
  );
  const startingTimestamp = timestampFlag(flags["starting-timestamp"], "starting-timestamp");
  if (startingPosition === "AT_TIMESTAMP" && startingTimestamp === undefined) {
    throw new UsageError("--starting-position AT_TIMESTAMP needs --starting-timestamp");
  }
  const retryAttempts = intFlag(flags["retry-attempts"], "retry-attempts", D.retryAttempts, -1, MAX_RETRY_ATTEMPTS);
  const maxRecordAgeSeconds = intFlag(
    flags["max-record-age-s"],
    "max-record-age-s",
    D.maxRecordAgeSeconds,
    -1,
    MAX_RECORD_AGE_SECONDS,
  );
  if (maxRecordAgeSeconds !== -1 && maxRecordAgeSeconds < MIN_RECORD_AGE_SECONDS) {
    throw new UsageError(
      `--max-record-age-s must be -1 or from ${MIN_RECORD_AGE_SECONDS} to ${MAX_RECORD_AGE_SECONDS}, got "${maxRecordAgeSeconds}"`,
    );
  }
  const reportBatchItemFailures = toggleFlag(
    flags["report-batch-item-failures"],
    flags["no-report-batch-item-failures"],
    "report-batch-item-failures",
    D.reportBatchItemFailures,
  );
  const onFailureTopic = flags["on-failure-topic"] ?? D.onFailureTopic;
  if (onFailureTopic === "") throw new UsageError('--on-failure-topic needs a topic name, or "none"');
  // As the stack deploys the function: PARTIAL_BATCH_RESPONSE follows the mapping's ReportBatchItemFailures.
  process.env.PARTIAL_BATCH_RESPONSE ??= String(reportBatchItemFailures);
  const timeoutMs =
    intFlag(flags["timeout-s"], "timeout-s", D.functionTimeoutSeconds, 1, MAX_FUNCTION_TIMEOUT_SECONDS) * 1000;
  const bisectBatchOnError = toggleFlag(flags.bisect, flags["no-bisect"], "bisect", D.bisectBatchOnError);
  const batchSize = intFlag(flags["batch-size"], "batch-size", 100, 1, MAX_BATCH_SIZE);
  const batchWindowMs = intFlag(flags["batch-window-ms"], "batch-window-ms", 500, 0, MAX_BATCH_WINDOW_MS);
  const concurrency = intFlag(flags.concurrency, "concurrency", 1, 1, MAX_POLLER_CONCURRENCY);
  const sessionTimeoutMs = intFlag(flags["session-timeout-ms"], "session-timeout-ms", 30_000, 6000, 300_000);
  // Every flag checked before anything connects: a bad flag fails at once, naming itself.
  const connection = loadConnectionConfig({
    ...process.env,
    ...(flags.brokers ? { KAFKA_BROKERS: flags.brokers } : {}),
  });
  const { kafka, brokers } = await connectKafka(connection, "user-login-esm-harness");
  const handler = await harnessFunction(concurrency, flags.handler);
  const harness = new MskEventSourceHarness({
    kafka,
    bootstrapServers: brokers.join(","),
    // As Lambda does: the event names the cluster the mapping reads (the processor refuses any other).
    eventSourceArn: connection.clusterArn,
    topic: flags.topic ?? loadTopics(process.env).source,
    groupId: flags.group,
    batchSize,
    batchWindowMs,
    startingPosition,
    startingTimestamp,
    sessionTimeoutMs,
    retryAttempts,
    maxRecordAgeSeconds,
    bisectBatchOnError,
    reportBatchItemFailures,
    onFailureTopic: onFailureTopic === "none" ? null : onFailureTopic,
    timeoutMs,
    ...handler.options,
  });
  let stopProgress = () => {};
  const stopping = untilSignal(() => {
    stopProgress();
    console.error(summaryText(harness.stats));
  });
  if (timeoutMs < MIN_PROCESSOR_TIMEOUT_SECONDS * 1000) {
    console.error(
      `harness: --timeout-s below ${MIN_PROCESSOR_TIMEOUT_SECONDS}: the processor starts no produce request in its last 35 s, so it may write nothing (the stack refuses such a timeout).`,
    );
  }
  if (onFailureTopic === "none" && retryAttempts !== -1) {
    console.error("harness: no on-failure topic: records that exhaust their retries are discarded, as Lambda does.");
  }
  await harness.start();
  console.error(`harness: consuming ${brokers.join(",")}, running on Node.js ${process.version}; Ctrl-C stops.`);
  stopProgress = startProgress(harness.stats);
  // A consumer that crashed for good consumes nothing more: stop with an error instead of idling.
  const crash = await Promise.race([stopping.then(() => undefined), harness.crashed]);
  stopProgress();
  await harness.stop();
  await handler.close();
  console.error(summaryText(harness.stats));
  if (crash) throw new Error(`the harness's Kafka consumer crashed: ${crash.message}`);
});
