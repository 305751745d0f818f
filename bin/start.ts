/**
 * npm start [-- flags]
 * The whole local pipeline: an embedded Kafka broker (or KAFKA_BROKERS), the three topics, a generator of
 * real-shaped user-login events, and the processor handler behind the emulated MSK event source mapping.
 * Ctrl-C stops everything cleanly and prints a summary.
 */

import { kafkaSink, producerSlot } from "../functions/generator/main.ts";
import { GeneratorModel } from "../functions/generator/model.ts";
import { runGenerator } from "../functions/generator/run.ts";
import { EmbeddedKafka } from "../functions/local/embedded-kafka.ts";
import { MAX_BATCH_SIZE, MskEventSourceHarness } from "../functions/local/harness.ts";
import { loadHandler } from "../functions/local/lambda-runtime.ts";
import { startProgress, summaryText } from "../functions/local/progress.ts";
import { loadConnectionConfig, loadTopics } from "../functions/shared/config.ts";
import { connectKafka } from "../functions/shared/kafka.ts";
import { setLogLevel } from "../functions/shared/log.ts";
import { sizeConfigs } from "../functions/shared/topic-settings.ts";
import { ensureTopics } from "../functions/shared/topics.ts";
import { intFlag, numberFlag, parseFlags, runMain, untilSignal } from "./cli.ts";

const USAGE = `usage: npm start -- [flags]
  --rate N             events generated per second (default: 2, as the original generator)
  --invalid-ratio R    share of deliberately bad records, 0..1 (default: 0; see npm run generate -- --help)
  --partitions N       partitions of each topic it creates (default: 3)
  --batch-size N       records per invocation, 1..${MAX_BATCH_SIZE} (default: 100)
  --batch-window-ms N  longest wait to fill a batch (default: 500)
Uses KAFKA_BROKERS when set; otherwise starts an embedded Kafka broker.`;

runMain(async () => {
  const flags = parseFlags(
    process.argv.slice(2),
    {
      rate: { type: "string" },
      "invalid-ratio": { type: "string" },
      partitions: { type: "string" },
      "batch-size": { type: "string" },
      "batch-window-ms": { type: "string" },
    },
    USAGE,
  );
  if (flags.help) return void console.log(USAGE);
  // The live progress line says what happens; per-batch logs would bury it. LOG_LEVEL=INFO shows them.
  if (!process.env.LOG_LEVEL) setLogLevel("ERROR");
  const rate = numberFlag(flags.rate, "rate", 2, 0.1, 100_000);
  const invalidRatio = numberFlag(flags["invalid-ratio"], "invalid-ratio", 0, 0, 1);
  const partitions = intFlag(flags.partitions, "partitions", 3, 1, 1000);
  const batchSize = intFlag(flags["batch-size"], "batch-size", 100, 1, MAX_BATCH_SIZE);
  const batchWindowMs = intFlag(flags["batch-window-ms"], "batch-window-ms", 500, 0, 300_000);
  const topics = loadTopics(process.env);
  const stopping = untilSignal();

  let broker: EmbeddedKafka | undefined;
  let env: Record<string, string | undefined> = process.env;
  if (!process.env.KAFKA_BROKERS && !process.env.MSK_CLUSTER_ARN) {
    broker = new EmbeddedKafka({ log: (line) => console.error(line) });
    console.error("starting the embedded Kafka broker...");
    env = { ...process.env, KAFKA_BROKERS: await broker.start(), KAFKA_AUTH: "none" };
    console.error(`Kafka is up at ${broker.brokers} (log: ${broker.logFile})`);
  }
  const { kafka, brokers } = await connectKafka(loadConnectionConfig(env), "user-login-local");
  const created = await ensureTopics(kafka, [
    { topic: topics.source, numPartitions: partitions, configs: sizeConfigs("source") },
    { topic: topics.processed, numPartitions: partitions, configs: sizeConfigs("processed") },
    { topic: topics.deadLetter, numPartitions: 1, configs: sizeConfigs("deadLetter") },
  ]);
  if (created.length > 0) console.error(`created topics: ${created.join(", ")}`);

  const handler = await loadHandler();
  const harness = new MskEventSourceHarness({
    kafka,
    bootstrapServers: brokers.join(","),
    topic: topics.source,
    batchSize,
    batchWindowMs,
    invoke: handler.invoke,
  });
  await harness.start();

  const producer = producerSlot(kafka);
  const generatorStop = new AbortController();
  const model = new GeneratorModel({ invalidRatio });
  let generated = 0;
  const sink = kafkaSink(producer, topics.source);
  const generating = runGenerator({
    model,
    rate,
    signal: generatorStop.signal,
    sink: {
      async send(records) {
        await sink.send(records);
        generated += records.length;
      },
    },
  });
  console.error(
    `pipeline running: ${rate} events/s -> ${topics.source} -> processor -> ${topics.processed} | ${topics.deadLetter}. Ctrl-C stops.`,
  );
  const stopProgress = startProgress(harness.stats, () => generated);

  await Promise.race([stopping, generating]);
  generatorStop.abort();
  await generating.catch((error: unknown) => console.error(`generator stopped: ${(error as Error).message}`));
  await producer.close();
  stopProgress();
  console.error("stopping...");
  await harness.stop();
  await handler.close();
  await broker?.destroy();
  console.error(`generated ${generated} events`);
  console.error(summaryText(harness.stats));
});
