/**
 * The Pipeline page's signals, named as the CloudWatch dashboard names them (functions/shared/metrics.ts and the
 * Lambda metrics lib/monitoring.ts reads), so what a user learns locally reads the same in AWS.
 *
 * Two sources: the in-process harness's live stats (`npm start`), or, for a cluster the console only reads (`npm run
 * console`), what its offsets say: records in from the processor group's committed offsets, processed and
 * dead-lettered from the end offsets of their topics, dead letters by code from a tail of the DLQ's headers.
 * End-to-end age, invocations and errors are known only in-process (on AWS: EndToEndAge and the function's metrics).
 */
import { randomUUID } from "node:crypto";
import type { Admin, Consumer, Kafka } from "kafkajs";
import { HEADER } from "../core/process.ts";
import type { HarnessStats } from "../local/harness.ts";
import { percentile } from "../local/progress.ts";
import { METRIC } from "../shared/metrics.ts";

/** One sample: totals so far; the page turns consecutive samples into rates per second. */
export interface PipelineSample {
  /** Epoch ms. */
  t: number;
  [METRIC.recordsIn]: number;
  [METRIC.processed]: number;
  [METRIC.deadLettered]: number;
  /** RecordsDeadLettered by its ErrorCode dimension. */
  byErrorCode: Record<string, number>;
  /** Lambda's OffsetLag of the event source mapping: the group's lag, in total and per partition. */
  OffsetLag: number;
  offsetLagByPartition: Record<string, number>;
  /** EndToEndAge percentiles over the recent records (ms); null where unknown. */
  endToEndAgeP50: number | null;
  endToEndAgeP99: number | null;
  /** Lambda's Invocations and Errors; null where unknown (a cluster the console only reads). */
  Invocations: number | null;
  Errors: number | null;
  /** Records parked on the event source mapping's on-failure topic (the ESM's metric); null where unknown. */
  OnFailureDestinationDeliveredEventCount: number | null;
  /** Events generated (npm start only). */
  generated: number | null;
}

export interface PipelineSource {
  /** "harness": live stats of the in-process event source mapping; "offsets": derived from the cluster's offsets. */
  readonly kind: "harness" | "offsets";
  sample(): Promise<PipelineSample>;
  close(): Promise<void>;
}

export function harnessSource(stats: HarnessStats, generated?: () => number): PipelineSource {
  return {
    kind: "harness",
    async sample() {
      const lagByPartition: Record<string, number> = {};
      for (const [id, lag] of Object.entries(stats.lagByPartition)) {
        lagByPartition[id.slice(id.lastIndexOf("-") + 1)] = lag;
      }
      return {
        t: Date.now(),
        [METRIC.recordsIn]: stats.recordsCommitted,
        [METRIC.processed]: stats.processed,
        [METRIC.deadLettered]: stats.deadLettered,
        byErrorCode: { ...stats.deadLetteredByCode },
        OffsetLag: stats.lag,
        offsetLagByPartition: lagByPartition,
        endToEndAgeP50: percentile(stats.recentAgesMs, 50) ?? null,
        endToEndAgeP99: percentile(stats.recentAgesMs, 99) ?? null,
        Invocations: stats.invocations,
        Errors: stats.failedInvocations,
        OnFailureDestinationDeliveredEventCount: stats.parked,
        generated: generated ? generated() : null,
      };
    },
    async close() {},
  };
}

export interface OffsetsSourceOptions {
  readonly kafka: Kafka;
  readonly topics: { readonly source: string; readonly processed: string; readonly deadLetter: string };
  /** The event source mapping's consumer group. */
  readonly groupId: string;
}

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

/**
 * Signals from a cluster's offsets. Dead letters by code come from a consumer that reads the DLQ from its beginning
 * in a throw-away group that never commits (so it shows in no lag) and keeps only the error.code header.
 */
export function offsetsSource(options: OffsetsSourceOptions): PipelineSource {
  const { kafka, topics, groupId } = options;
  const byErrorCode: Record<string, number> = {};
  let admin: Admin | undefined;
  let tail: Consumer | undefined;
  let starting: Promise<void> | undefined;
  const tailGroup = `console-dlq-codes-${randomUUID()}`;
  const start = async () => {
    admin = kafka.admin();
    await admin.connect();
    tail = kafka.consumer({ groupId: tailGroup, maxWaitTimeInMs: 500 });
    await tail.connect();
    await tail.subscribe({ topic: topics.deadLetter, fromBeginning: true });
    await tail.run({
      autoCommit: false,
      eachMessage: async ({ message }) => {
        const value = message.headers?.[HEADER.errorCode];
        const last = Array.isArray(value) ? value[value.length - 1] : value;
        const code = last === undefined || last === null ? "(none)" : last.toString();
        byErrorCode[code] = (byErrorCode[code] ?? 0) + 1;
      },
    });
  };
  const endOffsets = async (topic: string) => (await admin?.fetchTopicOffsets(topic)) ?? [];
  return {
    kind: "offsets",
    async sample() {
      // A failed start (the broker away, the DLQ not created yet) is tried again at the next sample.
      starting ??= start().catch(async (error: unknown) => {
        await tail?.disconnect().catch(() => {});
        await admin?.disconnect().catch(() => {});
        tail = undefined;
        admin = undefined;
        starting = undefined;
        throw error;
      });
      await starting;
      const [sourceEnds, processedEnds, dlqEnds, committed] = await Promise.all([
        endOffsets(topics.source),
        endOffsets(topics.processed),
        endOffsets(topics.deadLetter),
        admin?.fetchOffsets({ groupId, topics: [topics.source] }),
      ]);
      const positions = committed?.[0]?.partitions ?? [];
      const lagByPartition: Record<string, number> = {};
      let recordsIn = 0;
      for (const end of sourceEnds) {
        const at = Number(positions.find((p) => p.partition === end.partition)?.offset ?? -1);
        const from = Math.max(at, Number(end.low));
        lagByPartition[String(end.partition)] = Number(end.high) - from;
        if (at >= 0) recordsIn += at - Number(end.low);
      }
      return {
        t: Date.now(),
        [METRIC.recordsIn]: recordsIn,
        [METRIC.processed]: sum(processedEnds.map((p) => Number(p.high) - Number(p.low))),
        [METRIC.deadLettered]: sum(dlqEnds.map((p) => Number(p.high) - Number(p.low))),
        byErrorCode: { ...byErrorCode },
        OffsetLag: sum(Object.values(lagByPartition)),
        offsetLagByPartition: lagByPartition,
        endToEndAgeP50: null,
        endToEndAgeP99: null,
        Invocations: null,
        Errors: null,
        OnFailureDestinationDeliveredEventCount: null,
        generated: null,
      };
    },
    async close() {
      await starting?.catch(() => {});
      await tail?.disconnect().catch(() => {});
      await admin?.deleteGroups([tailGroup]).catch(() => {});
      await admin?.disconnect().catch(() => {});
    },
  };
}
