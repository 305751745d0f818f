/**
 * The dead-letter workflow: what is in the DLQ (stats), what a dead letter looks like (peek, personal data masked),
 * and putting dead letters back (redrive) once the cause is fixed, remembering what was redriven in a consumer group
 * of its own so that a second run does not duplicate.
 */
import { isIPv6 } from "node:net";
import type { IHeaders, Kafka, Message } from "kafkajs";
import { HEADER } from "../core/process.ts";
import { RECORD_BATCH_OVERHEAD, recordBytes } from "../core/record-size.ts";
import { DEFAULT_MAX_MESSAGE_BYTES } from "../shared/config.ts";
import { createProducer } from "../shared/kafka.ts";
import { headerText, type ReadOptions, readTopic, type TopicRecord } from "./read-topic.ts";

export interface DeadLetter extends TopicRecord {
  readonly code: string;
  readonly message: string;
}

export interface Selection {
  /** Only this error.code. */
  readonly code?: string;
  /** Only dead letters written at or after this time (epoch ms). */
  readonly since?: number;
  /** Only dead letters written before this time (epoch ms). */
  readonly until?: number;
}

const selected = (letter: DeadLetter, selection: Selection) =>
  (selection.code === undefined || letter.code === selection.code) &&
  (selection.since === undefined || letter.timestamp >= selection.since) &&
  (selection.until === undefined || letter.timestamp < selection.until);

/** The DLQ's letters; with `read.maxValueBytes`, each value cut to that many bytes as it is read (for display). */
export async function readDeadLetters(
  kafka: Kafka,
  topic: string,
  selection: Selection = {},
  read: ReadOptions = {},
): Promise<DeadLetter[]> {
  return (await readTopic(kafka, topic, read.idleTimeoutMs ?? 30_000, undefined, read))
    .map((record) => ({
      ...record,
      code: headerText(record.headers, HEADER.errorCode) ?? "(none)",
      message: headerText(record.headers, HEADER.errorMessage) ?? "",
    }))
    .filter((letter) => selected(letter, selection));
}

export interface DlqStats {
  total: number;
  byCode: Record<string, number>;
  topMessages: { code: string; message: string; count: number }[];
  oldest: string | undefined;
  newest: string | undefined;
}

export function dlqStats(letters: readonly DeadLetter[], top = 10): DlqStats {
  const byCode: Record<string, number> = {};
  const messages = new Map<string, { code: string; message: string; count: number }>();
  let oldest = Number.POSITIVE_INFINITY;
  let newest = Number.NEGATIVE_INFINITY;
  for (const letter of letters) {
    byCode[letter.code] = (byCode[letter.code] ?? 0) + 1;
    const key = `${letter.code}\u0000${letter.message}`;
    const entry = messages.get(key) ?? { code: letter.code, message: letter.message, count: 0 };
    entry.count++;
    messages.set(key, entry);
    oldest = Math.min(oldest, letter.timestamp);
    newest = Math.max(newest, letter.timestamp);
  }
  return {
    total: letters.length,
    byCode,
    topMessages: [...messages.values()].sort((a, b) => b.count - a.count).slice(0, top),
    oldest: letters.length ? new Date(oldest).toISOString() : undefined,
    newest: letters.length ? new Date(newest).toISOString() : undefined,
  };
}

/** Personal fields, compared without case, `_` or `-`: user_id, User_Id, userId and user-id are one. */
const PERSONAL_KEYS = new Set(["ip", "deviceid", "userid"]);
const isPersonalKey = (key: string) => PERSONAL_KEYS.has(key.toLowerCase().replace(/[_-]/g, ""));
const IPV4 = /\b(?:\d{1,3}\.){3}\d{1,3}\b/g;
const UUID = /\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi;
/** Candidates for IPv6 addresses (checked with net.isIPv6: "12:30:45" or "std::string" are not). */
const IPV6_CANDIDATE = /(?<![0-9a-z:])[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}(?![0-9a-z:])/gi;
/** `"user_id": "…"`, `userId=…`, `'ip': 12` in text that is not JSON (a cut value, a log line, an error message). */
const PERSONAL_PAIR =
  /((["']?)(?:ip|device[_-]?id|user[_-]?id)\2\s*[:=]\s*)("(?:[^"\\]|\\.)*"?|'[^']*'?|[^\s,;&}\]"']+)/gi;

function maskString(value: string): string {
  return value.length <= 4 ? "****" : `${"*".repeat(Math.min(8, value.length - 4))}${value.slice(-4)}`;
}

/** Every string, number or boolean in it masked (a personal field's value, whatever its shape). */
function maskAll(value: unknown): unknown {
  if (value === null) return null;
  if (Array.isArray(value)) return value.map(maskAll);
  if (typeof value === "object") {
    return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, maskAll(v)]));
  }
  return maskString(String(value));
}

/** Personal fields masked at any depth, whatever their value's type. */
function maskFields(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(maskFields);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).map(([k, v]) => [
        k,
        isPersonalKey(k) ? maskAll(v) : maskFields(v),
      ]),
    );
  }
  return value;
}

/** IPv4 and IPv6 addresses and UUIDs anywhere in the text. */
function maskPatterns(text: string): string {
  return text
    .replace(UUID, (id) => maskString(id))
    .replace(IPV4, (ip) => maskString(ip))
    .replace(IPV6_CANDIDATE, (candidate) =>
      /[0-9a-f]/i.test(candidate) && isIPv6(candidate) ? maskString(candidate) : candidate,
    );
}

/**
 * A value for display: personal fields (ip, device_id, user_id, in any case or spelling, at any depth, whatever their
 * type) and anything like an IPv4 or IPv6 address or a UUID masked. Text that is not JSON (a value cut short, say) is
 * masked by pattern: `"user_id": "…"`-style pairs, addresses and UUIDs.
 */
export function maskPersonalData(text: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return maskPatterns(
      text.replace(PERSONAL_PAIR, (_pair, prefix: string, _quote: string, value: string) => {
        const quote = value[0] === '"' || value[0] === "'" ? value[0] : "";
        const inner = quote ? value.slice(1, value.endsWith(quote) && value.length > 1 ? -1 : undefined) : value;
        return `${prefix}${quote}${maskString(inner)}${quote && value.length > 1 && value.endsWith(quote) ? quote : ""}`;
      }),
    );
  }
  return maskPatterns(JSON.stringify(maskFields(parsed)));
}

/** A record key for display: masked whole (the generator's keys are user ids), its last four characters kept. */
export const maskKey = (key: string) => (key === "" ? "" : maskString(key));

export interface PeekLine {
  partition: number;
  offset: number;
  timestamp: string;
  key: string | null;
  headers: Record<string, string>;
  value: string | null;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The pipeline's own headers: metadata it writes (where a record came from, why it failed, where it was redriven from). */
const OWN_HEADER_NAMES = new Set<string>(Object.values(HEADER));
const PIPELINE_HEADERS = new Set<string>([...OWN_HEADER_NAMES, "redrive.from"]);

/**
 * A header value for display. The pipeline's own headers are metadata, shown with anything that looks like an IPv4
 * address or a UUID masked; every other header came with the source record, so its content is unknown and masked
 * whole (its last four characters kept, as for the personal fields).
 */
function maskHeader(name: string, text: string): string {
  if (PIPELINE_HEADERS.has(name)) return maskPersonalData(text);
  return text === "" ? "" : maskString(text);
}

/**
 * A dead letter (or any record: the console shows every topic so) for display: headers, key and the decoded value,
 * personal data masked unless `unmask`.
 */
export function peekLine(letter: TopicRecord, unmask: boolean): PeekLine {
  let value: string | null = null;
  if (letter.value !== null) {
    try {
      // A value cut as it was read may end inside a character: streaming decode leaves that character out.
      const cut = letter.valueBytes !== undefined && letter.valueBytes > letter.value.length;
      const text = cut
        ? new TextDecoder("utf-8", { fatal: true }).decode(letter.value, { stream: true })
        : utf8.decode(letter.value);
      value = unmask ? text : maskPersonalData(text);
    } catch {
      value = unmask ? `base64:${letter.value.toString("base64")}` : `<${letter.value.length} bytes, not UTF-8>`;
    }
  }
  const headers = Object.fromEntries(
    Object.keys(letter.headers).map((name) => {
      const text = headerText(letter.headers, name) ?? "";
      return [name, unmask ? text : maskHeader(name, text)];
    }),
  );
  const key = letter.key === null ? null : letter.key.toString();
  return {
    partition: letter.partition,
    offset: letter.offset,
    timestamp: new Date(letter.timestamp).toISOString(),
    key: key === null || unmask ? key : maskKey(key),
    headers,
    value,
  };
}

export interface RedriveOptions extends Selection {
  readonly from: string;
  readonly to: string;
  /** The consumer group that remembers how far redrive has read. */
  readonly group: string;
  readonly dryRun?: boolean;
  /** The target topic's max.message.bytes. @default Kafka's default, the source topic's (topic-settings.ts) */
  readonly maxRequestBytes?: number;
  /**
   * Read no further than these offsets (partition -> end offset, exclusive): a preview's `ends`, so that what is
   * redriven is what the preview showed, however many dead letters arrived since. @default the end offsets now
   */
  readonly upTo?: Readonly<Record<number, number>>;
  /** Publish only if exactly this many dead letters are selected (a preview's count); else RedriveConflictError. */
  readonly expectCount?: number;
}

export interface RedriveResult {
  /** Dead letters read past the group's position. */
  scanned: number;
  redriven: number;
  byCode: Record<string, number>;
  /** Per partition, where the group stands afterwards (unchanged with dryRun). */
  positions: Record<number, number>;
  /** Per partition, the end offset read up to: pass it back as `upTo` to redrive exactly what a preview showed. */
  ends: Record<number, number>;
  letters: DeadLetter[];
}

/** What was selected is no longer what the caller expected (a preview's count): nothing was published. */
export class RedriveConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RedriveConflictError";
  }
}

/** The redrive group is in use (another redrive, in another process, or a consumer): nothing was published. */
export class RedriveBusyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RedriveBusyError";
  }
}

/**
 * The headers a redriven record carries: the original record's own (not this pipeline's), plus where it came from.
 * Prototype-free, so any name passes; a null value goes out empty (kafkajs cannot encode null header values).
 */
const EMPTY = Buffer.alloc(0);

function redriveHeaders(letter: DeadLetter, from: string): IHeaders {
  const headers = Object.create(null) as IHeaders;
  for (const name of Object.keys(letter.headers)) {
    // Exactly this pipeline's own five: a user's `error.trace` or `source.app` goes back with the record.
    if (OWN_HEADER_NAMES.has(name)) continue;
    const value = letter.headers[name] as Buffer | null | (Buffer | null)[];
    headers[name] = Array.isArray(value) ? value.map((v) => v ?? EMPTY) : (value ?? EMPTY);
  }
  headers["redrive.from"] = `${from}/${letter.partition}/${letter.offset}`;
  return headers;
}

/**
 * Re-publishes the selected dead letters (original key, bytes and headers) to `to`, then moves the redrive group past
 * everything it read: a second run finds nothing new. Dead letters the selection skips are passed over for good by
 * this group (use another --group to select them later), except with `until`: a partition stops at its first dead
 * letter written at or after `until`, so later ones wait for a later run.
 *
 * Before publishing it checks that nothing else uses the group (its state Empty or Dead, else RedriveBusyError): the
 * group moves only once no member runs. Two redrives that both pass that check at the same moment can still both
 * publish; the console runs one at a time.
 */
export async function redrive(kafka: Kafka, options: RedriveOptions): Promise<RedriveResult> {
  if (options.since !== undefined && options.until !== undefined && options.since >= options.until) {
    throw new RangeError("since must be before until");
  }
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(options.from);
    const [committed] = await admin.fetchOffsets({ groupId: options.group, topics: [options.from] });
    const start = new Map((committed?.partitions ?? []).map((p) => [p.partition, Math.max(0, Number(p.offset))]));
    const from = (partition: number) => start.get(partition) ?? 0;
    const ends = new Map(
      offsets.map((p) => {
        const high = Number(p.high);
        const bound = options.upTo === undefined ? high : Math.min(high, options.upTo[p.partition] ?? 0);
        return [p.partition, Math.max(from(p.partition), bound)] as const;
      }),
    );
    const result: RedriveResult = {
      scanned: 0,
      redriven: 0,
      byCode: {},
      positions: {},
      ends: Object.fromEntries(ends),
      letters: [],
    };
    for (const p of offsets) result.positions[p.partition] = from(p.partition);
    const read = [...ends].some(([partition, end]) => end > from(partition))
      ? (await readDeadLetters(kafka, options.from)).filter(
          (letter) => letter.offset >= from(letter.partition) && letter.offset < (ends.get(letter.partition) ?? 0),
        )
      : [];
    // Where each partition's group position goes: its end, or (with until) its first letter at or after until.
    const moveTo = new Map(ends);
    if (options.until !== undefined) {
      for (const letter of read) {
        if (letter.timestamp >= options.until && letter.offset < (moveTo.get(letter.partition) ?? 0))
          moveTo.set(letter.partition, letter.offset);
      }
    }
    const letters = read.filter((letter) => letter.offset < (moveTo.get(letter.partition) ?? 0));
    result.scanned = letters.length;
    result.letters = letters.filter((letter) => selected(letter, options));
    result.redriven = result.letters.length;
    for (const letter of result.letters) result.byCode[letter.code] = (result.byCode[letter.code] ?? 0) + 1;
    if (options.dryRun) return result;
    if (options.expectCount !== undefined && result.redriven !== options.expectCount) {
      throw new RedriveConflictError(
        `the preview showed ${options.expectCount} dead letters to redrive, there are now ${result.redriven} ` +
          "(another redrive ran, or dead letters expired): preview again; nothing was published",
      );
    }
    const moves = [...moveTo].filter(([partition, offset]) => offset > from(partition));
    if (moves.length === 0) return result;
    const [group] = (await admin.describeGroups([options.group])).groups;
    if (group !== undefined && group.state !== "Empty" && group.state !== "Dead") {
      throw new RedriveBusyError(
        `the redrive group ${options.group} is in use (state ${group.state}, ${group.members.length} members): ` +
          "another redrive or a consumer is running in it; nothing was published",
      );
    }
    let published = 0;
    if (result.letters.length > 0) {
      const producer = createProducer(kafka);
      try {
        await producer.connect();
        const messages: Message[] = result.letters.map((letter) => ({
          key: letter.key,
          value: letter.value,
          headers: redriveHeaders(letter, options.from),
        }));
        // Requests within the target's max.message.bytes whatever partition a record lands on (see sender.ts).
        for (let i = 0; i < messages.length; ) {
          let end = i;
          let bytes = RECORD_BATCH_OVERHEAD;
          while (end < messages.length) {
            const m = messages[end] as Message;
            const size = recordBytes(m.key, m.value, m.headers as Record<string, Buffer>);
            if (end > i && bytes + size > (options.maxRequestBytes ?? DEFAULT_MAX_MESSAGE_BYTES)) break;
            bytes += size;
            end++;
          }
          await producer.send({ topic: options.to, acks: -1, messages: messages.slice(i, end) });
          published = end;
          i = end;
        }
      } catch (error) {
        throw new Error(
          `redrive to ${options.to} failed after ${published} of ${result.letters.length} records were published ` +
            `(the failing request may have been written too); the redrive group ${options.group} did not move, so ` +
            `a rerun publishes them again: ${(error as Error).message}`,
          { cause: error },
        );
      } finally {
        await producer.disconnect().catch(() => {});
      }
    }
    // Only after every selected record is written does the group move on: a crash before this redrives them again.
    try {
      await admin.setOffsets({
        groupId: options.group,
        topic: options.from,
        partitions: moves.map(([partition, offset]) => ({ partition, offset: String(offset) })),
      });
    } catch (error) {
      throw new Error(
        `${published} records were already published to ${options.to}, but the redrive group ${options.group} could ` +
          `not be moved past them (a rerun would publish them again; move it to ${JSON.stringify(Object.fromEntries(moves))} ` +
          `once nothing uses it): ${(error as Error).message}`,
        { cause: error },
      );
    }
    for (const [partition, offset] of moves) result.positions[partition] = offset;
    return result;
  } finally {
    await admin.disconnect();
  }
}
