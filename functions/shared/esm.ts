/**
 * Lambda's Kafka event source mapping (ESM): its limits, and the settings the CDK stack deploys it with. One module
 * for the stack (lib/pipeline-stack.ts) and the local harness (functions/local/harness.ts, bin/harness.ts, bin/start.ts),
 * so the harness checks the same ranges, defaults to what is deployed, and the stack test can assert the deployed values.
 *
 * Ranges from the Lambda Developer Guide, "Configuring error handling controls for Kafka event sources"
 * (kafka-retry-configurations.md): retry attempts 0..10,000 or -1 (infinite, the API default), maximum record age
 * 60..604,800 s or -1 (infinite); "When you configure both infinite retries and an on-failure destination, Lambda
 * automatically applies a maximum of 10 retry attempts" (kafka-on-failure-destination.md).
 */
import { ESM_FAILURE_TOPIC } from "./topic-settings.ts";

/** Lambda's largest batch size for a Kafka ESM (records per invocation). */
export const MAX_BATCH_SIZE = 10_000;
/** Lambda's longest batching window for a Kafka ESM: 300 s. */
export const MAX_BATCH_WINDOW_MS = 300_000;
/** Lambda's synchronous invocation payload limit: 6 MB. */
export const MAX_PAYLOAD_BYTES = 6 * 1024 * 1024;
/** MaximumRetryAttempts: -1 (infinite) or 0..10,000. */
export const MAX_RETRY_ATTEMPTS = 10_000;
/** MaximumRecordAgeInSeconds: -1 (infinite) or 60..604,800 (7 days). */
export const MIN_RECORD_AGE_SECONDS = 60;
export const MAX_RECORD_AGE_SECONDS = 604_800;
/** Retries Lambda applies when retries are infinite (-1) and an on-failure destination is set. */
export const RETRIES_WITH_DESTINATION = 10;
/**
 * The shortest processor timeout the stack accepts: the processor starts no produce request in the last 35 s of an
 * invocation (SEND_RESERVE_MS, functions/processor/processor.ts), so it needs more than that to write anything.
 */
export const MIN_PROCESSOR_TIMEOUT_SECONDS = 60;
/** Lambda's longest function timeout: 900 s. */
export const MAX_FUNCTION_TIMEOUT_SECONDS = 900;

/** What the stack deploys the processor's ESM with (each overridable through its `processor` props). */
export const ESM_DEFAULTS = {
  /** Records per invocation. */
  batchSize: 100,
  /** Longest wait to fill a batch. */
  batchingWindowMs: 1_000,
  /** Retries of a failed batch before its records go to the on-failure topic. */
  retryAttempts: 10,
  /** Records older than this are sent to the on-failure topic unprocessed: 1 day. */
  maxRecordAgeSeconds: 86_400,
  /** Split a failed batch in two and retry each half. */
  bisectBatchOnError: true,
  /** Honour partial batch responses (batchItemFailures). */
  reportBatchItemFailures: true,
  /** The on-failure destination, `kafka://<topic>` on the same cluster. */
  onFailureTopic: ESM_FAILURE_TOPIC,
  /** The processor function's timeout, which an invocation the ESM makes may not outlive. */
  functionTimeoutSeconds: 120,
} as const;
