/**
 * Seeded, randomized fault schedules over the whole local pipeline (generator -> source topic -> emulated event
 * source mapping -> handler -> processed topic / DLQ), each closed by the at-least-once accounting. Used by
 * test/integration/chaos.test.ts and `npm run soak -- --chaos`.
 *
 * A schedule is a pure function of its seed (`planSchedule`): one primary fault type (or "mixed", two or three of
 * them), when each fault starts, and its parameters, printable with `describePlan`. `runSchedule` runs it on a broker
 * with a proxied listener and a FaultProxy in front of it: the generator, the harness and the processor all connect
 * through the proxy, each with a client id of its own so that a fault can target one of them; the broker-side faults
 * (`processed-refused`, `topic-recreated`) and all the reading and accounting go through the direct listener.
 */
import { randomUUID } from "node:crypto";
import { type Admin, type ConfigResourceTypes, Kafka, logLevel } from "kafkajs";
import type { MskEvent } from "../core/msk.ts";
import { kafkaSink, producerSlot } from "../generator/main.ts";
import { GeneratorModel, seededRandom } from "../generator/model.ts";
import { type RunSummary, runGenerator, sleep } from "../generator/run.ts";
import { containerSender, createHandler } from "../processor/processor.ts";
import { kafkaSender, type OutputSender } from "../processor/sender.ts";
import { compressionType } from "../shared/codecs.ts";
import { loadProcessorConfig, type ProcessorConfig } from "../shared/config.ts";
import { createKafka, createProducer, ProducerSlot } from "../shared/kafka.ts";
import { sizeConfigs } from "../shared/topic-settings.ts";
import { ensureTopicsWith, groupLagWith } from "../shared/topics.ts";
import { type Accounting, account } from "./accounting.ts";
import type { Fault, FaultKind, FaultProxy, FaultProxyStats } from "./fault-proxy.ts";
import { MskEventSourceHarness } from "./harness.ts";
import { readTopic, type TopicRecord } from "./read-topic.ts";

/** Kafka API keys the faults target. */
export const API_KEY = { produce: 0, fetch: 1, offsetCommit: 8 } as const;

export const PRIMARY_FAULT_TYPES = [
  "produce-drop-request",
  "produce-drop-response",
  "produce-timeout",
  "commit-lost",
  "fetch-dropped",
  "generator-produce-fault",
  "connections-refused",
  "connections-dropped",
  "processed-refused",
  "topic-recreated",
] as const;
export type PrimaryFaultType = (typeof PRIMARY_FAULT_TYPES)[number];
export const FAULT_TYPES = [...PRIMARY_FAULT_TYPES, "mixed"] as const;
export type FaultType = (typeof FAULT_TYPES)[number];

/**
 * What a "mixed" schedule draws from. Not topic-recreated: its exact accounting needs the processor's writes blocked
 * and the topic's end offsets still, which another fault's delayed response could break.
 */
const MIXABLE: readonly PrimaryFaultType[] = PRIMARY_FAULT_TYPES.filter((t) => t !== "topic-recreated");

/** The processor's kafkajs requestTimeout in schedules with a produce-timeout (createKafka's is 30 s). */
export const SHORT_REQUEST_TIMEOUT_MS = 2000;

export type Role = "generator" | "harness" | "processor";

export interface PlannedFault {
  readonly type: PrimaryFaultType;
  /** When it starts, in ms after the generator starts. */
  readonly atMs: number;
  /** Proxy faults: what is injected (kind, apiKey, clientId, times, ms). */
  readonly inject?: Fault;
  /** Proxy faults: whose requests. */
  readonly target?: Role;
  /** How long the fault stays armed or on (refusing, topic limit lowered); cleared afterwards. */
  readonly durationMs?: number;
  /** connections-dropped: how many dropAll() calls, this far apart. */
  readonly drops?: number;
  readonly gapMs?: number;
  /** processed-refused: the processed topic's max.message.bytes meanwhile. */
  readonly maxMessageBytes?: number;
  /** topic-recreated: how long the processor stays blocked after the new topic has its leaders. */
  readonly holdMs?: number;
}

export interface ChaosPlan {
  readonly seed: number;
  readonly type: FaultType;
  /** The processor's PARTIAL_BATCH_RESPONSE. */
  readonly partialBatchResponse: boolean;
  /** Generator events per second, and how long it runs at least (longer while faults are under way). */
  readonly rate: number;
  readonly generateMs: number;
  /** The generator runs on at least this long after the last fault has ended. */
  readonly tailMs: number;
  readonly invalidRatio: number;
  readonly harness: {
    readonly batchSize: number;
    readonly batchWindowMs: number;
    readonly retryBackoffMs: number;
    readonly maxRetryBackoffMs: number;
    readonly sessionTimeoutMs: number;
  };
  readonly clientIds: Readonly<Record<Role, string>>;
  /** The processor's kafkajs requestTimeout when it is not createKafka's 30 s (produce-timeout schedules). */
  readonly processorRequestTimeoutMs?: number;
  readonly faults: readonly PlannedFault[];
}

export interface PlanOptions {
  /** Force the fault type instead of the seed's. */
  readonly type?: FaultType;
  /** @default 1 */
  readonly rateScale?: number;
}

/** The fault type a seed gets: the types in turn, so any 11 consecutive seeds cover all of them. */
export function faultTypeForSeed(seed: number): FaultType {
  const n = FAULT_TYPES.length;
  return FAULT_TYPES[(((seed - 1) % n) + n) % n] as FaultType;
}

function between(random: () => number, min: number, max: number): number {
  return min + Math.floor(random() * (max - min + 1));
}

function planFault(
  type: PrimaryFaultType,
  random: () => number,
  atMs: number,
  ids: Readonly<Record<Role, string>>,
): PlannedFault {
  const request = (target: Role, kind: "drop-request" | "drop-response", apiKey: number, times: number) => ({
    type,
    atMs,
    target,
    inject: { kind, apiKey, clientId: ids[target], times } as Fault,
    // Long enough for a send's retries (with their backoff) to use up a fault of many times.
    durationMs: times > 3 ? 12_000 : between(random, 1500, 3000),
  });
  // Once to three times: within what the retries of one send absorb, mostly. Six or seven, now and then: more than
  // any retry budget (the sender's, kafkajs's), so the send fails and the batch is reported (partly) unwritten.
  const produceTimes = () => (random() < 0.3 ? between(random, 6, 7) : between(random, 1, 3));
  switch (type) {
    case "produce-drop-request":
      return request("processor", "drop-request", API_KEY.produce, produceTimes());
    case "produce-drop-response":
      return request("processor", "drop-response", API_KEY.produce, produceTimes());
    case "produce-timeout":
      return {
        type,
        atMs,
        target: "processor",
        inject: {
          kind: "delay-response",
          apiKey: API_KEY.produce,
          clientId: ids.processor,
          times: between(random, 1, 4),
          ms: SHORT_REQUEST_TIMEOUT_MS + between(random, 500, 2000),
        },
        durationMs: between(random, 1500, 3000),
      };
    case "commit-lost":
      return request("harness", "drop-response", API_KEY.offsetCommit, between(random, 1, 3));
    case "fetch-dropped":
      return request("harness", "drop-request", API_KEY.fetch, between(random, 1, 4));
    case "generator-produce-fault":
      return request("generator", random() < 0.5 ? "drop-response" : "drop-request", API_KEY.produce, produceTimes());
    case "connections-refused":
      return { type, atMs, durationMs: between(random, 1000, 4000) };
    case "connections-dropped":
      return { type, atMs, drops: between(random, 1, 3), gapMs: between(random, 200, 1000) };
    case "processed-refused":
      return { type, atMs, maxMessageBytes: 200, durationMs: between(random, 2000, 6000) };
    case "topic-recreated":
      return { type, atMs, holdMs: between(random, 0, 1000) };
  }
}

/** The schedule for a seed: deterministic, printable with describePlan. */
export function planSchedule(seed: number, options: PlanOptions = {}): ChaosPlan {
  const random = seededRandom(seed * 0x9e3779b1);
  const type = options.type ?? faultTypeForSeed(seed);
  const clientIds = {
    generator: `chaos-${seed}-generator`,
    harness: `chaos-${seed}-harness`,
    processor: `chaos-${seed}-processor`,
  };
  const rate = Math.round(between(random, 200, 400) * (options.rateScale ?? 1));
  const generateMs = between(random, 2000, 4000);
  const partialBatchResponse = random() >= 0.25;
  const harness = {
    batchSize: between(random, 20, 200),
    batchWindowMs: between(random, 20, 100),
    retryBackoffMs: 100,
    maxRetryBackoffMs: 1000,
    sessionTimeoutMs: between(random, 6000, 10_000),
  };
  const types: PrimaryFaultType[] = [];
  if (type === "mixed") {
    const pool = [...MIXABLE];
    const count = between(random, 2, 3);
    for (let i = 0; i < count; i++)
      types.push(pool.splice(between(random, 0, pool.length - 1), 1)[0] as PrimaryFaultType);
  } else types.push(type);
  const faults = types
    .map((t) =>
      planFault(
        t,
        random,
        between(random, t === "topic-recreated" ? 800 : 300, Math.round(generateMs * 0.6)),
        clientIds,
      ),
    )
    .sort((a, b) => a.atMs - b.atMs);
  return {
    seed,
    type,
    partialBatchResponse,
    rate,
    generateMs,
    tailMs: 750,
    invalidRatio: 0.1,
    harness,
    clientIds,
    ...(types.includes("produce-timeout") ? { processorRequestTimeoutMs: SHORT_REQUEST_TIMEOUT_MS } : {}),
    faults,
  };
}

const API_NAMES: Record<number, string> = { 0: "Produce", 1: "Fetch", 8: "OffsetCommit" };

function describeFault(fault: PlannedFault): string {
  const head = `+${fault.atMs} ms ${fault.type}:`;
  const injected = fault.inject;
  if (injected) {
    const times = injected.times === Number.POSITIVE_INFINITY ? "until cleared" : `${injected.times ?? 1}x`;
    const api =
      injected.apiKey === undefined ? "any request" : `${API_NAMES[injected.apiKey]} (apiKey ${injected.apiKey})`;
    const delay = injected.kind === "delay-response" ? ` by ${injected.ms} ms` : "";
    return `${head} ${injected.kind}${delay} on ${api} from ${String(injected.clientId)}, ${times}, armed until used up or for ${fault.durationMs} ms (longer until it fires once)`;
  }
  switch (fault.type) {
    case "connections-refused":
      return `${head} refuse new connections and drop all live ones, for ${fault.durationMs} ms`;
    case "connections-dropped":
      return `${head} drop all live connections ${fault.drops}x, ${fault.gapMs} ms apart`;
    case "processed-refused":
      return `${head} processed topic max.message.bytes ${fault.maxMessageBytes} for ${fault.durationMs} ms (DLQ unchanged)`;
    case "topic-recreated":
      return `${head} block the processor's Produce, snapshot, delete and re-create the processed topic, hold ${fault.holdMs} ms more`;
    default:
      return head;
  }
}

/** The plan as text, one fault a line. */
export function describePlan(plan: ChaosPlan): string {
  const h = plan.harness;
  return [
    `seed ${plan.seed} ${plan.type}: ${plan.rate} events/s for ${plan.generateMs} ms and ${plan.tailMs} ms past the last fault ` +
      `(${plan.invalidRatio * 100}% invalid), ` +
      `PARTIAL_BATCH_RESPONSE=${plan.partialBatchResponse}, harness batch ${h.batchSize} / ${h.batchWindowMs} ms, ` +
      `backoff ${h.retryBackoffMs}..${h.maxRetryBackoffMs} ms, session ${h.sessionTimeoutMs} ms` +
      (plan.processorRequestTimeoutMs ? `, processor requestTimeout ${plan.processorRequestTimeoutMs} ms` : ""),
    ...plan.faults.map((fault) => `  ${describeFault(fault)}`),
  ].join("\n");
}

export const replayCommand = (seed: number) => `CHAOS_SEEDS=${seed} npx vitest run test/integration/chaos.test.ts`;

export interface ChaosEnvironment {
  /** Bootstrap servers of the direct listener (topic admin, broker-side faults, reading, accounting). */
  readonly brokers: string;
  /** Bootstrap servers that lead through the proxy (the broker's PROXIED listener). */
  readonly proxiedBrokers: string;
  readonly proxy: FaultProxy;
  /** How long the group's lag may take to reach zero after the faults. @default 60000 */
  readonly settleTimeoutMs?: number;
  /** Progress lines. @default silent */
  readonly log?: (line: string) => void;
  /** Delete the schedule's topics after a clean accounting. @default true */
  readonly deleteTopics?: boolean;
}

/** How often each planned fault fired. */
export interface FaultFiring {
  readonly type: PrimaryFaultType;
  /** Times it took effect: requests it applied to, connections refused or dropped, sends refused, recreations. */
  fired: number;
  detail: string;
}

export interface ProcessorCounters {
  invocations: number;
  /** Invocations that threw or named failed records. */
  failedInvocations: number;
  /** Failed sends, by cause. */
  sendErrors: Record<"tooLarge" | "timeout" | "network" | "unknownTopic" | "other", number>;
  /** Producers connected / discarded after a failed send. */
  connects: number;
  discards: number;
}

export interface ScheduleResult {
  readonly plan: ChaosPlan;
  readonly topics: { source: string; processed: string; deadLetter: string; esmFailures: string };
  readonly accounting: Accounting;
  readonly generator: RunSummary;
  readonly firings: FaultFiring[];
  /** The proxy's counters over this schedule. */
  readonly proxy: {
    connections: number;
    refused: number;
    faults: Record<FaultKind, number>;
    requests: Record<number, number>;
  };
  /** Broker-side faults this schedule applied. */
  readonly broker: { alterations: number; recreations: number; snapshotRecords: number };
  readonly processor: ProcessorCounters;
  readonly harness: {
    invocations: number;
    failedInvocations: number;
    recordsDelivered: number;
    parked: number;
    timedOut: number;
  };
  /** ms from the generator's start until the group's lag was zero after the faults, or undefined if it never was. */
  readonly settledMs: number | undefined;
  readonly elapsedMs: number;
  /**
   * Proxied connections still open, and silent, after every client was stopped: sockets kafkajs 2.2.4 opened and
   * orphaned. Its Connection.connect() does not share a connect in progress, so two requests that find a dropped
   * connection (two partitions committing at once, say) each open a socket; the first is replaced and never closed.
   * Reported, not failed (nothing is lost or stuck, and no request goes through them); the proxy cuts them.
   */
  readonly leftoverConnections: number;
  /** Requests through the proxy after every client was stopped: a client still running. Must be 0. */
  readonly requestsAfterStop: number;
}

/** The checks a schedule must pass; empty when it did. */
export function scheduleProblems(result: ScheduleResult): string[] {
  const problems: string[] = [];
  const a = result.accounting;
  if (result.settledMs === undefined) problems.push(`the group's lag did not reach 0 (lag ${a.lag}): a wedge`);
  if (a.missing.length > 0)
    problems.push(`${a.missing.length} missing (no output): ${a.missing.slice(0, 10).join(", ")}`);
  if (a.orphans.length > 0) problems.push(`${a.orphans.length} orphans: ${a.orphans.slice(0, 10).join(", ")}`);
  if (a.lag !== 0) problems.push(`lag ${a.lag} at the accounting`);
  if (a.inputs === 0) problems.push("no inputs: the generator wrote nothing");
  if (a.outputs < a.inputs) problems.push(`${a.outputs} outputs for ${a.inputs} inputs`);
  for (const firing of result.firings) {
    if (firing.fired <= 0) problems.push(`the planned ${firing.type} never fired (${firing.detail}): proves nothing`);
  }
  if (result.requestsAfterStop > 0) {
    problems.push(`${result.requestsAfterStop} requests through the proxy after every client was stopped`);
  }
  return problems;
}

export function resultLine(result: ScheduleResult): string {
  const a = result.accounting;
  const problems = scheduleProblems(result);
  const fired = result.firings.map((f) => `${f.type} x${f.fired}`).join(", ");
  return (
    `seed ${result.plan.seed} ${result.plan.type}: ${a.inputs} inputs, ${a.outputs} outputs (${a.processed} processed, ` +
    `${a.deadLettered} dead-lettered), ${a.missing.length} missing, ${a.orphans.length} orphans, ${a.duplicates} duplicates, ` +
    `lag ${a.lag}; fired ${fired}; settled ${result.settledMs === undefined ? "never" : `${result.settledMs} ms`}, ` +
    (result.leftoverConnections > 0 ? `${result.leftoverConnections} orphaned kafkajs sockets cut, ` : "") +
    `${(result.elapsedMs / 1000).toFixed(1)} s -> ${problems.length === 0 ? "OK" : `FAILED: ${problems.join("; ")}`}`
  );
}

/** Everything needed to understand and replay a failed schedule. */
export function failureText(result: ScheduleResult): string {
  return [
    `chaos schedule failed: ${scheduleProblems(result).join("; ")}`,
    describePlan(result.plan),
    resultLine(result),
    `processor: ${JSON.stringify(result.processor)}; harness: ${JSON.stringify(result.harness)}; proxy: ${JSON.stringify(result.proxy)}`,
    `replay: ${replayCommand(result.plan.seed)}`,
  ].join("\n");
}

export interface SummaryRow {
  /** A fault type, or "total". */
  type: string;
  schedules: number;
  failed: number;
  inputs: number;
  /** Source records beyond what the generator counted as sent: batches it wrote more than once (lost responses). */
  resent: number;
  outputs: number;
  missing: number;
  orphans: number;
  duplicates: number;
  fired: number;
}

const COUNTS = [
  "schedules",
  "failed",
  "inputs",
  "resent",
  "outputs",
  "missing",
  "orphans",
  "duplicates",
  "fired",
] as const;

/** Per fault type (in FAULT_TYPES order, types without schedules left out), then a "total" row. */
export function summarize(results: readonly ScheduleResult[]): SummaryRow[] {
  const empty = (type: string): SummaryRow =>
    ({ type, ...Object.fromEntries(COUNTS.map((c) => [c, 0])) }) as SummaryRow;
  const rows: SummaryRow[] = [];
  const total = empty("total");
  for (const type of FAULT_TYPES) {
    const of = results.filter((r) => r.plan.type === type);
    if (of.length === 0) continue;
    const row = empty(type);
    for (const r of of) {
      row.schedules++;
      if (scheduleProblems(r).length > 0) row.failed++;
      row.inputs += r.accounting.inputs;
      row.resent += Math.max(0, r.accounting.inputs - r.generator.sent);
      row.outputs += r.accounting.outputs;
      row.missing += r.accounting.missing.length;
      row.orphans += r.accounting.orphans.length;
      row.duplicates += r.accounting.duplicates;
      row.fired += r.firings.reduce((n, f) => n + f.fired, 0);
    }
    rows.push(row);
    for (const count of COUNTS) total[count] += row[count];
  }
  rows.push(total);
  return rows;
}

/** The summary as a fixed-width table. */
export function summaryTable(results: readonly ScheduleResult[]): string {
  const columns = ["type", ...COUNTS] as const;
  const cells = [columns.map(String), ...summarize(results).map((row) => columns.map((c) => String(row[c])))];
  const widths = columns.map((_, i) => Math.max(...cells.map((line) => (line[i] as string).length)));
  return cells
    .map((line) =>
      line.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join("  "),
    )
    .join("\n");
}

/** A failed send's text: the error, its causes and aggregated errors. */
function errorText(error: unknown, depth = 0): string {
  if (!(error instanceof Error) || depth > 5) return String(error);
  const parts = [`${error.name}: ${error.message}`];
  const withMore = error as Error & { type?: string; errors?: unknown[] };
  if (withMore.type) parts.push(withMore.type);
  if (error.cause) parts.push(errorText(error.cause, depth + 1));
  for (const inner of withMore.errors ?? []) parts.push(errorText(inner, depth + 1));
  return parts.join(" | ");
}

function errorCategory(error: unknown): keyof ProcessorCounters["sendErrors"] {
  const text = errorText(error);
  if (/MESSAGE_TOO_LARGE|larger than the max message size/i.test(text)) return "tooLarge";
  if (/UNKNOWN_TOPIC|does not host this topic-partition|not present in metadata/i.test(text)) return "unknownTopic";
  if (/timed? ?out|RequestTimeout/i.test(text)) return "timeout";
  if (/ECONNRESET|ECONNREFUSED|EPIPE|connection|closed|socket/i.test(text)) return "network";
  return "other";
}

/**
 * The container sender with a kafkajs requestTimeout of its own. containerSender cannot take one (it builds its client
 * with createKafka, whose requestTimeout is 30 s): this is the same ProducerSlot + kafkaSender + createProducer
 * assembly on a client that differs only in requestTimeout (and its log routing).
 */
function shortTimeoutSender(config: ProcessorConfig, brokers: string, requestTimeoutMs: number) {
  const kafka = new Kafka({
    clientId: config.clientId,
    brokers: brokers.split(","),
    connectionTimeout: 3000,
    requestTimeout: requestTimeoutMs,
    retry: { retries: 3, initialRetryTime: 300, maxRetryTime: 5000 },
    logLevel: logLevel.NOTHING,
  });
  const slot = new ProducerSlot(async () => {
    const producer = createProducer(kafka);
    await producer.connect();
    return producer;
  });
  const sender = kafkaSender(
    slot,
    {
      requestBytes: config.produceChunkBytes,
      maxMessageBytes: {
        [config.topics.processed]: config.maxMessageBytes.processed,
        [config.topics.deadLetter]: config.maxMessageBytes.deadLetter,
      },
    },
    {},
    { compression: compressionType(config.outputCompression) },
  );
  return {
    async getSender(_event: MskEvent): Promise<OutputSender> {
      await slot.run(async () => {});
      return sender;
    },
    close: () => slot.close(),
    connects: () => slot.connects,
    discards: () => slot.discards,
  };
}

function requestTotal(stats: FaultProxyStats): number {
  return Object.values(stats.requests).reduce((n, count) => n + count, 0);
}

function proxySnapshot(stats: FaultProxyStats) {
  return {
    connections: stats.connections,
    refused: stats.refused,
    faults: { ...stats.faults },
    requests: { ...stats.requests },
  };
}

function proxyDelta(before: ReturnType<typeof proxySnapshot>, after: ReturnType<typeof proxySnapshot>) {
  const faults = { ...after.faults };
  for (const kind of Object.keys(faults) as FaultKind[]) faults[kind] -= before.faults[kind];
  const requests: Record<number, number> = {};
  for (const [key, n] of Object.entries(after.requests)) {
    const delta = n - (before.requests[Number(key)] ?? 0);
    if (delta > 0) requests[Number(key)] = delta;
  }
  return {
    connections: after.connections - before.connections,
    refused: after.refused - before.refused,
    faults,
    requests,
  };
}

/**
 * ConfigResourceTypes.TOPIC. kafkajs is CommonJS and Node's ESM loader does not see that named export (vitest's
 * transform does, tsx running bin/soak.ts does not), so the value is spelled out.
 */
const TOPIC_RESOURCE = 2 as ConfigResourceTypes;

async function setMaxMessageBytes(admin: Admin, topic: string, bytes: string): Promise<void> {
  await admin.alterConfigs({
    validateOnly: false,
    resources: [{ type: TOPIC_RESOURCE, name: topic, configEntries: [{ name: "max.message.bytes", value: bytes }] }],
  });
}

/** A fault whose window passed without it taking effect stays on this much longer, waiting to. */
export const FIRE_GRACE_MS = 8000;

/** Waits `ms`, then on until `fired()` holds or FIRE_GRACE_MS more have passed (or the signal aborts). */
async function holdUntil(ms: number, fired: () => boolean, signal: AbortSignal): Promise<void> {
  await sleep(ms, signal);
  const until = Date.now() + FIRE_GRACE_MS;
  while (!fired() && !signal.aborted && Date.now() < until) await sleep(100, signal);
}

async function recordCount(admin: Admin, topic: string): Promise<number> {
  const offsets = await admin.fetchTopicOffsets(topic);
  return offsets.reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
}

async function endOffsets(admin: Admin, topic: string): Promise<string> {
  const offsets = await admin.fetchTopicOffsets(topic);
  return offsets
    .sort((a, b) => a.partition - b.partition)
    .map((p) => `${p.partition}:${p.high}`)
    .join(",");
}

export class ChaosError extends Error {
  constructor(plan: ChaosPlan, message: string, options?: { cause?: unknown }) {
    super(
      `seed ${plan.seed} (${plan.type}): ${message}\n${describePlan(plan)}\nreplay: ${replayCommand(plan.seed)}`,
      options,
    );
    this.name = "ChaosError";
  }
}

/**
 * Runs one schedule: unique topics, harness and processor and generator through the proxy, the faults at their
 * times, then the faults cleared, the generator stopped, the group drained (bounded), everything stopped, and the
 * accounting read through the direct listener. Leaves no client, timer or fault behind, also when it throws.
 */
export async function runSchedule(plan: ChaosPlan, env: ChaosEnvironment): Promise<ScheduleResult> {
  const started = Date.now();
  const { proxy } = env;
  const log = env.log ?? (() => {});
  const id = `${plan.seed}-${randomUUID().slice(0, 8)}`;
  const topics = {
    source: `chaos-${id}`,
    processed: `chaos-processed-${id}`,
    deadLetter: `chaos-dlq-${id}`,
    esmFailures: `chaos-esm-failures-${id}`,
  };
  const groupId = `chaos-${id}`;
  const direct = createKafka({ brokers: env.brokers.split(","), clientId: `chaos-${plan.seed}-direct`, retries: 5 });
  const admin = direct.admin();
  const proxied = env.proxiedBrokers.split(",");

  // Which injected proxy fault fired how often: the proxy counts by kind only, so its decisions are tallied here.
  const tally = new Map<Fault, number>();
  const takeRequestFault = proxy.takeRequestFault;
  proxy.takeRequestFault = (apiKey, clientId) => {
    const fault = takeRequestFault.call(proxy, apiKey, clientId);
    if (fault) tally.set(fault, (tally.get(fault) ?? 0) + 1);
    return fault;
  };
  proxy.clear();
  proxy.refuseConnections(false);
  const proxyBefore = proxySnapshot(proxy.stats);
  const broker = { alterations: 0, recreations: 0, snapshotRecords: 0 };
  const firings: FaultFiring[] = plan.faults.map((f) => ({ type: f.type, fired: 0, detail: "not started" }));
  const processor: ProcessorCounters = {
    invocations: 0,
    failedInvocations: 0,
    sendErrors: { tooLarge: 0, timeout: 0, network: 0, unknownTopic: 0, other: 0 },
    connects: 0,
    discards: 0,
  };
  let snapshot: TopicRecord[] = [];
  let processedLimitLowered = false;
  const stopTimeline = new AbortController();
  const stopGenerator = new AbortController();
  let generating: Promise<RunSummary> | undefined;
  let generatorSlot: ProducerSlot | undefined;
  let harness: MskEventSourceHarness | undefined;
  let container: { close: () => Promise<void>; connects: () => number; discards: () => number } | undefined;
  let settledMs: number | undefined;
  let generator: RunSummary = { sent: 0, failed: 0, byKind: {}, elapsedMs: 0, rate: 0 };

  try {
    await admin.connect();
    await createTopics(admin, [
      { topic: topics.source, numPartitions: 3, configs: sizeConfigs("source") },
      { topic: topics.processed, numPartitions: 3, configs: sizeConfigs("processed") },
      { topic: topics.deadLetter, numPartitions: 1, configs: sizeConfigs("deadLetter") },
      { topic: topics.esmFailures, numPartitions: 1, configs: sizeConfigs("esmFailure") },
    ]);

    // The processor: the real handler, the container's sender (or the same assembly with a short requestTimeout).
    const config = loadProcessorConfig({
      KAFKA_BROKERS: env.proxiedBrokers,
      KAFKA_CLIENT_ID: plan.clientIds.processor,
      SOURCE_TOPIC: topics.source,
      PROCESSED_TOPIC: topics.processed,
      DLQ_TOPIC: topics.deadLetter,
      PARTIAL_BATCH_RESPONSE: String(plan.partialBatchResponse),
    });
    const sending = plan.processorRequestTimeoutMs
      ? shortTimeoutSender(config, env.proxiedBrokers, plan.processorRequestTimeoutMs)
      : containerSender(config);
    container = sending;
    const getSender = async (event: MskEvent): Promise<OutputSender> => {
      const sender = await sending.getSender(event);
      return {
        async send(outputs, options) {
          const result = await sender.send(outputs, options);
          if (result.error) processor.sendErrors[errorCategory(result.error)]++;
          return result;
        },
      };
    };
    const handler = createHandler({ config, getSender });
    const invoke = async (event: MskEvent) => {
      processor.invocations++;
      try {
        const response = (await handler(event, {} as never)) as { batchItemFailures?: unknown[] };
        if ((response?.batchItemFailures?.length ?? 0) > 0) processor.failedInvocations++;
        return response;
      } catch (error) {
        processor.failedInvocations++;
        throw error;
      }
    };

    harness = new MskEventSourceHarness({
      kafka: createKafka({ brokers: proxied, clientId: plan.clientIds.harness, retries: 10 }),
      bootstrapServers: env.proxiedBrokers,
      topic: topics.source,
      groupId,
      // The deployed error handling (retries, bisect, record age), parking on this run's own failure topic.
      onFailureTopic: topics.esmFailures,
      ...plan.harness,
      invoke,
    });
    await harness.start();

    generatorSlot = producerSlot(createKafka({ brokers: proxied, clientId: plan.clientIds.generator }));
    const t0 = Date.now();
    generating = runGenerator({
      model: new GeneratorModel({ seed: plan.seed, invalidRatio: plan.invalidRatio }),
      sink: kafkaSink(generatorSlot, topics.source),
      rate: plan.rate,
      signal: stopGenerator.signal,
      retryMs: 100,
      maxRetryMs: 1000,
    });
    log(`seed ${plan.seed}: generating into ${topics.source}`);

    const apply = async (fault: PlannedFault, firing: FaultFiring) => {
      const signal = stopTimeline.signal;
      await sleep(Math.max(0, t0 + fault.atMs - Date.now()), signal);
      if (signal.aborted) return;
      firing.detail = "started";
      if (fault.inject) {
        const injected = { ...fault.inject };
        const faultId = proxy.inject(injected);
        // Armed until used up or its time is over, and on past that (a while) until it has fired at least once.
        const armedUntil = Date.now() + (fault.durationMs ?? 0);
        const usedUp = () => (tally.get(injected) ?? 0) >= (injected.times ?? 1);
        while (!signal.aborted && !usedUp() && Date.now() < armedUntil) await sleep(50, signal);
        if (!usedUp()) await holdUntil(0, () => (tally.get(injected) ?? 0) > 0, signal);
        proxy.clear(faultId);
        firing.fired = tally.get(injected) ?? 0;
        firing.detail = `${injected.kind} on apiKey ${injected.apiKey} from ${String(injected.clientId)}`;
        return;
      }
      switch (fault.type) {
        case "connections-refused": {
          const refused = proxy.stats.refused;
          const open = proxy.openConnections;
          proxy.refuseConnections(true);
          proxy.dropAll();
          await holdUntil(fault.durationMs ?? 0, () => proxy.stats.refused > refused, signal);
          proxy.refuseConnections(false);
          firing.fired = proxy.stats.refused - refused;
          firing.detail = `${open} connections dropped, ${firing.fired} refused`;
          return;
        }
        case "connections-dropped": {
          let dropped = 0;
          for (let i = 0; i < (fault.drops ?? 1) && !signal.aborted; i++) {
            if (i > 0) await sleep(fault.gapMs ?? 0, signal);
            dropped += proxy.openConnections;
            proxy.dropAll();
          }
          // Nothing was connected (another fault refusing connections, say): drop again once something is.
          const until = Date.now() + FIRE_GRACE_MS;
          while (dropped === 0 && !signal.aborted && Date.now() < until) {
            await sleep(100, signal);
            dropped += proxy.openConnections;
            proxy.dropAll();
          }
          firing.fired = dropped;
          firing.detail = `${dropped} connections dropped`;
          return;
        }
        case "processed-refused": {
          const refusedBefore = processor.sendErrors.tooLarge;
          processedLimitLowered = true;
          await setMaxMessageBytes(admin, topics.processed, String(fault.maxMessageBytes));
          broker.alterations++;
          await holdUntil(fault.durationMs ?? 0, () => processor.sendErrors.tooLarge > refusedBefore, signal);
          await setMaxMessageBytes(admin, topics.processed, sizeConfigs("processed")["max.message.bytes"] as string);
          processedLimitLowered = false;
          firing.fired = processor.sendErrors.tooLarge - refusedBefore;
          firing.detail = `${firing.fired} sends refused as too large`;
          return;
        }
        case "topic-recreated": {
          const block: Fault = {
            kind: "drop-request",
            apiKey: API_KEY.produce,
            clientId: plan.clientIds.processor,
            times: Number.POSITIVE_INFINITY,
          };
          // Something to snapshot first: the processor has written to the topic.
          const until = Date.now() + FIRE_GRACE_MS;
          while (!signal.aborted && Date.now() < until && (await recordCount(admin, topics.processed)) === 0) {
            await sleep(100, signal);
          }
          const blockId = proxy.inject(block);
          try {
            snapshot = await quiescentSnapshot(admin, direct, topics.processed);
            broker.snapshotRecords = snapshot.length;
            await recreateTopic(admin, {
              topic: topics.processed,
              numPartitions: 3,
              configs: sizeConfigs("processed"),
            });
            broker.recreations++;
            await sleep(fault.holdMs ?? 0, signal);
          } finally {
            proxy.clear(blockId);
          }
          firing.fired = snapshot.length > 0 ? broker.recreations : 0;
          firing.detail = `recreated ${broker.recreations}x, ${snapshot.length} records in the snapshot, ${tally.get(block) ?? 0} produce requests blocked`;
          return;
        }
        default:
          return;
      }
    };
    const steps = await Promise.allSettled(
      plan.faults.map(async (fault, i) => {
        try {
          await apply(fault, firings[i] as FaultFiring);
        } catch (error) {
          // Cut the other steps' waits short (each cleans up after itself), then fail the schedule.
          stopTimeline.abort();
          throw error;
        }
      }),
    );
    const failedStep = steps.find((step): step is PromiseRejectedResult => step.status === "rejected");
    if (failedStep) {
      throw new ChaosError(plan, `a fault step failed: ${errorText(failedStep.reason)}`, { cause: failedStep.reason });
    }
    log(`seed ${plan.seed}: faults done`);
    // Traffic after the last fault too: the recovery is under load.
    await sleep(Math.max(0, t0 + plan.generateMs - Date.now(), plan.tailMs));
    proxy.clear();
    proxy.refuseConnections(false);
    stopGenerator.abort();
    generator = await generating;
    generating = undefined;
    await generatorSlot.close();
    generatorSlot = undefined;
    log(`seed ${plan.seed}: generator stopped (${generator.sent} sent), waiting for the group's lag`);

    const deadline = Date.now() + (env.settleTimeoutMs ?? 60_000);
    while (Date.now() < deadline) {
      const lag = await groupLagWith(admin, groupId, topics.source).catch(() => -1);
      if (lag === 0) {
        settledMs = Date.now() - t0;
        break;
      }
      await sleep(250);
    }
  } finally {
    stopTimeline.abort();
    stopGenerator.abort();
    proxy.clear();
    proxy.refuseConnections(false);
    await generating?.catch(() => undefined);
    await generatorSlot?.close().catch(() => {});
    log(`seed ${plan.seed}: stopping (settled ${settledMs ?? "never"})`);
    await harness?.stop().catch((error: unknown) => log(`seed ${plan.seed}: harness.stop failed: ${errorText(error)}`));
    await container?.close().catch(() => {});
    if (processedLimitLowered) {
      await setMaxMessageBytes(admin, topics.processed, sizeConfigs("processed")["max.message.bytes"] as string).catch(
        () => {},
      );
    }
    proxy.takeRequestFault = takeRequestFault;
    log(`seed ${plan.seed}: stopped`);
  }

  try {
    processor.connects = container?.connects() ?? 0;
    processor.discards = container?.discards() ?? 0;
    const requestsAtStop = requestTotal(proxy.stats);
    const accounting = await account(direct, topics, groupId, { processed: snapshot });
    // Every client has disconnected: the proxy should see its connections close, and no more requests.
    for (let i = 0; i < 20 && proxy.openConnections > 0; i++) await sleep(50);
    const requestsAfterStop = requestTotal(proxy.stats) - requestsAtStop;
    // What is still open sends nothing: sockets kafkajs opened and orphaned (see leftoverConnections). Cut them.
    const leftoverConnections = proxy.openConnections;
    proxy.dropAll();
    const result: ScheduleResult = {
      plan,
      topics,
      accounting,
      generator,
      firings,
      proxy: proxyDelta(proxyBefore, proxySnapshot(proxy.stats)),
      broker,
      processor,
      harness: {
        invocations: harness?.stats.invocations ?? 0,
        failedInvocations: harness?.stats.failedInvocations ?? 0,
        recordsDelivered: harness?.stats.recordsDelivered ?? 0,
        parked: harness?.stats.parked ?? 0,
        timedOut: harness?.stats.timedOut ?? 0,
      },
      settledMs,
      elapsedMs: Date.now() - started,
      leftoverConnections,
      requestsAfterStop,
    };
    if (env.deleteTopics !== false && scheduleProblems(result).length === 0) {
      await admin.deleteTopics({ topics: Object.values(topics) }).catch(() => {});
      await admin.deleteGroups([groupId]).catch(() => {});
    }
    return result;
  } finally {
    await admin.disconnect();
  }
}

/**
 * The topic's records once its end offsets hold still (nothing is writing: the caller blocked the writers), read
 * through the direct listener, and checked against the end offsets again afterwards.
 */
async function quiescentSnapshot(admin: Admin, kafka: Kafka, topic: string): Promise<TopicRecord[]> {
  for (let attempt = 0; attempt < 20; attempt++) {
    await sleep(300);
    const before = await endOffsets(admin, topic);
    await sleep(300);
    if ((await endOffsets(admin, topic)) !== before) continue;
    const records = await readTopic(kafka, topic);
    if ((await endOffsets(admin, topic)) === before) return records;
  }
  throw new Error(`${topic} kept growing while its writers were blocked`);
}

/** Polls `check` (an error counts as false) every 100 ms until it holds; throws after `timeoutMs`. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`gave up after ${timeoutMs} ms waiting for ${what}${last ? ` (${errorText(last)})` : ""}`);
    }
    await sleep(100);
  }
}

interface TopicSpec {
  readonly topic: string;
  readonly numPartitions: number;
  readonly configs: Record<string, string>;
}

/** ensureTopics (it polls for leaders itself), retried while a busy broker answers errors. */
async function createTopics(admin: Admin, specs: readonly TopicSpec[]): Promise<void> {
  await until(`creating ${specs.map((s) => s.topic).join(", ")}`, async () => {
    await ensureTopicsWith(admin, specs);
    return true;
  });
}

/** Deletes the topic and creates it again with the same partitions and configs, waiting for its leaders. */
async function recreateTopic(admin: Admin, spec: TopicSpec): Promise<void> {
  await admin.deleteTopics({ topics: [spec.topic], timeout: 10_000 });
  await until(`${spec.topic} deleted`, async () => !(await admin.listTopics()).includes(spec.topic));
  await createTopics(admin, [spec]);
}
