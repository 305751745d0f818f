/**
 * The pipeline's topics and the record-size limits they are created with. One source for the CDK stack
 * (AWS::MSK::Topic and the Serverless topic setup), `npm run topics -- --create`, `npm start`, Compose and the
 * processor's configuration, so the limits the processor sizes its produce requests by are the topics' own.
 *
 * Kafka checks `max.message.bytes` against each record batch, i.e. everything one produce request carries for one
 * partition (KIP-98 record format v2; `LogValidator` raises RecordTooLargeException per batch).
 */
import { DEAD_LETTER_MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TOPICS } from "./config.ts";

/**
 * DEFAULT_MAX_MESSAGE_BYTES: Kafka's own default `max.message.bytes` (1 MiB plus 12 bytes of log overhead), for the
 * source and processed topics. DEAD_LETTER_MAX_MESSAGE_BYTES: twice that, for the dead-letter and ESM-failure
 * topics: a dead letter is a source record (at most the source topic's limit) plus this pipeline's headers
 * (`error.message` is at most 1,000 characters), so it fits uncompressed. Two cases can still outgrow it: a source
 * batch that was compressed (the broker checks the compressed size) and header names that are not UTF-8 (decoded with
 * U+FFFD, up to 3 bytes each); the sender then sends that dead letter alone, gzip-compressed (sender.ts).
 */
export { DEAD_LETTER_MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGE_BYTES };

/** The topic Lambda's event source mapping parks records on after its retries (on-failure destination). */
export const ESM_FAILURE_TOPIC = "user-login-esm-failures";

/** Topic configs a role's topic is created with (besides retention and replication, which the stack sets). */
export function sizeConfigs(role: "source" | "processed" | "deadLetter" | "esmFailure"): Record<string, string> {
  const bytes =
    role === "deadLetter" || role === "esmFailure" ? DEAD_LETTER_MAX_MESSAGE_BYTES : DEFAULT_MAX_MESSAGE_BYTES;
  return { "max.message.bytes": String(bytes) };
}

export { DEFAULT_TOPICS };

/**
 * The topics a local pipeline needs, with their limits: source and processed with `partitions`, the DLQ and the ESM's
 * on-failure topic (unless null) with one partition. For `npm start`, `npm run topics -- --create`, soak and tests.
 */
export function pipelineTopicSpecs(
  topics: { readonly source: string; readonly processed: string; readonly deadLetter: string },
  partitions: number,
  esmFailures: string | null = ESM_FAILURE_TOPIC,
): { topic: string; numPartitions: number; configs: Record<string, string> }[] {
  return [
    { topic: topics.source, numPartitions: partitions, configs: sizeConfigs("source") },
    { topic: topics.processed, numPartitions: partitions, configs: sizeConfigs("processed") },
    { topic: topics.deadLetter, numPartitions: 1, configs: sizeConfigs("deadLetter") },
    ...(esmFailures ? [{ topic: esmFailures, numPartitions: 1, configs: sizeConfigs("esmFailure") }] : []),
  ];
}
