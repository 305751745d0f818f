import type { TestProject } from "vitest/node";
import { EmbeddedKafka } from "../../functions/local/embedded-kafka.ts";

declare module "vitest" {
  export interface ProvidedContext {
    kafkaBrokers: string;
  }
}

let broker: EmbeddedKafka | undefined;

export async function setup(project: TestProject): Promise<void> {
  if (process.env.KAFKA_BROKERS) {
    project.provide("kafkaBrokers", process.env.KAFKA_BROKERS);
    return;
  }
  broker = new EmbeddedKafka({ log: (line) => console.error(line) });
  project.provide("kafkaBrokers", await broker.start());
}

export async function teardown(): Promise<void> {
  await broker?.destroy();
}
