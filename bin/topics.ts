/**
 * npm run topics -- --brokers B
 * Lists topics with partitions and end offsets, and every consumer group's lag on them.
 */
import { overviewText, topicOverview } from "../functions/local/topic-overview.ts";
import { loadConnectionConfig } from "../functions/shared/config.ts";
import { connectKafka } from "../functions/shared/kafka.ts";
import { parseFlags, runMain, UsageError } from "./cli.ts";

const USAGE = `usage: npm run topics -- --brokers B [--json]
  --brokers B   bootstrap servers (default: KAFKA_BROKERS; KAFKA_AUTH etc. as everywhere)
  --json        print JSON instead of text`;

runMain(async () => {
  const flags = parseFlags(process.argv.slice(2), { brokers: { type: "string" }, json: { type: "boolean" } }, USAGE);
  if (flags.help) return void console.log(USAGE);
  if (!flags.brokers && !process.env.KAFKA_BROKERS && !process.env.MSK_CLUSTER_ARN) {
    throw new UsageError(`--brokers is required (or set KAFKA_BROKERS)\n\n${USAGE}`);
  }
  const config = loadConnectionConfig({ ...process.env, ...(flags.brokers ? { KAFKA_BROKERS: flags.brokers } : {}) });
  const { kafka } = await connectKafka(config, "user-login-topics");
  const overview = await topicOverview(kafka);
  console.log(flags.json ? JSON.stringify(overview, null, 2) : overviewText(overview));
});
