/**
 * The processing core: one MSK record in, exactly one record to produce out. Pure: no Kafka client, no AWS,
 * no clock (the caller passes processedAt), no I/O. The Lambda adapter, the local harness, the invoke CLI and the
 * benchmark all call this module.
 */

import type { ErrorObject } from "ajv";
import { type MskEvent, type MskRecord, partitionId } from "./msk.ts";
import { describeSchemaErrors, type UserLogin, validateUserLogin } from "./schema.ts";

export const ERROR_CODES = ["EMPTY_VALUE", "INVALID_JSON", "SCHEMA_VIOLATION", "PROCESSING_ERROR"] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export const HEADER = {
  sourceTopic: "source.topic",
  sourcePartition: "source.partition",
  sourceOffset: "source.offset",
  errorCode: "error.code",
  errorMessage: "error.message",
} as const;
const OWN_HEADERS = new Set<string>(Object.values(HEADER));

export type HeaderValue = Buffer | string;
/** Kafka headers as an object; a name that occurs more than once in the source holds an array, in order. */
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
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
/** Longest error.message header, in characters. */
export const MAX_ERROR_MESSAGE = 1000;

function decodeBase64(text: string | null | undefined): Buffer | null {
  return text == null ? null : Buffer.from(text, "base64");
}

function sourceHeaders(record: MskRecord): OutputHeaders {
  const headers: OutputHeaders = {};
  if (record.headers) {
    for (const header of record.headers) {
      for (const name in header) {
        // Our own headers describe this hop; a stale copy from an earlier hop (e.g. a redriven dead letter) is replaced.
        if (OWN_HEADERS.has(name)) continue;
        const bytes = header[name];
        if (!Array.isArray(bytes)) throw new TypeError(`header "${name}" is not an array of bytes`);
        const value = Buffer.from(bytes);
        const existing = headers[name];
        if (existing === undefined) headers[name] = value;
        else if (Array.isArray(existing)) existing.push(value);
        else headers[name] = [existing, value];
      }
    }
  }
  headers[HEADER.sourceTopic] = record.topic;
  headers[HEADER.sourcePartition] = String(record.partition);
  headers[HEADER.sourceOffset] = String(record.offset);
  return headers;
}

function coordinates(record: MskRecord): SourceCoordinates {
  return { topic: record.topic, partition: record.partition, offset: record.offset };
}

function deadLetter(
  record: MskRecord,
  value: Buffer | null,
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
  return {
    kind: "dead-letter",
    topic: topics.deadLetter,
    key,
    value,
    headers,
    source: coordinates(record),
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

function transform(
  record: MskRecord,
  event: UserLogin,
  headers: OutputHeaders,
  options: ProcessOptions,
): ProcessedOutput {
  const createdAt = toIsoSeconds(event.timestamp);
  // JSON.stringify leaves out properties whose value is undefined: cheaper than delete, and keeps key order.
  (event as Record<string, unknown>).timestamp = undefined;
  event.created_at = createdAt;
  event.processed_at = options.processedAt;
  const sourceKey = decodeBase64(record.key);
  return {
    kind: "processed",
    topic: options.topics.processed,
    key: sourceKey !== null && sourceKey.length > 0 ? sourceKey : event.user_id,
    value: JSON.stringify(event),
    headers,
    source: coordinates(record),
  };
}

const reason = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/** Turns one MSK record into exactly one output record; never throws. */
export function processRecord(record: MskRecord, options: ProcessOptions): OutputRecord {
  let value: Buffer | null = null;
  try {
    value = decodeBase64(record.value);
    const headers = sourceHeaders(record);
    if (value === null || value.length === 0) {
      const what =
        value === null ? "value is null (a tombstone or a record without a value)" : "value is empty (0 bytes)";
      return deadLetter(record, value, headers, options.topics, "EMPTY_VALUE", what);
    }
    let text: string;
    try {
      text = utf8.decode(value);
    } catch {
      return deadLetter(record, value, headers, options.topics, "INVALID_JSON", "value is not valid UTF-8");
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      return deadLetter(
        record,
        value,
        headers,
        options.topics,
        "INVALID_JSON",
        `value is not valid JSON: ${reason(error)}`,
      );
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
    return transform(record, parsed as UserLogin, headers, options);
  } catch (error) {
    let headers: OutputHeaders;
    try {
      headers = sourceHeaders(record);
    } catch {
      headers = {
        [HEADER.sourceTopic]: String(record.topic),
        [HEADER.sourcePartition]: String(record.partition),
        [HEADER.sourceOffset]: String(record.offset),
      };
    }
    return deadLetter(record, value, headers, options.topics, "PROCESSING_ERROR", `unexpected error: ${reason(error)}`);
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
 * Given outputs in event order of which the first `written` are durably written, names the first unwritten source
 * record of each partition that has one: what Lambda's Kafka partial batch response expects.
 */
export function firstUnwrittenPerPartition(outputs: readonly OutputRecord[], written: number): BatchItemFailure[] {
  const failures = new Map<string, number>();
  for (let i = written; i < outputs.length; i++) {
    const source = (outputs[i] as OutputRecord).source;
    const id = partitionId(source);
    const known = failures.get(id);
    if (known === undefined || source.offset < known) failures.set(id, source.offset);
  }
  return [...failures].map(([partition, offset]) => ({ itemIdentifier: { partition, offset } }));
}
