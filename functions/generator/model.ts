/**
 * The event model of the user-login generator: pure and seeded, so a run is reproducible with --seed.
 *
 * By default it reproduces the real generator: `user_id` and `device_id` fresh UUIDv4s, `app_version` 2.3.0,
 * `device_type` android or iOS and absent in about 5% of messages (absent, never null), `ip` four random octets
 * (private and reserved ranges included), `locale` one of the 50 US state codes, `timestamp` integer epoch seconds
 * (now), the key a random UUIDv4 unrelated to `user_id`, JSON with Python's `", "` and `": "` separators.
 */
import type { ErrorCode } from "../core/process.ts";

// biome-ignore format: a table of codes reads better in rows
export const US_STATES = [
  "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS", "KY",
  "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC", "ND",
  "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY",
] as const;

/**
 * The deliberately bad records `--invalid-ratio` draws from, uniformly, and the DLQ code each must get.
 * A digit-string timestamp ("1694479551") is valid input (the exercise brief's own format), so the string kind
 * uses an ISO-8601 string instead.
 */
export const INVALID_KINDS = {
  "not-json": "INVALID_JSON",
  "invalid-utf8": "INVALID_JSON",
  "string-timestamp": "SCHEMA_VIOLATION",
  "float-timestamp": "SCHEMA_VIOLATION",
  "millisecond-timestamp": "SCHEMA_VIOLATION",
  "null-field": "SCHEMA_VIOLATION",
  "empty-string": "SCHEMA_VIOLATION",
  "bad-ip": "SCHEMA_VIOLATION",
  tombstone: "EMPTY_VALUE",
} as const satisfies Record<string, ErrorCode>;

export type InvalidKind = keyof typeof INVALID_KINDS;
export type RecordKind = "valid" | "missing-device-type" | InvalidKind;
const INVALID_KIND_NAMES = Object.keys(INVALID_KINDS) as InvalidKind[];

export interface GeneratedRecord {
  readonly kind: RecordKind;
  readonly key: string;
  /** UTF-8 JSON text, raw bytes (invalid-utf8), or null (tombstone). */
  readonly value: string | Buffer | null;
}

/** mulberry32: a small, fast, well-distributed 32-bit PRNG; floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** A UUIDv4 (RFC 9562 version and variant bits) from the given random source. */
export function uuidV4(random: () => number): string {
  const b: number[] = [];
  for (let i = 0; i < 4; i++) {
    const word = Math.floor(random() * 4294967296);
    b.push(word >>> 24, (word >>> 16) & 0xff, (word >>> 8) & 0xff, word & 0xff);
  }
  b[6] = ((b[6] as number) & 0x0f) | 0x40;
  b[8] = ((b[8] as number) & 0x3f) | 0x80;
  const h = b.map((byte) => HEX[byte]);
  return `${h[0]}${h[1]}${h[2]}${h[3]}-${h[4]}${h[5]}-${h[6]}${h[7]}-${h[8]}${h[9]}-${h[10]}${h[11]}${h[12]}${h[13]}${h[14]}${h[15]}`;
}

/** JSON as Python's json.dumps writes it by default, as the real generator does. */
export function pythonJson(object: Record<string, unknown>): string {
  const parts: string[] = [];
  for (const [name, value] of Object.entries(object)) parts.push(`${JSON.stringify(name)}: ${JSON.stringify(value)}`);
  return `{${parts.join(", ")}}`;
}

export interface ModelOptions {
  /** @default 0.05 */
  readonly missingDeviceTypeRatio?: number;
  /** @default 0 */
  readonly invalidRatio?: number;
  /** @default a random seed */
  readonly seed?: number;
  /** Reuse a pool of this many users (user_id, device_id, device_type); keys are then the user_id. @default none */
  readonly users?: number;
  /** Epoch milliseconds for timestamps. @default Date.now */
  readonly now?: () => number;
}

interface User {
  readonly userId: string;
  readonly deviceId: string;
  readonly deviceType: "android" | "iOS";
}

export class GeneratorModel {
  readonly seed: number;
  private readonly random: () => number;
  private readonly missingDeviceTypeRatio: number;
  private readonly invalidRatio: number;
  private readonly now: () => number;
  private readonly users: User[] | undefined;

  constructor(options: ModelOptions = {}) {
    this.seed = options.seed ?? Math.floor(Math.random() * 2 ** 32);
    this.random = seededRandom(this.seed);
    this.missingDeviceTypeRatio = options.missingDeviceTypeRatio ?? 0.05;
    this.invalidRatio = options.invalidRatio ?? 0;
    this.now = options.now ?? Date.now;
    if (options.users !== undefined) {
      this.users = Array.from({ length: options.users }, () => ({
        userId: uuidV4(this.random),
        deviceId: uuidV4(this.random),
        deviceType: this.random() < 0.5 ? "android" : "iOS",
      }));
    }
  }

  private pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.random() * items.length)] as T;
  }

  private octet(): number {
    return Math.floor(this.random() * 256);
  }

  /** A real-shaped event object, device_type included or not. */
  private event(withDeviceType: boolean): { key: string; event: Record<string, unknown> } {
    const user = this.users ? this.pick(this.users) : undefined;
    const event: Record<string, unknown> = {
      user_id: user?.userId ?? uuidV4(this.random),
      app_version: "2.3.0",
      ip: `${this.octet()}.${this.octet()}.${this.octet()}.${this.octet()}`,
      locale: this.pick(US_STATES),
      device_id: user?.deviceId ?? uuidV4(this.random),
      timestamp: Math.floor(this.now() / 1000),
    };
    const deviceType = user?.deviceType ?? (this.random() < 0.5 ? "android" : "iOS");
    if (withDeviceType) event.device_type = deviceType;
    return { key: user ? user.userId : uuidV4(this.random), event };
  }

  next(): GeneratedRecord {
    if (this.invalidRatio > 0 && this.random() < this.invalidRatio) return this.invalid(this.pick(INVALID_KIND_NAMES));
    const missing = this.random() < this.missingDeviceTypeRatio;
    const { key, event } = this.event(!missing);
    return { kind: missing ? "missing-device-type" : "valid", key, value: pythonJson(event) };
  }

  /** One record of the given bad kind. */
  invalid(kind: InvalidKind): GeneratedRecord {
    const { key, event } = this.event(true);
    const seconds = event.timestamp as number;
    switch (kind) {
      case "not-json":
        return { kind, key, value: pythonJson(event).slice(0, 40) };
      case "invalid-utf8": {
        const text = pythonJson(event);
        const at = text.indexOf('"locale": "') + 11;
        return {
          kind,
          key,
          value: Buffer.concat([
            Buffer.from(text.slice(0, at)),
            Buffer.from([0xff, 0xfe]),
            Buffer.from(text.slice(at)),
          ]),
        };
      }
      case "string-timestamp":
        return { kind, key, value: pythonJson({ ...event, timestamp: new Date(seconds * 1000).toISOString() }) };
      case "float-timestamp":
        return { kind, key, value: pythonJson({ ...event, timestamp: seconds + 0.25 }) };
      case "millisecond-timestamp":
        return { kind, key, value: pythonJson({ ...event, timestamp: seconds * 1000 + 123 }) };
      case "null-field":
        return { kind, key, value: pythonJson({ ...event, device_id: null }) };
      case "empty-string":
        return { kind, key, value: pythonJson({ ...event, user_id: "" }) };
      case "bad-ip":
        return { kind, key, value: pythonJson({ ...event, ip: `${256 + this.octet()}.1.1.1` }) };
      case "tombstone":
        return { kind, key, value: null };
    }
  }
}
