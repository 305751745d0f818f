/**
 * npm run kafka [-- --port N] [--data-dir DIR]
 * Starts the embedded Apache Kafka broker in the foreground; prints KAFKA_BROKERS=127.0.0.1:PORT when it accepts
 * connections; SIGINT/SIGTERM stop it cleanly, and repeated ones do not interrupt that (again after 5 s forces the exit,
 * which still kills the broker and removes a temporary data folder).
 */
import { EmbeddedKafka, ensureKafkaJars } from "../functions/local/embedded-kafka.ts";
import { intFlag, parseFlags, runMain, untilSignal } from "./cli.ts";

const USAGE = `usage: npm run kafka -- [--port N] [--data-dir DIR] [--prepare]
  --port N        client port on 127.0.0.1 (default: a free port)
  --data-dir DIR  keep data and logs here across runs (default: a temporary folder, removed on exit)
  --prepare       only resolve the Kafka jars into .cache/kafka (with Maven), then exit`;

runMain(async () => {
  const flags = parseFlags(
    process.argv.slice(2),
    { port: { type: "string" }, "data-dir": { type: "string" }, prepare: { type: "boolean" } },
    USAGE,
  );
  if (flags.help) return void console.log(USAGE);
  if (flags.prepare) return void console.log(`Kafka jars ready in ${ensureKafkaJars((line) => console.error(line))}`);
  const port = flags.port === undefined ? undefined : intFlag(flags.port, "port", 0, 1024, 65535);
  const kafka = new EmbeddedKafka({ port, dataDir: flags["data-dir"], log: (line) => console.error(line) });
  const stopping = untilSignal();
  await kafka.start();
  console.log(`KAFKA_BROKERS=${kafka.brokers}`);
  console.error(`Kafka is running (log: ${kafka.logFile}). Ctrl-C stops it.`);
  await stopping;
  await kafka.destroy();
  console.error("Kafka stopped.");
});
