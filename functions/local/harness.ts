/**
 * A local emulator of Lambda's Amazon MSK event source mapping (ESM): a consumer group polls the source topic,
 * builds batches of up to `batchSize` records or 6 MB (records of several partitions may share a batch), waiting at
 * most `batchWindowMs`; builds the exact event Lambda sends; invokes the handler in-process; commits offsets only
 * after success, and retries a failed batch, from the first failed offset of each partition named in a partial
 * batch response, or whole when the handler throws. Each partition is processed in order, one batch at a time.
 */
import type { Admin, Consumer, EachBatchPayload, Kafka } from "kafkajs";
import type { MskEvent, MskRecord } from "../core/msk.ts";
import { MAX_BATCH_SIZE, MAX_BATCH_WINDOW_MS, MAX_PAYLOAD_BYTES } from "../shared/esm.ts";
import { buildMskEvent, mskRecordBytes, toMskRecord } from "./msk-event.ts";

export type StartingPosition = "TRIM_HORIZON" | "LATEST" | "AT_TIMESTAMP";

/** Lambda's limits for the Kafka ESM (functions/shared/esm.ts), re-exported for existing callers. */
export { MAX_BATCH_SIZE, MAX_BATCH_WINDOW_MS, MAX_PAYLOAD_BYTES };

export interface HarnessOptions {
  readonly kafka: Kafka;
  /** Written into each event, as Lambda does. */
  readonly bootstrapServers: string;
  readonly topic: string;
  /** @default "user-login-processor" */
  readonly groupId?: string;
  /** 1 to 10,000. @default 100 */
  readonly batchSize?: number;
  /** 0 to 300,000. @default 500 */
  readonly batchWindowMs?: number;
  /** @default 6 MB, Lambda's invocation payload limit */
  readonly maxBatchBytes?: number;
  /** Where a group without committed offsets starts. @default "TRIM_HORIZON" */
  readonly startingPosition?: StartingPosition;
  /** Epoch milliseconds, with AT_TIMESTAMP. */
  readonly startingTimestamp?: number;
  /** @default "arn:aws:kafka:local:000000000000:cluster/embedded/local" */
  readonly eventSourceArn?: string;
  /** First delay before a failed batch is retried, doubled per attempt. @default 500 */
  readonly retryBackoffMs?: number;
  /** @default 10000 */
  readonly maxRetryBackoffMs?: number;
  /** How long the group waits for a member that stopped answering (6000..300000). @default 30000 */
  readonly sessionTimeoutMs?: number;
  /** The function: gets the event, returns its response or throws. */
  readonly invoke: (event: MskEvent) => Promise<unknown>;
}

export interface HarnessStats {
  invocations: number;
  failedInvocations: number;
  /** Records delivered to the function, redeliveries included. */
  recordsDelivered: number;
  /** Records whose offsets were committed. */
  recordsCommitted: number;
  /** From the handler's summaries, when it returns one. */
  processed: number;
  deadLettered: number;
  deadLetteredByCode: Record<string, number>;
  /** Sum over partitions of (high watermark - committed offset), as last seen. */
  lag: number;
  lagByPartition: Record<string, number>;
  /** End-to-end ages (invocation time minus Kafka timestamp) of recently delivered records, newest last. */
  recentAgesMs: number[];
}

/** How many recent ages the stats keep for percentiles. */
const AGE_WINDOW = 2000;

export class HarnessOptionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HarnessOptionError";
  }
}

function checkRange(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new HarnessOptionError(`${name} must be a whole number from ${min} to ${max}, got ${value}`);
  }
  return value;
}

/** What happened to one partition's share of a batch. */
type Outcome = { ok: true } | { ok: false; failedOffset: number; error: string };

interface Share {
  readonly id: string;
  readonly records: MskRecord[];
  readonly settle: (outcome: Outcome) => void;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Reads Lambda's Kafka partial batch response: partition id -> first failed offset. */
function failedOffsets(response: unknown): Map<string, number> | "invalid" {
  const failures = new Map<string, number>();
  if (response === null || typeof response !== "object" || !("batchItemFailures" in response)) return failures;
  const items = (response as { batchItemFailures: unknown }).batchItemFailures;
  if (items == null) return failures;
  if (!Array.isArray(items)) return "invalid";
  for (const item of items) {
    const id = item?.itemIdentifier;
    if (typeof id?.partition !== "string" || !Number.isInteger(Number(id?.offset))) return "invalid";
    const offset = Number(id.offset);
    const known = failures.get(id.partition);
    if (known === undefined || offset < known) failures.set(id.partition, offset);
  }
  return failures;
}

export class MskEventSourceHarness {
  readonly stats: HarnessStats = {
    invocations: 0,
    failedInvocations: 0,
    recordsDelivered: 0,
    recordsCommitted: 0,
    processed: 0,
    deadLettered: 0,
    deadLetteredByCode: {},
    lag: 0,
    lagByPartition: {},
    recentAgesMs: [],
  };
  private readonly groupId: string;
  private readonly batchSize: number;
  private readonly batchWindowMs: number;
  private readonly maxBatchBytes: number;
  private consumer: Consumer | undefined;
  private open: Share[] = [];
  private openCount = 0;
  private openBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private invocations: Promise<void> = Promise.resolve();
  private readonly attempts = new Map<string, number>();
  private readonly highWatermarks = new Map<string, number>();
  private readonly committed = new Map<string, number>();

  constructor(private readonly options: HarnessOptions) {
    this.groupId = options.groupId ?? "user-login-processor";
    this.batchSize = checkRange("batch size", options.batchSize ?? 100, 1, MAX_BATCH_SIZE);
    this.batchWindowMs = checkRange("batch window (ms)", options.batchWindowMs ?? 500, 0, MAX_BATCH_WINDOW_MS);
    // The envelope and the "topic-partition" keys take a few hundred bytes of the payload limit.
    this.maxBatchBytes = (options.maxBatchBytes ?? MAX_PAYLOAD_BYTES) - 4096;
    if (options.startingPosition === "AT_TIMESTAMP" && options.startingTimestamp === undefined) {
      throw new HarnessOptionError("starting position AT_TIMESTAMP needs a starting timestamp");
    }
  }

  /** Joins the consumer group and starts polling; resolves once the first fetch has returned. */
  async start(): Promise<void> {
    const { kafka, topic } = this.options;
    const position = this.options.startingPosition ?? "TRIM_HORIZON";
    const admin = kafka.admin();
    await admin.connect();
    try {
      if (!(await admin.listTopics()).includes(topic)) {
        throw new HarnessOptionError(`topic "${topic}" does not exist on ${this.options.bootstrapServers}`);
      }
      if (position === "AT_TIMESTAMP") await this.seekToTimestamp(admin);
    } finally {
      await admin.disconnect();
    }
    const consumer = kafka.consumer({
      groupId: this.groupId,
      sessionTimeout: this.options.sessionTimeoutMs ?? 30_000,
      maxWaitTimeInMs: Math.max(10, Math.min(this.batchWindowMs, 5000)),
      // Enough per fetch to fill a 6 MB event: a batch never waits on a second fetch (each fetch's shares are in flight).
      maxBytesPerPartition: this.maxBatchBytes,
      maxBytes: 2 * this.maxBatchBytes,
    });
    this.consumer = consumer;
    // Ready once the group is joined and a first fetch came back: positions (e.g. LATEST) are resolved by then.
    const firstFetch = new Promise<void>((resolve) => {
      const remove = consumer.on(consumer.events.FETCH, () => {
        remove();
        resolve();
      });
    });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: position !== "LATEST" });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 64,
      eachBatch: (payload) => this.eachBatch(payload),
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new HarnessOptionError(`no fetch from "${topic}" within 60 s`)), 60_000);
    });
    await Promise.race([firstFetch, timeout]).finally(() => clearTimeout(timer));
  }

  /** Finishes the batch in flight, commits what succeeded and leaves the group. */
  async stop(): Promise<void> {
    const consumer = this.consumer;
    this.consumer = undefined;
    if (!consumer) return;
    const stopping = consumer.stop();
    this.closeOpenBatch();
    await stopping;
    await this.invocations;
    await consumer.disconnect();
  }

  private async seekToTimestamp(admin: Admin): Promise<void> {
    const { topic } = this.options;
    const committed = await admin.fetchOffsets({ groupId: this.groupId, topics: [topic] });
    const hasOffsets = committed.some((t) => t.partitions.some((p) => p.offset !== "-1"));
    if (hasOffsets) return;
    const offsets = await admin.fetchTopicOffsetsByTimestamp(topic, this.options.startingTimestamp);
    await admin.setOffsets({ groupId: this.groupId, topic, partitions: offsets });
  }

  private async eachBatch(payload: EachBatchPayload): Promise<void> {
    const { batch, resolveOffset, heartbeat, isRunning, isStale } = payload;
    // Commits through the batch's own handle, which also works while the consumer is stopping.
    const commit = async (nextOffset: number, count: number) => {
      resolveOffset(String(nextOffset - 1));
      await payload.commitOffsetsIfNecessary({
        topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: String(nextOffset) }] }],
      });
      this.committed.set(id, nextOffset);
      this.stats.recordsCommitted += count;
      this.updateLag();
    };
    const { topic, partition } = batch;
    const id = `${topic}-${partition}`;
    this.highWatermarks.set(id, Number(batch.highWatermark));
    this.updateLag();
    const records = batch.messages.map((message) => toMskRecord(topic, partition, message));
    let next = 0;
    while (next < records.length && isRunning() && !isStale()) {
      const { accepted, outcome } = this.submit(id, records.slice(next));
      const beat = setInterval(() => void heartbeat().catch(() => {}), 3000);
      const result = await outcome.finally(() => clearInterval(beat));
      const first = records[next] as MskRecord;
      const last = records[next + accepted - 1] as MskRecord;
      if (result.ok) {
        await commit(last.offset + 1, accepted);
        this.attempts.delete(id);
        next += accepted;
        continue;
      }
      // Commit what succeeded before the failed offset, then let the consumer fetch again from there after a pause.
      const failed = Math.min(Math.max(result.failedOffset, first.offset), last.offset + 1);
      if (failed > first.offset) {
        await commit(failed, failed - first.offset);
      }
      if (failed > last.offset) {
        next += accepted;
        continue;
      }
      const attempt = (this.attempts.get(id) ?? 0) + 1;
      this.attempts.set(id, attempt);
      const base = this.options.retryBackoffMs ?? 500;
      const delay = Math.min(base * 2 ** (attempt - 1), this.options.maxRetryBackoffMs ?? 10_000);
      for (let waited = 0; waited < delay && isRunning(); waited += 250) await sleep(Math.min(250, delay - waited));
      await heartbeat().catch(() => {});
      return;
    }
  }

  private updateLag(): void {
    let total = 0;
    for (const [id, high] of this.highWatermarks) {
      const lag = Math.max(0, high - (this.committed.get(id) ?? 0));
      this.stats.lagByPartition[id] = lag;
      total += lag;
    }
    this.stats.lag = total;
  }

  /** Adds as many of `records` as fit to the open batch (at least one); resolves when that batch has run. */
  private submit(id: string, records: MskRecord[]): { accepted: number; outcome: Promise<Outcome> } {
    const firstBytes = mskRecordBytes(records[0] as MskRecord);
    if (this.openCount >= this.batchSize || (this.openCount > 0 && this.openBytes + firstBytes > this.maxBatchBytes)) {
      this.closeOpenBatch();
    }
    let accepted = 0;
    let bytes = 0;
    while (accepted < records.length && this.openCount + accepted < this.batchSize) {
      const size = mskRecordBytes(records[accepted] as MskRecord);
      if (this.openCount + accepted > 0 && this.openBytes + bytes + size > this.maxBatchBytes) break;
      bytes += size;
      accepted++;
    }
    let settle: (outcome: Outcome) => void = () => {};
    const outcome = new Promise<Outcome>((resolve) => {
      settle = resolve;
    });
    this.open.push({ id, records: records.slice(0, accepted), settle });
    this.openCount += accepted;
    this.openBytes += bytes;
    if (this.openCount >= this.batchSize || this.openBytes >= this.maxBatchBytes || this.batchWindowMs === 0) {
      this.closeOpenBatch();
    } else {
      this.timer ??= setTimeout(() => this.closeOpenBatch(), this.batchWindowMs);
    }
    return { accepted, outcome };
  }

  private closeOpenBatch(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const shares = this.open;
    this.open = [];
    this.openCount = 0;
    this.openBytes = 0;
    if (shares.length > 0) this.invocations = this.invocations.then(() => this.invokeBatch(shares));
  }

  private async invokeBatch(shares: Share[]): Promise<void> {
    const groups = new Map<string, MskRecord[]>();
    for (const share of shares) groups.set(share.id, [...(groups.get(share.id) ?? []), ...share.records]);
    const event = buildMskEvent(groups, {
      eventSourceArn: this.options.eventSourceArn ?? "arn:aws:kafka:local:000000000000:cluster/embedded/local",
      bootstrapServers: this.options.bootstrapServers,
    });
    const size = shares.reduce((n, share) => n + share.records.length, 0);
    const now = Date.now();
    const step = Math.max(1, Math.floor(size / 200));
    let i = 0;
    for (const share of shares) {
      for (const record of share.records)
        if (i++ % step === 0) this.stats.recentAgesMs.push(Math.max(0, now - record.timestamp));
    }
    if (this.stats.recentAgesMs.length > AGE_WINDOW)
      this.stats.recentAgesMs.splice(0, this.stats.recentAgesMs.length - AGE_WINDOW);
    this.stats.invocations++;
    this.stats.recordsDelivered += size;
    let failures: Map<string, number> | "invalid";
    let error = "";
    try {
      const response = await this.options.invoke(event);
      failures = failedOffsets(response);
      if (failures === "invalid") error = "the function returned a malformed batchItemFailures list";
      else this.countSummary(response, failures.size === 0);
    } catch (thrown) {
      failures = "invalid";
      error = thrown instanceof Error ? thrown.message : String(thrown);
    }
    if (failures === "invalid" || failures.size > 0) this.stats.failedInvocations++;
    for (const share of shares) {
      const first = (share.records[0] as MskRecord).offset;
      if (failures === "invalid") share.settle({ ok: false, failedOffset: first, error });
      else {
        const failedOffset = failures.get(share.id);
        share.settle(
          failedOffset === undefined ? { ok: true } : { ok: false, failedOffset, error: "partial batch failure" },
        );
      }
    }
  }

  private countSummary(response: unknown, complete: boolean): void {
    const summary = (response as { summary?: Partial<HarnessStats> & { deadLetteredByCode?: Record<string, number> } })
      ?.summary;
    if (!complete || !summary) return;
    this.stats.processed += summary.processed ?? 0;
    this.stats.deadLettered += summary.deadLettered ?? 0;
    for (const [code, n] of Object.entries(summary.deadLetteredByCode ?? {})) {
      this.stats.deadLetteredByCode[code] = (this.stats.deadLetteredByCode[code] ?? 0) + n;
    }
  }
}
