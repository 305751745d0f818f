/**
 * npm run topics -- --brokers B
 * Lists topics with partitions and end offsets, and every consumer group's lag on them.
 */
import { overviewText, topicOverview } from "../functions/local/topic-overview.ts";
import { loadConnectionConfig, loadTopics } from "../functions/shared/config.ts";
import { ESM_DEFAULTS } from "../functions/shared/esm.ts";
import { connectKafka } from "../functions/shared/kafka.ts";
import { pipelineTopicSpecs } from "../functions/shared/topic-settings.ts";
import { ensureTopics } from "../functions/shared/topics.ts";
import { intFlag, parseFlags, runMain, UsageError } from "./cli.ts";

const USAGE = `usage: npm run topics -- --brokers B [--json] [--create [--partitions N]]
  --brokers B      bootstrap servers (default: KAFKA_BROKERS; KAFKA_AUTH etc. as everywhere)
  --json           print JSON instead of text
  --create         first create the pipeline's topics (SOURCE_TOPIC, PROCESSED_TOPIC, DLQ_TOPIC and the event source
                   mapping's on-failure topic ${ESM_DEFAULTS.onFailureTopic}) if missing, with the stack's
                   max.message.bytes (the DLQ's and failure topic's twice the others', so any dead letter fits)
  --partitions N   with --create: partitions of the source and processed topics (default 3; DLQ and failure topic 1)`;

runMain(async () => {
  const flags = parseFlags(
    process.argv.slice(2),
    {
      brokers: { type: "string" },
      json: { type: "boolean" },
      create: { type: "boolean" },
      partitions: { type: "string" },
    },
    USAGE,
  );
  if (flags.help) return void console.log(USAGE);
  if (!flags.brokers && !process.env.KAFKA_BROKERS && !process.env.MSK_CLUSTER_ARN) {
    throw new UsageError(`--brokers is required (or set KAFKA_BROKERS)\n\n${USAGE}`);
  }
  const config = loadConnectionConfig({ ...process.env, ...(flags.brokers ? { KAFKA_BROKERS: flags.brokers } : {}) });
  const { kafka } = await connectKafka(config, "user-login-topics");
  if (flags.create) {
    const topics = loadTopics(process.env);
    const partitions = intFlag(flags.partitions, "partitions", 3, 1, 1000);
    const created = await ensureTopics(kafka, pipelineTopicSpecs(topics, partitions, ESM_DEFAULTS.onFailureTopic));
    console.error(created.length ? `created topics: ${created.join(", ")}` : "topics already exist");
  }
  const overview = await topicOverview(kafka);
  console.log(flags.json ? JSON.stringify(overview, null, 2) : overviewText(overview));
});
