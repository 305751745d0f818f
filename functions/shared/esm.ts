/**
 * Lambda's Kafka event source mapping (ESM): its limits, and the settings the CDK stack deploys it with. One module
 * for the stack (lib/pipeline-stack.ts) and the local harness (functions/local/harness.ts, bin/harness.ts), so the
 * harness checks the same ranges and the stack test can assert the deployed values.
 */
import { ESM_FAILURE_TOPIC } from "./topic-settings.ts";

/** Lambda's largest batch size for a Kafka ESM (records per invocation). */
export const MAX_BATCH_SIZE = 10_000;
/** Lambda's longest batching window for a Kafka ESM: 300 s. */
export const MAX_BATCH_WINDOW_MS = 300_000;
/** Lambda's synchronous invocation payload limit: 6 MB. */
export const MAX_PAYLOAD_BYTES = 6 * 1024 * 1024;

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
} as const;
