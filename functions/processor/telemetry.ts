/**
 * What the handler tells CloudWatch about each batch: Embedded Metric Format metrics (Powertools Metrics, flushed once
 * per invocation by its middy middleware) and the correlation keys of its log lines. No record contents.
 */
import { type Metrics, MetricUnit } from "@aws-lambda-powertools/metrics";
import type { MskEvent } from "../core/msk.ts";
import type { BatchSummary } from "../core/process.ts";
import { ERROR_CODE_DIMENSION, METRIC } from "../shared/metrics.ts";

/** At most this many age samples per batch (EMF takes up to 100 values per metric). */
const AGE_SAMPLES = 100;

/** End-to-end ages (processing time minus each record's Kafka timestamp), evenly sampled. */
export function recordAges(event: MskEvent, nowMs: number): number[] {
  const timestamps: number[] = [];
  for (const group in event.records) for (const record of event.records[group] ?? []) timestamps.push(record.timestamp);
  const step = Math.max(1, timestamps.length / AGE_SAMPLES);
  const ages: number[] = [];
  for (let i = 0; i < timestamps.length && ages.length < AGE_SAMPLES; i += step) {
    ages.push(Math.max(0, nowMs - (timestamps[Math.floor(i)] as number)));
  }
  return ages;
}

/** Per partition: first and last offset of the batch, for log correlation. */
export function offsetRanges(event: MskEvent): Record<string, [number, number]> {
  const ranges: Record<string, [number, number]> = {};
  for (const [group, records] of Object.entries(event.records)) {
    const first = records[0];
    const last = records[records.length - 1];
    if (first && last) ranges[group] = [first.offset, last.offset];
  }
  return ranges;
}

export interface BatchTelemetry {
  readonly summary: BatchSummary;
  readonly durationMs: number;
  /** Records not written when producing failed. */
  readonly produceFailures: number;
  /** Records that cannot be written at all (over their topic's max.message.bytes): 0 or 1 per batch. */
  readonly unwritable: number;
  readonly agesMs: readonly number[];
}

export function addBatchMetrics(metrics: Metrics, batch: BatchTelemetry): void {
  metrics.addMetric(METRIC.recordsIn, MetricUnit.Count, batch.summary.in);
  metrics.addMetric(METRIC.processed, MetricUnit.Count, batch.summary.processed);
  metrics.addMetric(METRIC.deadLettered, MetricUnit.Count, batch.summary.deadLettered);
  metrics.addMetric(METRIC.produceFailures, MetricUnit.Count, batch.produceFailures);
  metrics.addMetric(METRIC.unwritable, MetricUnit.Count, batch.unwritable);
  metrics.addMetric(METRIC.batchDuration, MetricUnit.Milliseconds, batch.durationMs);
  for (const age of batch.agesMs) metrics.addMetric(METRIC.endToEndAge, MetricUnit.Milliseconds, age);
  for (const [code, count] of Object.entries(batch.summary.deadLetteredByCode)) {
    const single = metrics.singleMetric();
    single.addDimension(ERROR_CODE_DIMENSION, code);
    single.addMetric(METRIC.deadLettered, MetricUnit.Count, count);
  }
}
