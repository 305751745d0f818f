import type { TestProject } from "vitest/node";
import { EmbeddedKafka } from "../../functions/local/embedded-kafka.ts";
import { ESM_DEFAULTS } from "../../functions/shared/esm.ts";
import { createKafka } from "../../functions/shared/kafka.ts";
import { sizeConfigs } from "../../functions/shared/topic-settings.ts";
import { ensureTopics } from "../../functions/shared/topics.ts";

/**
 * The harness defaults to the deployed on-failure topic and checks it exists: the shared broker has it, so a test's
 * harness parks there unless it names its own (parked records name their source topic in esm-failure.topic).
 */
async function createFailureTopic(brokers: string): Promise<void> {
  const kafka = createKafka({ brokers: brokers.split(","), clientId: "test-setup" });
  await ensureTopics(kafka, [
    { topic: ESM_DEFAULTS.onFailureTopic, numPartitions: 1, configs: sizeConfigs("esmFailure") },
  ]);
}

declare module "vitest" {
  export interface ProvidedContext {
    kafkaBrokers: string;
  }
}

let broker: EmbeddedKafka | undefined;

export async function setup(project: TestProject): Promise<void> {
  if (process.env.KAFKA_BROKERS) {
    project.provide("kafkaBrokers", process.env.KAFKA_BROKERS);
    await createFailureTopic(process.env.KAFKA_BROKERS);
    return;
  }
  broker = new EmbeddedKafka({ log: (line) => console.error(line) });
  const brokers = await broker.start();
  await createFailureTopic(brokers);
  project.provide("kafkaBrokers", brokers);
}

export async function teardown(): Promise<void> {
  await broker?.destroy();
}
