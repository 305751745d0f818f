/**
 * The processing core: one MSK record in, exactly one record to produce out. Pure: no Kafka client, no AWS,
 * no clock (the caller passes processedAt), no I/O. The Lambda adapter, the local harness, the invoke CLI and the
 * benchmark all call this module.
 */

import type { ErrorObject } from "ajv";
import {
  isDigitsToken,
  isWholeNumberToken,
  jsonSyntaxError,
  MEMBER_CREATED_AT,
  MEMBER_OTHER,
  MEMBER_TIMESTAMP,
  type Member,
  memberSpans,
  objectMembers,
  SPAN_FIELDS,
} from "./json-text.ts";
import { type MskEvent, type MskRecord, partitionId } from "./msk.ts";
import { headerBytes, RECORD_BATCH_OVERHEAD, recordBytes, recordBytesWith } from "./record-size.ts";
import { describeSchemaErrors, type UserLogin, validateUserLogin } from "./schema.ts";

export const ERROR_CODES = [
  "EMPTY_VALUE",
  "INVALID_JSON",
  "SCHEMA_VIOLATION",
  "OUTPUT_TOO_LARGE",
  "PROCESSING_ERROR",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export const HEADER = {
  sourceTopic: "source.topic",
  sourcePartition: "source.partition",
  sourceOffset: "source.offset",
  errorCode: "error.code",
  errorMessage: "error.message",
} as const;
const OWN_HEADERS = new Set<string>(Object.values(HEADER));

/** A header value: bytes, text, or null (Kafka allows a header without a value). */
export type HeaderValue = Buffer | string | null;
/**
 * Kafka headers as an object without a prototype (a header named `constructor` or `__proto__` is just a name); a name
 * that occurs more than once in the source holds an array, in order.
 */
export type OutputHeaders = Record<string, HeaderValue | HeaderValue[]>;

export interface SourceCoordinates {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
}

interface OutputBase {
  readonly topic: string;
  readonly key: Buffer | string | null;
  readonly headers: OutputHeaders;
  readonly source: SourceCoordinates;
  /** The record's size inside a Kafka record batch (an upper bound; see record-size.ts). */
  readonly bytes: number;
}

export interface ProcessedOutput extends OutputBase {
  readonly kind: "processed";
  /** The transformed event as JSON text. */
  readonly value: string;
}

export interface DeadLetterOutput extends OutputBase {
  readonly kind: "dead-letter";
  /** The source record's value, byte for byte; null when it had none. */
  readonly value: Buffer | null;
  readonly errorCode: ErrorCode;
  readonly errorMessage: string;
}

export type OutputRecord = ProcessedOutput | DeadLetterOutput;

export interface Topics {
  /** @default "processed-user-login" */
  readonly processed: string;
  /** @default "user-login-dlq" */
  readonly deadLetter: string;
}

/** A compiled validator of the input contract (ajv's ValidateFunction shape). */
export interface InputValidator {
  (data: unknown): boolean;
  errors?: ErrorObject[] | null;
}

export interface ProcessOptions {
  readonly topics: Topics;
  /** ISO-8601 UTC time written to processed_at; one value per batch. */
  readonly processedAt: string;
  /** @default the compiled schemas/user-login.schema.json */
  readonly validate?: InputValidator;
  /**
   * The processed topic's `max.message.bytes`: a processed record that cannot fit becomes an OUTPUT_TOO_LARGE dead
   * letter. @default no limit
   */
  readonly maxProcessedBytes?: number;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
/** Longest error.message header, in characters. */
export const MAX_ERROR_MESSAGE = 1000;

function decodeBase64(text: string | null | undefined): Buffer | null {
  return text == null ? null : Buffer.from(text, "base64");
}

/** A header map without a prototype: every name is an own key, `__proto__` and `constructor` included. */
/**
 * The constructor of header maps: its prototype is an empty object without a prototype, so no name is inherited
 * (`constructor`, `toString` and `__proto__` are own names like any other, and absent until set), as with
 * Object.create(null); unlike Object.create(null), V8 keeps such objects in fast mode with a shared shape, which makes
 * creating and reading the headers of every record several times cheaper.
 */
function HeaderMap(): void {}
HeaderMap.prototype = Object.create(null);

export const newHeaders = (): OutputHeaders => new (HeaderMap as unknown as new () => OutputHeaders)();

/**
 * Buffer.from(array), about four times as fast for the short arrays of header values (Buffer.from goes through
 * fromArrayLike): a pooled allocation filled element by element, with the same conversion of each element (a
 * Uint8Array's).
 */
function bytesOf(bytes: readonly number[]): Buffer {
  const length = bytes.length;
  const buffer = Buffer.allocUnsafe(length);
  for (let k = 0; k < length; k++) buffer[k] = bytes[k] as number;
  return buffer;
}

/**
 * What the last sourceHeaders call built, in record bytes (headerBytes summed) and in headers: the processed record's
 * size without walking its headers again. Module state, read right after the call (the core is synchronous).
 */
let lastHeadersBytes = 0;
let lastHeaderCount = 0;
/** The topic whose source.topic header bytes are in lastTopicBytes (records of a batch share their topic). */
let lastTopic = "";
let lastTopicBytes = 0;

function sourceHeaders(record: MskRecord): OutputHeaders {
  const headers = newHeaders();
  let bytes = 0;
  let count = 0;
  if (record.headers) {
    for (const header of record.headers) {
      for (const name of Object.keys(header)) {
        // Our own headers describe this hop; a stale copy from an earlier hop (e.g. a redriven dead letter) is replaced.
        if (OWN_HEADERS.has(name)) continue;
        const array = header[name];
        if (array !== null && !Array.isArray(array)) throw new TypeError("a header value is not an array of bytes");
        const value = array === null ? null : bytesOf(array);
        bytes += headerBytes(name, value);
        count++;
        const existing = headers[name];
        if (existing === undefined) headers[name] = value;
        else if (Array.isArray(existing)) existing.push(value);
        else headers[name] = [existing, value];
      }
    }
  }
  const { topic } = record;
  const partition = String(record.partition);
  const offset = String(record.offset);
  headers[HEADER.sourceTopic] = topic;
  headers[HEADER.sourcePartition] = partition;
  headers[HEADER.sourceOffset] = offset;
  if (topic !== lastTopic) {
    lastTopicBytes = headerBytes(HEADER.sourceTopic, topic);
    lastTopic = topic;
  }
  bytes += lastTopicBytes + numberHeaderBytes(record.partition, HEADER.sourcePartition, partition);
  bytes += numberHeaderBytes(record.offset, HEADER.sourceOffset, offset);
  lastHeadersBytes = bytes;
  lastHeaderCount = count + 3;
  return headers;
}

/**
 * headerBytes of a header whose value is String(number): a number's text is ASCII (digits, sign, point, exponent)
 * and shorter than 128 characters, so one byte per character and a one-byte length. Anything else is measured.
 */
function numberHeaderBytes(number: unknown, name: string, text: string): number {
  if (typeof number !== "number") return headerBytes(name, text);
  return (name === HEADER.sourcePartition ? SOURCE_PARTITION_NAME_BYTES : SOURCE_OFFSET_NAME_BYTES) + 1 + text.length;
}
const SOURCE_PARTITION_NAME_BYTES = headerBytes(HEADER.sourcePartition, "") - 1;
const SOURCE_OFFSET_NAME_BYTES = headerBytes(HEADER.sourceOffset, "") - 1;

function coordinates(record: MskRecord): SourceCoordinates {
  return { topic: record.topic, partition: record.partition, offset: record.offset };
}

function deadLetter(
  record: MskRecord,
  value: Buffer | null | undefined,
  headers: OutputHeaders,
  topics: Topics,
  errorCode: ErrorCode,
  errorMessage: string,
): DeadLetterOutput {
  // A reason is a sentence, not a copy of the input: keep headers small whatever the record held.
  if (errorMessage.length > MAX_ERROR_MESSAGE) errorMessage = `${errorMessage.slice(0, MAX_ERROR_MESSAGE - 1)}…`;
  headers[HEADER.errorCode] = errorCode;
  headers[HEADER.errorMessage] = errorMessage;
  const key = decodeBase64(record.key);
  if (value === undefined) value = decodeBase64(record.value);
  return {
    kind: "dead-letter",
    topic: topics.deadLetter,
    key,
    value,
    headers,
    source: coordinates(record),
    bytes: recordBytes(key, value, headers),
    errorCode,
    errorMessage,
  };
}

/** Epoch seconds (number, or digit string already checked by the schema) as ISO-8601 UTC. */
// Records of one batch mostly share their second: remember the last conversion (Date#toISOString costs ~1 µs).
let lastSeconds = Number.NaN;
let lastIso = "";

export function toIsoSeconds(timestamp: number | string): string {
  const seconds = typeof timestamp === "number" ? timestamp : Number(timestamp);
  if (seconds !== lastSeconds) {
    lastIso = new Date(seconds * 1000).toISOString();
    lastSeconds = seconds;
  }
  return lastIso;
}

const TIMESTAMP = "timestamp";
const CREATED_AT = "created_at";
const PROCESSED_AT = "processed_at";

/**
 * The processed value from the input's own text: every member byte for byte, in order, except `timestamp` (left out)
 * and `created_at` / `processed_at` (set; in place when the input had them, else appended).
 */
function processedText(text: string, members: readonly Member[], createdAt: string, processedAt: string): string {
  let out = "{";
  let hasCreated = false;
  let hasProcessed = false;
  for (const member of members) {
    const { name } = member;
    if (name === TIMESTAMP) continue;
    if (out.length > 1) out += ",";
    if (name === CREATED_AT || name === PROCESSED_AT) {
      out += `${text.slice(member.start, member.valueStart)}"${name === CREATED_AT ? createdAt : processedAt}"`;
      if (name === CREATED_AT) hasCreated = true;
      else hasProcessed = true;
    } else out += text.slice(member.start, member.end);
  }
  if (!hasCreated) out += `${out.length > 1 ? "," : ""}"${CREATED_AT}":"${createdAt}"`;
  if (!hasProcessed) out += `,"${PROCESSED_AT}":"${processedAt}"`;
  return `${out}}`;
}

/** Member spans of the record being processed (memberSpans), reused from record to record. */
const SPANS: number[] = [];
const MAX_KEPT_SPANS = 4096;

/**
 * processedText from memberSpans's output: the same text (tests compare the two), without a Member object per member.
 */
function processedTextFromSpans(
  text: string,
  spans: readonly number[],
  count: number,
  createdAt: string,
  processedAt: string,
): string {
  let out = "{";
  let hasCreated = false;
  let hasProcessed = false;
  for (let m = 0; m < count; m++) {
    const at = m * SPAN_FIELDS;
    const kind = spans[at + 3];
    if (kind === MEMBER_TIMESTAMP) continue;
    if (out.length > 1) out += ",";
    if (kind === MEMBER_OTHER) out += text.slice(spans[at], spans[at + 2]);
    else {
      const created = kind === MEMBER_CREATED_AT;
      out += `${text.slice(spans[at], spans[at + 1])}"${created ? createdAt : processedAt}"`;
      if (created) hasCreated = true;
      else hasProcessed = true;
    }
  }
  if (!hasCreated) out += `${out.length > 1 ? "," : ""}"${CREATED_AT}":"${createdAt}"`;
  if (!hasProcessed) out += `,"${PROCESSED_AT}":"${processedAt}"`;
  return `${out}}`;
}

/**
 * Whether the members of a valid object may have a problem memberProblem would name: a repeated name (JSON.parse keeps
 * one own property per distinct name, so fewer properties than members) or a timestamp number that is not plain
 * digits. False is the common case and needs no Member objects; true sends the record through memberProblem.
 */
function mayHaveMemberProblem(text: string, parsed: object, spans: readonly number[], count: number): boolean {
  let names = 0;
  for (const _ in parsed) names++;
  if (names !== count) return true;
  for (let m = 0; m < count; m++) {
    const at = m * SPAN_FIELDS;
    if (spans[at + 3] !== MEMBER_TIMESTAMP) continue;
    const valueStart = spans[at + 1] as number;
    if (text.charCodeAt(valueStart) !== 0x22 && !isDigitsToken(text, valueStart, spans[at + 2] as number)) return true;
  }
  return false;
}

/** The problem with an event's members that the schema cannot see, or undefined. */
function memberProblem(text: string, members: readonly Member[], known: ReadonlySet<string>): string | undefined {
  const seen = new Set<string>();
  for (const member of members) {
    if (seen.has(member.name)) {
      // A name that is not the schema's is record bytes: say where, not what.
      const what = known.has(member.name) ? `/${member.name}` : `a property name at character ${member.start}`;
      return `${what} occurs more than once (property names must be unique)`;
    }
    seen.add(member.name);
    if (member.name === TIMESTAMP && text.charCodeAt(member.valueStart) !== 0x22) {
      if (!isWholeNumberToken(text.slice(member.valueStart, member.end))) {
        return "/timestamp must be a whole number of seconds (a fraction, if any, all zeros)";
      }
    }
  }
  return undefined;
}

const SCHEMA_PROPERTIES: ReadonlySet<string> = new Set([
  "user_id",
  "app_version",
  "device_type",
  "ip",
  "locale",
  "device_id",
  TIMESTAMP,
  CREATED_AT,
  PROCESSED_AT,
]);

/** An unexpected error as words of our own: its class, never its message (which may quote the input). */
const errorKind = (error: unknown): string => (error instanceof Error ? error.name : typeof error);

/** Where JSON.parse failed, as "kind at byte N", from our own scanner: never the text itself. */
function describeJsonError(text: string, value: Buffer, error: unknown): string {
  const syntax = jsonSyntaxError(text);
  if (!syntax) return `value is not valid JSON (${errorKind(error)})`;
  // Byte offset in the record's value; the decoder dropped a UTF-8 byte order mark, which is 3 bytes.
  const bom = value[0] === 0xef && value[1] === 0xbb && value[2] === 0xbf ? 3 : 0;
  return `value is not valid JSON: ${syntax.kind} at byte ${bom + Buffer.byteLength(text.slice(0, syntax.index))}`;
}

/**
 * The value's UTF-8 text straight from its base64 when that text is ASCII, as nearly every record's is: atob (native)
 * gives one character per byte, which for bytes below 0x80 is their UTF-8 text as well, without the Buffer and the
 * TextDecoder of the general path. Undefined when the value needs the general path: not a string, empty, refused by
 * atob (Buffer.from is lenient where atob is strict, e.g. "-" and "_"; where atob accepts, the two decode alike), or
 * not ASCII (UTF-8 must then be decoded, and refused, as before).
 */
function asciiText(base64: unknown): string | undefined {
  if (typeof base64 !== "string") return undefined;
  let text: string;
  try {
    text = atob(base64);
  } catch {
    return undefined;
  }
  // Buffer.byteLength counts two UTF-8 bytes for each character from 0x80 to 0xff: equal lengths mean ASCII.
  return text.length > 0 && Buffer.byteLength(text, "utf8") === text.length ? text : undefined;
}

/** Turns one MSK record into exactly one output record; never throws. */
export const processRecord = (record: MskRecord, options: ProcessOptions): OutputRecord =>
  processRecordVia(record, options, true);

/**
 * processRecord without its fast path (ASCII text straight from base64): the general path, which the differential
 * tests hold the fast path to.
 */
export const processRecordGenerally = (record: MskRecord, options: ProcessOptions): OutputRecord =>
  processRecordVia(record, options, false);

function processRecordVia(record: MskRecord, options: ProcessOptions, fast: boolean): OutputRecord {
  // The value's bytes; undefined until decoded (the fast path decodes them only for a dead letter).
  let value: Buffer | null | undefined;
  try {
    let text = fast ? asciiText(record.value) : undefined;
    const headers = sourceHeaders(record);
    if (text === undefined) {
      value = decodeBase64(record.value);
      if (value === null || value.length === 0) {
        const what =
          value === null ? "value is null (a tombstone or a record without a value)" : "value is empty (0 bytes)";
        return deadLetter(record, value, headers, options.topics, "EMPTY_VALUE", what);
      }
      try {
        text = utf8.decode(value);
      } catch {
        return deadLetter(record, value, headers, options.topics, "INVALID_JSON", "value is not valid UTF-8");
      }
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      value ??= decodeBase64(record.value) as Buffer;
      return deadLetter(record, value, headers, options.topics, "INVALID_JSON", describeJsonError(text, value, error));
    }
    const validate = options.validate ?? validateUserLogin;
    if (!validate(parsed)) {
      return deadLetter(
        record,
        value,
        headers,
        options.topics,
        "SCHEMA_VIOLATION",
        describeSchemaErrors(validate.errors),
      );
    }
    const event = parsed as UserLogin;
    let processed: string;
    if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) {
      // The hot path: spans without Member objects; anything unusual goes through memberProblem as before.
      const count = memberSpans(text, SPANS);
      if (mayHaveMemberProblem(text, parsed, SPANS, count)) {
        const problem = memberProblem(text, objectMembers(text), SCHEMA_PROPERTIES);
        if (problem) return deadLetter(record, value, headers, options.topics, "SCHEMA_VIOLATION", problem);
      }
      processed = processedTextFromSpans(text, SPANS, count, toIsoSeconds(event.timestamp), options.processedAt);
      // An object with thousands of members does not keep its spans for the container's lifetime.
      if (SPANS.length > MAX_KEPT_SPANS) SPANS.length = 0;
    } else {
      const members = objectMembers(text);
      const problem = memberProblem(text, members, SCHEMA_PROPERTIES);
      if (problem) return deadLetter(record, value, headers, options.topics, "SCHEMA_VIOLATION", problem);
      processed = processedText(text, members, toIsoSeconds(event.timestamp), options.processedAt);
    }
    const sourceKey = decodeBase64(record.key);
    const key = sourceKey !== null && sourceKey.length > 0 ? sourceKey : event.user_id;
    const bytes = recordBytesWith(key, processed, lastHeadersBytes, lastHeaderCount);
    const limit = options.maxProcessedBytes;
    if (limit !== undefined && RECORD_BATCH_OVERHEAD + bytes > limit) {
      const message =
        `the processed record would take ${RECORD_BATCH_OVERHEAD + bytes} bytes in a record batch, over ` +
        `${options.topics.processed}'s max.message.bytes of ${limit}`;
      return deadLetter(record, value, headers, options.topics, "OUTPUT_TOO_LARGE", message);
    }
    return {
      kind: "processed",
      topic: options.topics.processed,
      key,
      value: processed,
      headers,
      source: coordinates(record),
      bytes,
    };
  } catch (error) {
    // As on the general path, where the value is decoded first: its bytes, or null when they cannot be decoded.
    if (value === undefined) {
      try {
        value = decodeBase64(record.value);
      } catch {
        value = null;
      }
    }
    let headers: OutputHeaders;
    try {
      headers = sourceHeaders(record);
    } catch {
      headers = newHeaders();
      headers[HEADER.sourceTopic] = String(record.topic);
      headers[HEADER.sourcePartition] = String(record.partition);
      headers[HEADER.sourceOffset] = String(record.offset);
    }
    const message = `unexpected error (${errorKind(error)}) while processing the record`;
    return deadLetter(record, value, headers, options.topics, "PROCESSING_ERROR", message);
  }
}

/** Every record of the event, in the event's order (partition groups in order, offsets ascending within each). */
export function processEvent(event: MskEvent, options: ProcessOptions): OutputRecord[] {
  const outputs: OutputRecord[] = [];
  for (const group in event.records) {
    const records = event.records[group];
    if (!records) continue;
    for (const record of records) outputs.push(processRecord(record, options));
  }
  return outputs;
}

export interface BatchSummary {
  in: number;
  processed: number;
  deadLettered: number;
  deadLetteredByCode: Partial<Record<ErrorCode, number>>;
}

export function summarize(outputs: readonly OutputRecord[]): BatchSummary {
  const summary: BatchSummary = { in: outputs.length, processed: 0, deadLettered: 0, deadLetteredByCode: {} };
  for (const output of outputs) {
    if (output.kind === "processed") summary.processed++;
    else {
      summary.deadLettered++;
      summary.deadLetteredByCode[output.errorCode] = (summary.deadLetteredByCode[output.errorCode] ?? 0) + 1;
    }
  }
  return summary;
}

export interface BatchItemFailure {
  itemIdentifier: { partition: string; offset: number };
}

/**
 * Given outputs in event order and the indices of those not durably written, names the first unwritten source record
 * of each partition that has one: what Lambda's Kafka partial batch response expects.
 */
export function firstUnwrittenPerPartition(
  outputs: readonly OutputRecord[],
  unwritten: Iterable<number>,
): BatchItemFailure[] {
  const failures = new Map<string, number>();
  for (const i of unwritten) {
    const source = (outputs[i] as OutputRecord).source;
    const id = partitionId(source);
    const known = failures.get(id);
    if (known === undefined || source.offset < known) failures.set(id, source.offset);
  }
  return [...failures].map(([partition, offset]) => ({ itemIdentifier: { partition, offset } }));
}
