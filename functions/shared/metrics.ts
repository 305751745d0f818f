/**
 * CloudWatch metric names the processor emits (Embedded Metric Format) and the CDK alarms and dashboard read.
 * One source of truth: both sides import these.
 */
export const METRICS_NAMESPACE = "UserLoginPipeline";
export const METRICS_SERVICE = "user-login-processor";

export const METRIC = {
  recordsIn: "RecordsIn",
  processed: "RecordsProcessed",
  deadLettered: "RecordsDeadLettered",
  produceFailures: "ProduceFailures",
  /** A record over its topic's max.message.bytes: the batch cannot pass it (a misconfigured cluster). */
  unwritable: "UnwritableRecords",
  batchDuration: "BatchDuration",
  endToEndAge: "EndToEndAge",
} as const;

/** Dimension of the per-code dead-letter count. */
export const ERROR_CODE_DIMENSION = "ErrorCode";
/** Dimension every metric carries. */
export const SERVICE_DIMENSION = "service";
