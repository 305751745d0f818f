/** The Kafka version pinned in kafka/pom.xml: one source of truth for the embedded broker, tests, Compose and CDK. */
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const POM = join(resolve(dirname(fileURLToPath(import.meta.url)), "../.."), "kafka", "pom.xml");

export function kafkaVersion(): string {
  const match = /<kafka\.version>([^<]+)<\/kafka\.version>/.exec(readFileSync(POM, "utf8"));
  if (!match?.[1]) throw new Error(`${POM} has no <kafka.version> property`);
  return match[1];
}
