/**
 * The generator as a program: the `npm run generate` CLI and the ECS task's entry point.
 */
import type { Kafka } from "kafkajs";
import { loadConnectionConfig } from "../shared/config.ts";
import { connectKafka, createProducer, ProducerSlot } from "../shared/kafka.ts";
import { onShutdownSignals } from "../shared/signals.ts";
import { GENERATOR_USAGE, type GeneratorConfig, loadGeneratorConfig } from "./config.ts";
import { GeneratorModel } from "./model.ts";
import { dryRunSink, type RecordSink, type RunSummary, runGenerator, sleep } from "./run.ts";

/** The generator's producer (acks=all, no retries of its own: see createProducer), replaced after a failed send. */
export function producerSlot(kafka: Kafka): ProducerSlot {
  return new ProducerSlot(async () => {
    const producer = createProducer(kafka);
    await producer.connect();
    return producer;
  });
}

/** Sends each batch in one request through the slot: a failed send retires its producer, the retry gets a new one. */
export function kafkaSink(slot: Pick<ProducerSlot, "run">, topic: string): RecordSink {
  return {
    async send(records) {
      await slot.run((producer) =>
        producer.send({
          topic,
          acks: -1,
          messages: records.map((record) => ({ key: record.key, value: record.value })),
        }),
      );
    },
  };
}

/** Connects, retrying with backoff (up to 10 s apart) while the broker is unreachable, until connected or aborted. */
export async function connectWithRetry(
  slot: Pick<ProducerSlot, "run">,
  signal: AbortSignal,
  log: (line: string) => void,
): Promise<boolean> {
  let delay = 500;
  for (let attempt = 1; !signal.aborted; attempt++) {
    try {
      await slot.run(async () => {});
      return true;
    } catch (error) {
      log(`broker not reachable yet (attempt ${attempt}: ${(error as Error).message}); retrying in ${delay} ms`);
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 10_000);
    }
  }
  return false;
}

export function summaryLine(summary: RunSummary): string {
  const kinds = Object.entries(summary.byKind)
    .map(([kind, n]) => `${kind}=${n}`)
    .join(" ");
  return `generator summary: sent ${summary.sent}, failed ${summary.failed}, ${summary.rate}/s over ${(summary.elapsedMs / 1000).toFixed(1)} s; by kind: ${kinds || "none"}`;
}

/** Runs the generator until its count or duration is reached or the signal aborts; returns the summary. */
export async function generate(
  config: GeneratorConfig,
  signal: AbortSignal,
  log: (line: string) => void,
  env: Readonly<Record<string, string | undefined>> = process.env,
): Promise<RunSummary> {
  const model = new GeneratorModel({
    seed: config.seed,
    missingDeviceTypeRatio: config.missingDeviceTypeRatio,
    invalidRatio: config.invalidRatio,
    users: config.users,
  });
  const run = (sink: RecordSink) =>
    runGenerator({ model, sink, rate: config.rate, count: config.count, durationMs: config.durationMs, signal, log });
  if (config.dryRun) return run(dryRunSink((text) => process.stdout.write(text)));

  const connection = loadConnectionConfig({
    ...env,
    ...(config.brokers ? { KAFKA_BROKERS: config.brokers.join(",") } : {}),
  });
  const { kafka, brokers } = await connectKafka(connection, "user-login-generator");
  const slot = producerSlot(kafka);
  log(`generator: seed ${model.seed}, ${config.rate} events/s to ${config.topic} on ${brokers.join(",")}`);
  if (!(await connectWithRetry(slot, signal, log))) return { sent: 0, failed: 0, byKind: {}, elapsedMs: 0, rate: 0 };
  try {
    return await run(kafkaSink(slot, config.topic));
  } finally {
    await slot.close();
  }
}

/** CLI and container entry: flags and environment in, summary on stderr; SIGINT/SIGTERM stop it cleanly. */
export async function main(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): Promise<void> {
  const config = loadGeneratorConfig(argv, env);
  if (config.help) {
    process.stdout.write(`${GENERATOR_USAGE}\n`);
    return;
  }
  const stop = new AbortController();
  const log = (line: string) => process.stderr.write(`${line}\n`);
  // The first signal flushes and stops; repeated ones (one Ctrl-C arrives more than once under npm and tsx) do not
  // interrupt that, until one comes 5 s after the first. The handlers stay: a late signal must not cut the exit short.
  onShutdownSignals({
    log,
    onSignal: (signal) => {
      log(`${signal}: flushing and stopping (again after 5 s to force)`);
      stop.abort();
    },
  });
  const summary = await generate(config, stop.signal, log, env);
  log(summaryLine(summary));
}
