/**
 * npm run console -- [flags]
 * The web console for any cluster the connection settings reach (the embedded broker, Compose, MSK): pipeline signals
 * derived from offsets, topics and their latest records, dead letters and (with --allow-redrive) redrive.
 */
import { offsetsSource } from "../functions/console/pipeline-metrics.ts";
import { ConsolePortInUseError, exposureWarning, startConsole } from "../functions/console/server.ts";
import { loadConnectionConfig, loadTopics } from "../functions/shared/config.ts";
import { connectKafka } from "../functions/shared/kafka.ts";
import { intFlag, parseFlags, runMain, UsageError, untilSignal } from "./cli.ts";

const USAGE = `usage: npm run console -- [flags]
  --brokers B          bootstrap servers (default: KAFKA_BROKERS, or MSK_CLUSTER_ARN discovery)
  --console-port N     port to serve on (default: 8080)
  --console-host H     address to bind (default: 127.0.0.1; anything else is reachable from other machines)
  --group G            the processor's consumer group (default: user-login-processor)
  --allow-redrive      allow redriving dead letters (default: read-only)
  --unmask             show personal data (ip, device_id, user_id) unmasked
Topics come from SOURCE_TOPIC, PROCESSED_TOPIC, DLQ_TOPIC (defaults: user-login, processed-user-login, user-login-dlq).`;

runMain(async () => {
  const flags = parseFlags(
    process.argv.slice(2),
    {
      brokers: { type: "string" },
      "console-port": { type: "string" },
      "console-host": { type: "string" },
      group: { type: "string" },
      "allow-redrive": { type: "boolean" },
      unmask: { type: "boolean" },
    },
    USAGE,
  );
  if (flags.help) return void console.log(USAGE);
  if (!flags.brokers && !process.env.KAFKA_BROKERS && !process.env.MSK_CLUSTER_ARN) {
    throw new UsageError(`--brokers is required (or set KAFKA_BROKERS)\n\n${USAGE}`);
  }
  const port = intFlag(flags["console-port"], "console-port", 8080, 1, 65535);
  const host = flags["console-host"] ?? "127.0.0.1";
  const stopping = untilSignal();
  const topics = loadTopics(process.env);
  const config = loadConnectionConfig({ ...process.env, ...(flags.brokers ? { KAFKA_BROKERS: flags.brokers } : {}) });
  const { kafka, brokers } = await connectKafka(config, "user-login-console");
  const groupId = flags.group ?? "user-login-processor";
  const server = await startConsole({
    kafka,
    topics,
    groupId,
    pipeline: offsetsSource({ kafka, topics, groupId }),
    host,
    port,
    allowRedrive: flags["allow-redrive"] === true,
    unmask: flags.unmask === true,
    cluster: brokers.join(","),
    log: (line) => console.error(line),
    logRequests: true,
  }).catch((error: unknown) => {
    if (error instanceof ConsolePortInUseError) {
      throw new UsageError(`${error.message}: choose another with --console-port N`);
    }
    throw error;
  });
  const warning = exposureWarning(host, flags["allow-redrive"] === true);
  if (warning) console.error(warning);
  console.error(
    `console for ${brokers.join(",")} at ${server.url} (${flags["allow-redrive"] ? "redrive allowed" : "read-only"}` +
      `${flags.unmask ? ", unmasked" : ""}). Ctrl-C stops.`,
  );
  await stopping;
  await server.close();
});
