/**
 * The dead-letter workflow: what is in the DLQ (stats), what a dead letter looks like (peek, personal data masked),
 * and putting dead letters back (redrive) once the cause is fixed, remembering what was redriven in a consumer group
 * of its own so that a second run does not duplicate.
 */
import type { IHeaders, Kafka, Message } from "kafkajs";
import { HEADER } from "../core/process.ts";
import { RECORD_BATCH_OVERHEAD, recordBytes } from "../core/record-size.ts";
import { DEFAULT_MAX_MESSAGE_BYTES } from "../shared/config.ts";
import { createProducer } from "../shared/kafka.ts";
import { headerText, readTopic, type TopicRecord } from "./read-topic.ts";

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

export async function readDeadLetters(kafka: Kafka, topic: string, selection: Selection = {}): Promise<DeadLetter[]> {
  return (await readTopic(kafka, topic))
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

const PERSONAL_KEYS = new Set(["ip", "device_id", "user_id"]);
const IPV4 = /\b(?:\d{1,3}\.){3}\d{1,3}\b/g;
const UUID = /\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/gi;

function maskString(value: string): string {
  return value.length <= 4 ? "****" : `${"*".repeat(Math.min(8, value.length - 4))}${value.slice(-4)}`;
}

/** A value for display: personal fields (ip, device_id, user_id) and IP- or UUID-looking text masked. */
export function maskPersonalData(text: string): string {
  try {
    const parsed = JSON.parse(text) as unknown;
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
      const masked = Object.fromEntries(
        Object.entries(parsed).map(([k, v]) => [k, PERSONAL_KEYS.has(k) && typeof v === "string" ? maskString(v) : v]),
      );
      return JSON.stringify(masked)
        .replace(IPV4, (ip) => maskString(ip))
        .replace(UUID, (id) => maskString(id));
    }
  } catch {
    // not JSON: mask by pattern below
  }
  return text.replace(IPV4, (ip) => maskString(ip)).replace(UUID, (id) => maskString(id));
}

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
      const text = utf8.decode(letter.value);
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
    key: key === null || unmask ? key : maskPersonalData(key),
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
}

export interface RedriveResult {
  /** Dead letters read past the group's position. */
  scanned: number;
  redriven: number;
  byCode: Record<string, number>;
  /** Per partition, where the group stands afterwards (unchanged with dryRun). */
  positions: Record<number, number>;
  letters: DeadLetter[];
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
 * this group (use another --group to select them later).
 */
export async function redrive(kafka: Kafka, options: RedriveOptions): Promise<RedriveResult> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const ends = await admin.fetchTopicOffsets(options.from);
    const [committed] = await admin.fetchOffsets({ groupId: options.group, topics: [options.from] });
    const start = new Map((committed?.partitions ?? []).map((p) => [p.partition, Math.max(0, Number(p.offset))]));
    const pending = ends.filter((p) => Number(p.high) > (start.get(p.partition) ?? 0));
    const result: RedriveResult = { scanned: 0, redriven: 0, byCode: {}, positions: {}, letters: [] };
    for (const end of ends) result.positions[end.partition] = start.get(end.partition) ?? 0;
    if (pending.length === 0) return result;
    const letters = (await readDeadLetters(kafka, options.from)).filter(
      (letter) =>
        letter.offset >= (start.get(letter.partition) ?? 0) &&
        letter.offset < Number(ends.find((e) => e.partition === letter.partition)?.high),
    );
    result.scanned = letters.length;
    result.letters = letters.filter((letter) => selected(letter, options));
    result.redriven = result.letters.length;
    for (const letter of result.letters) result.byCode[letter.code] = (result.byCode[letter.code] ?? 0) + 1;
    if (options.dryRun) return result;
    if (result.letters.length > 0) {
      const producer = createProducer(kafka);
      await producer.connect();
      try {
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
          i = end;
        }
      } finally {
        await producer.disconnect();
      }
    }
    // Only after every selected record is written does the group move on: a crash before this redrives them again.
    await admin.setOffsets({
      groupId: options.group,
      topic: options.from,
      partitions: ends.map((end) => ({ partition: end.partition, offset: end.high })),
    });
    for (const end of ends) result.positions[end.partition] = Number(end.high);
    return result;
  } finally {
    await admin.disconnect();
  }
}
