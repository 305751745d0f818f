import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { MskEvent, MskRecord } from "../../functions/core/msk.ts";
import type { OutputHeaders } from "../../functions/core/process.ts";

export const EVENTS_DIR = join(import.meta.dirname, "..", "events");

/** A fresh copy of a saved MSK event from test/events/. */
export function loadEvent(name: string): MskEvent {
  return JSON.parse(readFileSync(join(EVENTS_DIR, name), "utf8")) as MskEvent;
}

export interface RecordSpec {
  readonly value: string | Buffer | null | undefined;
  readonly key?: string | Buffer | null;
  readonly headers?: Record<string, string>;
  readonly topic?: string;
  readonly partition?: number;
  readonly offset?: number;
}

/** An MSK record as Lambda delivers it: base64 key and value, headers as byte arrays. */
export function mskRecord(spec: RecordSpec): MskRecord {
  const record: MskRecord = {
    topic: spec.topic ?? "user-login",
    partition: spec.partition ?? 0,
    offset: spec.offset ?? 0,
    timestamp: 1_720_589_697_000,
    timestampType: "CREATE_TIME",
    headers: Object.entries(spec.headers ?? {}).map(([name, value]) => ({ [name]: [...Buffer.from(value)] })),
  };
  if (spec.key != null) record.key = Buffer.from(spec.key).toString("base64");
  if (spec.value !== undefined) record.value = spec.value === null ? null : Buffer.from(spec.value).toString("base64");
  return record;
}

export function mskEvent(records: readonly MskRecord[]): MskEvent {
  const grouped: Record<string, MskRecord[]> = {};
  for (const record of records) {
    const id = `${record.topic}-${record.partition}`;
    const group = grouped[id] ?? [];
    group.push(record);
    grouped[id] = group;
  }
  return {
    eventSource: "aws:kafka",
    eventSourceArn: "arn:aws:kafka:us-east-1:123456789012:cluster/test/1",
    records: grouped,
  };
}

/** A header as text (first value when repeated). */
export function headerText(headers: OutputHeaders, name: string): string | undefined {
  const value = headers[name];
  const first = Array.isArray(value) ? value[0] : value;
  return first === undefined ? undefined : String(first);
}

export const validLogin = (overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
  user_id: "b22a51d5-0f2f-42e3-8505-f2f8d2b01060",
  app_version: "2.3.0",
  ip: "25.67.253.124",
  locale: "WA",
  device_id: "37e8136e-b36d-4717-aa68-dbfcaef4d499",
  timestamp: 1720589697,
  device_type: "iOS",
  ...overrides,
});
