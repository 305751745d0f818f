/**
 * A local emulator of Lambda's Amazon MSK event source mapping (ESM): a consumer group polls the source topic,
 * builds batches of up to `batchSize` records or 6 MB (records of several partitions may share a batch), waiting at
 * most `batchWindowMs`; builds the exact event Lambda sends; invokes the handler in-process; commits offsets only
 * after success. Each partition is processed in order, one batch at a time; with `concurrency` above 1, batches of
 * different partitions are invoked at once, each in an execution environment of its own, as one Lambda event poller
 * does (up to 5 concurrent invocations).
 *
 * Error handling as the deployed ESM is configured (defaults: functions/shared/esm.ts ESM_DEFAULTS, the values the
 * stack deploys), after the Lambda Developer Guide's "Configuring error handling controls for Kafka event sources"
 * (kafka-retry-configurations.md) and "Using a Kafka topic as an on-failure destination"
 * (kafka-on-failure-destination.md):
 * - a function error (it throws, returns a malformed partial batch response, or outlives `timeoutMs`) fails the
 *   partition's share of the batch; with `bisectBatchOnError` a failed share of 2+ records is split in two and each
 *   half retried separately;
 * - a partial batch response (`batchItemFailures`, honoured only with `reportBatchItemFailures`; otherwise a returned
 *   value is a success, as in Lambda) commits up to the first failed offset and retries from there;
 * - after `retryAttempts` retries, or once a record is older than `maxRecordAgeSeconds`, the records are written to
 *   `onFailureTopic` (the actual records: key, value, headers, timestamp, plus `esm-failure.*` headers) and committed
 *   past; without a failure topic they are discarded (committed past, counted, logged), as Lambda skips them.
 *
 * Rebalances: when the group rebalances (a heartbeat answers REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION or
 * UNKNOWN_MEMBER_ID), no new invocation starts, shares waiting for an invocation are withdrawn, the invocation in
 * flight finishes and commits; only when every partition's loop has stopped does the consumer rejoin (the error is
 * rethrown to kafkajs's runner, which rejoins: node_modules/kafkajs/src/consumer/runner.js scheduleFetchManager). A
 * partition is invoked only while the last assignment (kafkajs's GROUP_JOIN event) holds it. The rebalance timeout
 * exceeds the invocation timeout, so the group waits for the in-flight invocation rather than evicting this member.
 */
import {
  type Admin,
  CompressionTypes,
  type Consumer,
  type EachBatchPayload,
  type IHeaders,
  type Kafka,
  type KafkaMessage,
  type Producer,
} from "kafkajs";
import type { MskEvent, MskRecord } from "../core/msk.ts";
import {
  ESM_DEFAULTS,
  MAX_BATCH_SIZE,
  MAX_BATCH_WINDOW_MS,
  MAX_FUNCTION_TIMEOUT_SECONDS,
  MAX_PAYLOAD_BYTES,
  MAX_RECORD_AGE_SECONDS,
  MAX_RETRY_ATTEMPTS,
  MIN_RECORD_AGE_SECONDS,
  RETRIES_WITH_DESTINATION,
} from "../shared/esm.ts";
import { createProducer, fetchedHeaders, NULL_HEADER_VALUE } from "../shared/kafka.ts";
import { log } from "../shared/log.ts";
import { buildMskEvent, mskRecordBytes, toMskRecord } from "./msk-event.ts";

export type StartingPosition = "TRIM_HORIZON" | "LATEST" | "AT_TIMESTAMP";

/** Lambda's limits for the Kafka ESM (functions/shared/esm.ts), re-exported for existing callers. */
export { MAX_BATCH_SIZE, MAX_BATCH_WINDOW_MS, MAX_PAYLOAD_BYTES };

/** Headers the harness adds to a record it parks on the on-failure topic (the record's own headers come first). */
export const FAILURE_HEADER = {
  /** RetryAttemptsExhausted | RecordAgeExceeded */
  reason: "esm-failure.reason",
  /** The last function error (its message, at most 1,000 characters), absent for RecordAgeExceeded without one. */
  error: "esm-failure.error",
  topic: "esm-failure.topic",
  partition: "esm-failure.partition",
  offset: "esm-failure.offset",
  /** Invocations that included the record. */
  attempts: "esm-failure.attempts",
} as const;

export type ParkReason = "RetryAttemptsExhausted" | "RecordAgeExceeded";

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
  /** Retries of a failed share before it is parked, -1 (infinite; 10 with a failure topic) or 0..10,000. @default 10 */
  readonly retryAttempts?: number;
  /** Records older than this are parked without an invocation, -1 (never) or 60..604,800. @default 86400 */
  readonly maxRecordAgeSeconds?: number;
  /** @default true */
  readonly bisectBatchOnError?: boolean;
  /** Honour `batchItemFailures` in the function's response. @default true */
  readonly reportBatchItemFailures?: boolean;
  /** The on-failure destination topic (must exist); null: none. @default "user-login-esm-failures" */
  readonly onFailureTopic?: string | null;
  /** An invocation still running after this long is a failure (Lambda's function timeout). @default 120000 */
  readonly timeoutMs?: number;
  /** Told of each failed write to the on-failure topic (which is retried): e.g. an authorization refusal. */
  readonly onFailureTopicError?: (error: unknown) => void;
  /**
   * The function, in one execution environment (e.g. loadHandler's, in this process): gets the event and its
   * timeout, returns its response or throws. Give this or `newEnvironment`.
   */
  readonly invoke?: InvokeFunction;
  /**
   * Up to how many invocations run at once (1 to 5): an event poller runs up to 5 concurrent invocations ("Apache
   * Kafka event poller scaling modes in Lambda", kafka-scaling-modes.md), and this harness is one poller. Each
   * partition still has at most one invocation in flight (records of a partition are delivered in order), so
   * invocations overlap only across partitions. Above 1 it needs `newEnvironment`: as in Lambda, an execution
   * environment serves one invocation at a time. @default 1
   */
  readonly concurrency?: number;
  /**
   * Makes an execution environment (e.g. functions/local/worker-environment.ts: the handler loaded afresh on a
   * worker thread, with its own producer) when none is free; the harness closes the ones it made when it stops. An
   * environment whose invocation timed out or whose runtime died is not used again (Lambda replaces it).
   */
  readonly newEnvironment?: () => FunctionEnvironment | Promise<FunctionEnvironment>;
}

export type InvokeFunction = (event: MskEvent, timeoutMs: number) => Promise<unknown>;

/** An execution environment of the function: one invocation at a time. */
export interface FunctionEnvironment {
  readonly invoke: InvokeFunction;
  readonly close: () => Promise<void>;
  /** False once its runtime died: it takes no more invocations. @default always true */
  readonly alive?: () => boolean;
  /**
   * Resolves once the environment's init (loading the handler) is done, rejects when it failed (the environment is
   * then replaced); awaited before each invocation, outside its timeout. @default ready at once
   */
  readonly ready?: () => Promise<void>;
  /**
   * Stops the function at once (the invocation timed out), as Lambda stops the environment. Without it, a timed-out
   * invocation runs on and whatever it writes later is a duplicate.
   */
  readonly abort?: () => Promise<void>;
}

/** Concurrent invocations of one event poller (kafka-scaling-modes.md: "up to 5 concurrent invocations"). */
export const MAX_POLLER_CONCURRENCY = 5;

export interface HarnessStats {
  invocations: number;
  failedInvocations: number;
  /** Invocations that outlived the timeout (counted in failedInvocations too). */
  timedOut: number;
  /** Records delivered to the function, redeliveries included. */
  recordsDelivered: number;
  /** Records whose offsets were committed. */
  recordsCommitted: number;
  /** Shares of a failed batch split in two (bisect on error). */
  bisections: number;
  /** Records written to the on-failure topic, by reason. */
  parked: number;
  parkedByReason: Partial<Record<ParkReason, number>>;
  /** Records committed past without a failure topic to park them on (Lambda skips them likewise). */
  discarded: number;
  /** Group rebalances this harness took part in after its first assignment. */
  rebalances: number;
  /** Records withdrawn from a batch before its invocation because their partition was being revoked. */
  withdrawn: number;
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

/** Stats at zero. */
export function newHarnessStats(): HarnessStats {
  return {
    invocations: 0,
    failedInvocations: 0,
    timedOut: 0,
    recordsDelivered: 0,
    recordsCommitted: 0,
    bisections: 0,
    parked: 0,
    parkedByReason: {},
    discarded: 0,
    rebalances: 0,
    withdrawn: 0,
    processed: 0,
    deadLettered: 0,
    deadLetteredByCode: {},
    lag: 0,
    lagByPartition: {},
    recentAgesMs: [],
  };
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

/** A thrown value as text, whatever it is (`String(Object.create(null))` throws). */
function errorText(thrown: unknown): string {
  try {
    return thrown instanceof Error ? String(thrown.message) : String(thrown);
  } catch {
    return "the function threw a value that cannot be turned into text";
  }
}

/** What happened to one partition's share of a batch. */
type Outcome =
  | { kind: "ok" }
  | { kind: "partial"; failedOffset: number }
  | { kind: "error"; error: string }
  /** Not invoked: the partition is being revoked. */
  | { kind: "withdrawn" };

interface Share {
  readonly id: string;
  readonly records: MskRecord[];
  readonly settle: (outcome: Outcome) => void;
}

/** What a partition paused for a retry still has to deliver: offset ranges [from, to) with their spent attempts. */
interface RetryState {
  readonly segments: readonly { from: number; to: number; attempts: number; error?: string }[];
  /** Failed writes to the failure topic in a row, for their backoff. */
  readonly parkFailures: number;
}

/** A run of a partition's fetched records still to deliver, with the invocations that already failed it. */
interface Segment {
  from: number;
  readonly to: number;
  readonly attempts: number;
  readonly error?: string;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Group-coordinator answers that mean this member's assignment is over (kafkajs's isRebalancing, and a lost member). */
const REVOKING = new Set([
  "REBALANCE_IN_PROGRESS",
  "ILLEGAL_GENERATION",
  "NOT_COORDINATOR_FOR_GROUP",
  "UNKNOWN_MEMBER_ID",
]);

/**
 * Reads Lambda's Kafka partial batch response: partition id -> first failed offset. "invalid" (a function error: the
 * whole batch fails, nothing is committed) for anything but a list of `{ itemIdentifier: { partition, offset } }` whose
 * partition is one of the event's and whose offset (a number, or a string of digits) is one of that partition's
 * records: a response that names records the batch does not hold cannot say which of its own succeeded.
 */
function failedOffsets(
  response: unknown,
  delivered: ReadonlyMap<string, ReadonlySet<number>>,
): Map<string, number> | "invalid" {
  const failures = new Map<string, number>();
  if (response === null || typeof response !== "object" || !("batchItemFailures" in response)) return failures;
  const items = (response as { batchItemFailures: unknown }).batchItemFailures;
  if (items == null) return failures;
  if (!Array.isArray(items)) return "invalid";
  for (const item of items) {
    const id = item?.itemIdentifier;
    const raw: unknown = id?.offset;
    const offset =
      typeof raw === "number" ? raw : typeof raw === "string" && /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
    if (typeof id?.partition !== "string" || !delivered.get(id.partition)?.has(offset)) return "invalid";
    const known = failures.get(id.partition);
    if (known === undefined || offset < known) failures.set(id.partition, offset);
  }
  return failures;
}

/** The record as it came, with the failure metadata: what the on-failure topic receives. */
function parkedMessage(
  message: KafkaMessage,
  source: { topic: string; partition: number },
  reason: ParkReason,
  attempts: number,
  error: string | undefined,
): { key: Buffer | null; value: Buffer | null; timestamp: string; headers: IHeaders } {
  const headers = Object.create(null) as Record<string, Buffer[]>;
  const ours = new Set<string>(Object.values(FAILURE_HEADER));
  for (const [name, value] of fetchedHeaders(message.headers)) {
    if (ours.has(name)) continue; // a record parked before: its old failure headers are replaced
    if (!Object.hasOwn(headers, name)) Object.defineProperty(headers, name, { value: [], enumerable: true });
    (headers[name] as Buffer[]).push(value ?? NULL_HEADER_VALUE);
  }
  const add = (name: string, text: string) =>
    Object.defineProperty(headers, name, { value: [Buffer.from(text)], enumerable: true });
  add(FAILURE_HEADER.reason, reason);
  if (error) add(FAILURE_HEADER.error, error.slice(0, 1000));
  add(FAILURE_HEADER.topic, source.topic);
  add(FAILURE_HEADER.partition, String(source.partition));
  add(FAILURE_HEADER.offset, message.offset);
  add(FAILURE_HEADER.attempts, String(attempts));
  return { key: message.key, value: message.value, timestamp: message.timestamp, headers: headers as IHeaders };
}

export class MskEventSourceHarness {
  readonly stats: HarnessStats = newHarnessStats();
  private readonly groupId: string;
  private readonly batchSize: number;
  private readonly batchWindowMs: number;
  private readonly maxBatchBytes: number;
  private readonly retryLimit: number;
  private readonly maxRecordAgeMs: number;
  private readonly timeoutMs: number;
  private readonly failureTopic: string | null;
  private consumer: Consumer | undefined;
  private failureProducer: Producer | undefined;
  private open: Share[] = [];
  private openCount = 0;
  private openBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly concurrency: number;
  /** Closed batches waiting for a free invocation slot, oldest first. */
  private readonly queued: Share[][] = [];
  /** Invocations running (their batches, from invocation to settling every share). */
  private readonly running = new Set<Promise<void>>();
  /** Environments free for an invocation; the caller's `invoke` is the first. */
  private readonly idle: FunctionEnvironment[];
  /** Environments this harness made (closed on stop). */
  private readonly made = new Set<FunctionEnvironment>();
  /** Invocations that timed out but have not returned yet. */
  private readonly lingering = new Set<Promise<unknown>>();
  private readonly highWatermarks = new Map<string, number>();
  private readonly committed = new Map<string, number>();
  /** Partitions ("topic-partition") of the current assignment; undefined before the first. */
  private assignment: Set<string> | undefined;
  /** Set when the group is rebalancing: the error to hand kafkajs once every partition's loop has stopped. */
  private revoked: Error | undefined;
  /** eachBatch calls still delivering (not yet stopped for a rebalance). */
  private delivering = 0;
  /** Per partition, what a paused partition still has to deliver, by offset, with the attempts already spent. */
  private readonly retrying = new Map<string, RetryState>();
  private readonly resumeTimers = new Set<NodeJS.Timeout>();
  /** Resolves when the consumer crashed for good (kafkajs does not restart it): the harness consumes nothing more. */
  readonly crashed: Promise<Error>;
  private reportCrash: (error: Error) => void = () => {};

  constructor(private readonly options: HarnessOptions) {
    this.crashed = new Promise<Error>((resolve) => {
      this.reportCrash = resolve;
    });
    this.groupId = options.groupId ?? "user-login-processor";
    this.batchSize = checkRange("batch size", options.batchSize ?? 100, 1, MAX_BATCH_SIZE);
    this.batchWindowMs = checkRange("batch window (ms)", options.batchWindowMs ?? 500, 0, MAX_BATCH_WINDOW_MS);
    // The envelope and the "topic-partition" keys take a few hundred bytes of the payload limit.
    this.maxBatchBytes = (options.maxBatchBytes ?? MAX_PAYLOAD_BYTES) - 4096;
    if (options.startingPosition === "AT_TIMESTAMP" && options.startingTimestamp === undefined) {
      throw new HarnessOptionError("starting position AT_TIMESTAMP needs a starting timestamp");
    }
    this.failureTopic = options.onFailureTopic === undefined ? ESM_DEFAULTS.onFailureTopic : options.onFailureTopic;
    if (this.failureTopic === options.topic) {
      // Lambda refuses it too: "Recursion prevention" (kafka-on-failure-destination.md).
      throw new HarnessOptionError(`the on-failure topic must not be the source topic "${options.topic}"`);
    }
    const retries = options.retryAttempts ?? ESM_DEFAULTS.retryAttempts;
    if (retries !== -1) checkRange("retry attempts (-1 for infinite)", retries, 0, MAX_RETRY_ATTEMPTS);
    this.retryLimit =
      retries === -1 ? (this.failureTopic ? RETRIES_WITH_DESTINATION : Number.POSITIVE_INFINITY) : retries;
    const age = options.maxRecordAgeSeconds ?? ESM_DEFAULTS.maxRecordAgeSeconds;
    if (age !== -1)
      checkRange("maximum record age (s, -1 for none)", age, MIN_RECORD_AGE_SECONDS, MAX_RECORD_AGE_SECONDS);
    this.maxRecordAgeMs = age === -1 ? Number.POSITIVE_INFINITY : age * 1000;
    this.concurrency = checkRange("concurrency", options.concurrency ?? 1, 1, MAX_POLLER_CONCURRENCY);
    if ((options.invoke === undefined) === (options.newEnvironment === undefined)) {
      throw new HarnessOptionError("give the function as invoke (one environment) or newEnvironment, not both");
    }
    if (this.concurrency > 1 && !options.newEnvironment) {
      throw new HarnessOptionError(
        "concurrency above 1 needs newEnvironment: each concurrent invocation runs in an execution environment of its own",
      );
    }
    this.idle = options.invoke ? [{ invoke: options.invoke, close: async () => {} }] : [];
    this.timeoutMs = checkRange(
      "timeout (ms)",
      options.timeoutMs ?? ESM_DEFAULTS.functionTimeoutSeconds * 1000,
      1,
      MAX_FUNCTION_TIMEOUT_SECONDS * 1000,
    );
  }

  /** Joins the consumer group and starts polling; resolves once the first fetch has returned. */
  async start(): Promise<void> {
    const { kafka, topic } = this.options;
    const position = this.options.startingPosition ?? "TRIM_HORIZON";
    const admin = kafka.admin();
    await admin.connect();
    try {
      const existing = await admin.listTopics();
      if (!existing.includes(topic)) {
        throw new HarnessOptionError(`topic "${topic}" does not exist on ${this.options.bootstrapServers}`);
      }
      if (this.failureTopic && !existing.includes(this.failureTopic)) {
        throw new HarnessOptionError(
          `the on-failure topic "${this.failureTopic}" does not exist on ${this.options.bootstrapServers}: ` +
            "create it (npm run topics -- --create), name another with --on-failure-topic, or pass --on-failure-topic none",
        );
      }
      if (position === "AT_TIMESTAMP") await this.seekToTimestamp(admin);
    } finally {
      await admin.disconnect();
    }
    if (this.failureTopic) {
      this.failureProducer = createProducer(kafka);
      await this.failureProducer.connect();
    }
    const consumer = kafka.consumer({
      groupId: this.groupId,
      sessionTimeout: this.options.sessionTimeoutMs ?? 30_000,
      // Long enough for the invocation in flight to finish and commit before this member must rejoin.
      rebalanceTimeout: Math.max(60_000, this.timeoutMs + 30_000),
      maxWaitTimeInMs: Math.max(10, Math.min(this.batchWindowMs, 5000)),
      // Enough per fetch to fill a 6 MB event: a batch never waits on a second fetch (each fetch's shares are in flight).
      maxBytesPerPartition: this.maxBatchBytes,
      maxBytes: 2 * this.maxBatchBytes,
    });
    this.consumer = consumer;
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      if (this.assignment !== undefined) this.stats.rebalances++;
      const assigned = new Set<string>();
      for (const [t, partitions] of Object.entries(payload.memberAssignment)) {
        for (const p of partitions) assigned.add(`${t}-${p}`);
      }
      this.assignment = assigned;
      this.revoked = undefined;
      // A partition that moved away starts afresh with its next owner (as a poller's retry state stays with it).
      for (const id of this.retrying.keys()) if (!assigned.has(id)) this.retrying.delete(id);
    });
    // kafkajs restarts the consumer after retriable crashes; any other leaves it stopped: say so, loudly.
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      if (payload.restart) return;
      log("ERROR", "the harness's consumer crashed and consumes nothing more", { error: payload.error.message });
      this.reportCrash(payload.error);
    });
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
    for (const timer of this.resumeTimers) clearTimeout(timer);
    this.resumeTimers.clear();
    const stopping = consumer.stop();
    this.closeOpenBatch();
    await stopping;
    await this.invocationsSettled();
    for (const timer of this.resumeTimers) clearTimeout(timer);
    this.resumeTimers.clear();
    await consumer.disconnect();
    // A timed-out invocation may still be writing: give it a moment before the caller closes the function's clients.
    await Promise.race([Promise.allSettled([...this.lingering]), sleep(5000)]);
    await Promise.allSettled([...this.made].map((environment) => environment.close()));
    this.made.clear();
    await this.failureProducer?.disconnect();
    this.failureProducer = undefined;
  }

  private async seekToTimestamp(admin: Admin): Promise<void> {
    const { topic } = this.options;
    const committed = await admin.fetchOffsets({ groupId: this.groupId, topics: [topic] });
    const hasOffsets = committed.some((t) => t.partitions.some((p) => p.offset !== "-1"));
    if (hasOffsets) return;
    const offsets = await admin.fetchTopicOffsetsByTimestamp(topic, this.options.startingTimestamp);
    await admin.setOffsets({ groupId: this.groupId, topic, partitions: offsets });
  }

  /** Notes a heartbeat's answer: a rebalance stops new invocations and withdraws waiting shares. */
  private noteGroupError(error: unknown): void {
    const type = (error as { type?: string })?.type;
    if (!type || !REVOKING.has(type) || this.revoked) return;
    this.revoked = error as Error;
    const withdrawn = this.open;
    this.open = [];
    this.openCount = 0;
    this.openBytes = 0;
    clearTimeout(this.timer);
    this.timer = undefined;
    for (const share of withdrawn) {
      this.stats.withdrawn += share.records.length;
      share.settle({ kind: "withdrawn" });
    }
  }

  private async eachBatch(payload: EachBatchPayload): Promise<void> {
    const { batch, resolveOffset, isRunning, isStale } = payload;
    const { topic, partition } = batch;
    const id = `${topic}-${partition}`;
    const heartbeat = () => payload.heartbeat().catch((error) => this.noteGroupError(error));
    const mayDeliver = () =>
      isRunning() && !isStale() && !this.revoked && (this.assignment === undefined || this.assignment.has(id));
    // Commits through the batch's own handle, which also works while the consumer is stopping or the group rebalances.
    const commit = async (nextOffset: number, count: number) => {
      resolveOffset(String(nextOffset - 1));
      await payload.commitOffsetsIfNecessary({
        topics: [{ topic, partitions: [{ partition, offset: String(nextOffset) }] }],
      });
      this.committed.set(id, nextOffset);
      this.stats.recordsCommitted += count;
      this.updateLag();
    };
    this.highWatermarks.set(id, Number(batch.highWatermark));
    this.updateLag();
    const messages = batch.messages;
    const records = messages.map((message) => toMskRecord(topic, partition, message));
    // A record without a timestamp (-1) has no age: it never expires.
    const isExpired = (i: number) => {
      const timestamp = (records[i] as MskRecord).timestamp;
      return timestamp >= 0 && Date.now() - timestamp > this.maxRecordAgeMs;
    };
    /** Writes records [from, to) to the failure topic (or discards them) and commits past them. */
    const park = async (from: number, to: number, reason: ParkReason, attempts: number, error?: string) => {
      const parked = messages
        .slice(from, to)
        .map((m) => parkedMessage(m, { topic, partition }, reason, attempts, error));
      if (!(await this.writeFailures(parked))) return false;
      if (this.failureTopic) {
        this.stats.parked += to - from;
        this.stats.parkedByReason[reason] = (this.stats.parkedByReason[reason] ?? 0) + (to - from);
      } else {
        this.stats.discarded += to - from;
      }
      log(
        "ERROR",
        this.failureTopic ? "records parked on the on-failure topic" : "records discarded (no on-failure topic)",
        {
          partition: id,
          offsets: `${messages[from]?.offset}..${messages[to - 1]?.offset}`,
          reason,
          attempts,
          failureTopic: this.failureTopic,
        },
      );
      await commit(Number(messages[to - 1]?.offset) + 1, to - from);
      return true;
    };

    const pending = this.resumeSegments(id, records);
    /**
     * Ends this call with the partition paused for `delayMs`: what is left (`pending`, with its attempts) is kept by
     * offset, and the next fetch, from the first uncommitted offset once the pause ends, picks it up. So a partition
     * that retries or backs off holds up no other: kafkajs fetches again only when every batch of a fetch has returned
     * (node_modules/kafkajs/src/consumer/fetcher.js, workerQueue.js).
     */
    const retryLater = (delayMs: number, parkFailures = 0) => {
      // Stopping: nothing to pause or resume (a timer would only keep the process alive); the next run refetches.
      if (!isRunning() || this.consumer === undefined) return;
      const after = (i: number) =>
        i < records.length ? (records[i] as MskRecord).offset : Number(batch.lastOffset()) + 1;
      this.retrying.set(id, {
        segments: pending
          .filter((segment) => segment.from < segment.to)
          .map((segment) => ({
            from: (records[segment.from] as MskRecord).offset,
            to: after(segment.to),
            attempts: segment.attempts,
            error: segment.error,
          })),
        parkFailures,
      });
      const resume = payload.pause();
      const timer = setTimeout(() => {
        this.resumeTimers.delete(timer);
        resume();
      }, delayMs);
      timer.unref();
      this.resumeTimers.add(timer);
    };
    const backoff = (attempt: number) =>
      Math.min((this.options.retryBackoffMs ?? 500) * 2 ** (attempt - 1), this.options.maxRetryBackoffMs ?? 10_000);
    const parkFailures = this.retrying.get(id)?.parkFailures ?? 0;
    this.retrying.delete(id);
    /** Parks, or, when the failure topic refuses, retries later from the same place (never commits past it). */
    const parkOrRetry = async (from: number, to: number, reason: ParkReason, attempts: number, error?: string) => {
      if (await park(from, to, reason, attempts, error)) return true;
      retryLater(backoff(parkFailures + 1), parkFailures + 1);
      return false;
    };

    this.delivering++;
    let stillDelivering = true;
    try {
      while (pending.length > 0 && mayDeliver()) {
        const segment = pending[0] as Segment;
        if (segment.from >= segment.to) {
          pending.shift();
          continue;
        }
        // Records whose retries are spent (their parking was refused before) go to the failure topic first.
        if (segment.attempts > this.retryLimit) {
          const { from, to } = segment;
          if (!(await parkOrRetry(from, to, "RetryAttemptsExhausted", segment.attempts, segment.error))) break;
          segment.from = to;
          continue;
        }
        // Records past the maximum age go to the failure topic without an invocation.
        let expired = 0;
        while (segment.from + expired < segment.to && isExpired(segment.from + expired)) expired++;
        if (expired > 0) {
          const from = segment.from;
          if (!(await parkOrRetry(from, from + expired, "RecordAgeExceeded", segment.attempts, segment.error))) break;
          segment.from += expired;
          continue;
        }
        let end = segment.from + 1;
        while (end < segment.to && !isExpired(end)) end++;
        // A retry goes alone: a record that failed with another partition's (perhaps poison) record is not put
        // with it again, so each partition's records succeed or fail on their own.
        const { accepted, outcome } = this.submit(id, records.slice(segment.from, end), segment.attempts > 0);
        // kafkajs sends a heartbeat at most once per heartbeatInterval (3 s; consumerGroup.js SHARED_HEARTBEAT), so
        // asking every second while waiting, and after every invocation, costs nothing and notices a rebalance soon.
        const beat = setInterval(() => void heartbeat(), 1000);
        const result = await outcome.finally(() => clearInterval(beat));
        await heartbeat();
        if (result.kind === "withdrawn") break;
        const start = segment.from;
        const last = start + accepted - 1;
        if (result.kind === "ok") {
          await commit((records[last] as MskRecord).offset + 1, accepted);
          segment.from += accepted;
          continue;
        }
        // The first failed record: from the partial batch response, or the share's first on a function error.
        let failed = start;
        if (result.kind === "partial") {
          while (failed <= last && (records[failed] as MskRecord).offset < result.failedOffset) failed++;
          if (failed > start) await commit((records[failed - 1] as MskRecord).offset + 1, failed - start);
          if (failed > last) {
            segment.from += accepted;
            continue;
          }
        }
        const attempts = segment.attempts + 1;
        const error = result.kind === "error" ? result.error : "partial batch failure";
        const rest: Segment = { from: last + 1, to: segment.to, attempts: segment.attempts, error: segment.error };
        if (attempts > this.retryLimit) {
          // Kept as spent (attempts over the limit): if the failure topic refuses it now, the next try parks it.
          pending.splice(0, 1, { from: failed, to: last + 1, attempts, error }, rest);
          continue;
        }
        const retry: Segment[] = [];
        if (result.kind === "error" && this.options.bisectBatchOnError !== false && last + 1 - failed > 1) {
          const middle = failed + Math.ceil((last + 1 - failed) / 2);
          retry.push({ from: failed, to: middle, attempts, error }, { from: middle, to: last + 1, attempts, error });
          this.stats.bisections++;
        } else {
          retry.push({ from: failed, to: last + 1, attempts, error });
        }
        pending.splice(0, 1, ...retry, rest);
        retryLater(backoff(attempts));
        break;
      }
      if (this.revoked) {
        // This partition's loop has stopped; kafkajs may rejoin once every other one has too.
        this.delivering--;
        stillDelivering = false;
        while (this.delivering > 0) await sleep(50);
        if (this.revoked) throw this.revoked;
      }
    } finally {
      if (stillDelivering) this.delivering--;
    }
  }

  /**
   * Writes parked records to the failure topic (nothing without one), in requests that stay under its
   * max.message.bytes (2 MiB, functions/shared/topic-settings.ts); a record that is alone too large is sent
   * gzip-compressed, as the processor's sender does. False when a write failed (the caller retries later from the
   * first unwritten record's segment; records written before it may be written again: duplicates, never a loss).
   */
  private async writeFailures(messages: ReturnType<typeof parkedMessage>[]): Promise<boolean> {
    const producer = this.failureProducer;
    const topic = this.failureTopic;
    if (!producer || !topic) return true;
    const size = (m: (typeof messages)[number]) =>
      (m.key?.length ?? 0) + (m.value?.length ?? 0) + JSON.stringify(m.headers).length + 64;
    let i = 0;
    while (i < messages.length) {
      let end = i + 1;
      let bytes = size(messages[i] as (typeof messages)[number]);
      while (end < messages.length && bytes + size(messages[end] as (typeof messages)[number]) < 512 * 1024) {
        bytes += size(messages[end] as (typeof messages)[number]);
        end++;
      }
      try {
        await producer.send({
          topic,
          acks: -1,
          messages: messages.slice(i, end),
          ...(bytes > 512 * 1024 ? { compression: CompressionTypes.GZIP } : {}),
        });
        i = end;
      } catch (error) {
        this.options.onFailureTopicError?.(error);
        log("ERROR", "writing to the on-failure topic failed; the partition retries after a pause", {
          failureTopic: topic,
          error: error instanceof Error ? error.message : String(error),
        });
        return false;
      }
    }
    return true;
  }

  /** The segments of a fetched batch: a paused partition's kept ones (attempts included) first, when it resumes there. */
  private resumeSegments(id: string, records: readonly MskRecord[]): Segment[] {
    const state = this.retrying.get(id);
    const first = records[0]?.offset;
    const kept = state?.segments ?? [];
    if (first === undefined || kept.length === 0 || kept[0]?.from !== first) {
      return [{ from: 0, to: records.length, attempts: 0 }];
    }
    const indexOf = (offset: number, from: number) => {
      let i = from;
      while (i < records.length && (records[i] as MskRecord).offset < offset) i++;
      return i;
    };
    const segments: Segment[] = [];
    let at = 0;
    for (const segment of kept) {
      const from = indexOf(segment.from, at);
      const to = indexOf(segment.to, from);
      if (to > from) segments.push({ from, to, attempts: segment.attempts, error: segment.error });
      at = to;
    }
    if (at < records.length) segments.push({ from: at, to: records.length, attempts: 0 });
    return segments;
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

  /**
   * Adds as many of `records` as fit to the open batch (at least one); resolves when that batch has run. `alone`: in a
   * batch of their own (a retry).
   */
  private submit(id: string, records: MskRecord[], alone = false): { accepted: number; outcome: Promise<Outcome> } {
    const firstBytes = mskRecordBytes(records[0] as MskRecord);
    if (
      alone ||
      this.openCount >= this.batchSize ||
      (this.openCount > 0 && this.openBytes + firstBytes > this.maxBatchBytes)
    ) {
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
    if (alone || this.openCount >= this.batchSize || this.openBytes >= this.maxBatchBytes || this.batchWindowMs === 0) {
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
    if (shares.length === 0) return;
    this.queued.push(shares);
    this.startInvocations();
  }

  /**
   * Starts queued batches while fewer than `concurrency` run. Batches never share a partition in flight: a partition's
   * loop waits for its share's outcome before it submits the next one.
   */
  private startInvocations(): void {
    while (this.running.size < this.concurrency && this.queued.length > 0) {
      const shares = this.queued.shift() as Share[];
      const run: Promise<void> = this.invokeBatch(shares)
        .catch((error: unknown) => {
          // A bug of the harness's own must not wedge anything: the shares fail and are retried.
          const message = errorText(error);
          this.stats.failedInvocations++;
          for (const share of shares) share.settle({ kind: "error", error: `harness error: ${message}` });
        })
        .finally(() => {
          this.running.delete(run);
          this.startInvocations();
        });
      this.running.add(run);
    }
  }

  /** Resolves when no batch is queued or running. */
  private async invocationsSettled(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  /** A free execution environment: an idle one, else a new one (at most `concurrency` are ever busy). */
  private async environment(): Promise<FunctionEnvironment> {
    for (let idle = this.idle.pop(); idle; idle = this.idle.pop()) {
      if (idle.alive?.() !== false) return idle;
      // Its runtime died between invocations (e.g. an uncaught exception from a timer): Lambda never invokes it again.
      if (this.made.delete(idle)) void idle.close().catch(() => {});
    }
    const made = await (this.options.newEnvironment as () => Promise<FunctionEnvironment>)();
    this.made.add(made);
    return made;
  }

  /**
   * Calls the function; an error, a rejection or the timeout passing first is a function error. An environment's init
   * (loading the handler, `ready`) has a limit of its own and does not count against the timeout, as in Lambda; an
   * init that fails is a function error and the environment is replaced.
   */
  private async call(event: MskEvent): Promise<{ response: unknown } | { error: string; timedOut?: boolean }> {
    let environment = await this.environment();
    let invocation: Promise<unknown> | undefined;
    let result: { response: unknown } | { error: string; timedOut?: boolean } | undefined;
    try {
      for (let attempt = 1; ; attempt++) {
        if (environment.ready) {
          const initError = await environment.ready().then(
            () => undefined,
            (error: unknown) => errorText(error),
          );
          if (initError !== undefined) {
            result = { error: initError };
            return result;
          }
        }
        // Its runtime died after its init, before this invocation: Lambda never invokes a dead environment.
        if (environment.alive?.() !== false || attempt >= 3) break;
        if (this.made.delete(environment)) void environment.close().catch(() => {});
        environment = await this.environment();
      }
      let timer: NodeJS.Timeout | undefined;
      // Through a promise: a handler that throws synchronously is a function error like any other.
      const running = Promise.resolve()
        .then(() => environment.invoke(event, this.timeoutMs))
        .then(
          (response) => ({ response }),
          (thrown: unknown) => ({ error: errorText(thrown) }),
        );
      invocation = running;
      const timeout = new Promise<{ error: string; timedOut: true }>((resolve) => {
        timer = setTimeout(
          () =>
            resolve({ error: `Task timed out after ${(this.timeoutMs / 1000).toFixed(2)} seconds`, timedOut: true }),
          this.timeoutMs,
        );
      });
      result = await Promise.race([running, timeout]).finally(() => clearTimeout(timer));
      if ("timedOut" in result) {
        if (environment.abort) {
          // Lambda stops the function here: so does an environment that can (a worker thread ends).
          await environment.abort().catch(() => {});
        } else {
          // In-process the function runs on, and whatever it writes later is a duplicate.
          this.lingering.add(running);
          void running.finally(() => this.lingering.delete(running));
        }
      }
      return result;
    } finally {
      // Always given back or replaced, whatever went wrong above: a lost environment would starve every later batch.
      const replace = result === undefined || "timedOut" in result || environment.alive?.() === false;
      if (this.made.has(environment) && replace) {
        // Lambda replaces an environment that timed out, failed its init or whose runtime died.
        this.made.delete(environment);
        void (invocation ?? Promise.resolve()).finally(() => environment.close().catch(() => {}));
      } else this.idle.push(environment);
    }
  }

  private async invokeBatch(shares: Share[]): Promise<void> {
    if (this.revoked) {
      this.stats.withdrawn += shares.reduce((n, share) => n + share.records.length, 0);
      for (const share of shares) share.settle({ kind: "withdrawn" });
      return;
    }
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
    const result = await this.call(event);
    let failures: Map<string, number> | "invalid" = "invalid";
    let error = "";
    if ("error" in result) {
      error = result.error;
      if (result.timedOut) this.stats.timedOut++;
    } else {
      const delivered = new Map<string, Set<number>>();
      for (const [id, records] of groups) delivered.set(id, new Set(records.map((r) => r.offset)));
      failures = failedOffsets(result.response, delivered);
      // Without ReportBatchItemFailures Lambda does not read the response: whatever it returns is a success.
      if (this.options.reportBatchItemFailures === false) failures = new Map();
      if (failures === "invalid") {
        error = "the function returned a batchItemFailures list that is malformed or names records not in the batch";
      } else this.countSummary(result.response, failures.size === 0);
    }
    if (failures === "invalid" || failures.size > 0) this.stats.failedInvocations++;
    for (const share of shares) {
      if (failures === "invalid") share.settle({ kind: "error", error });
      else {
        const failedOffset = failures.get(share.id);
        share.settle(failedOffset === undefined ? { kind: "ok" } : { kind: "partial", failedOffset });
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
