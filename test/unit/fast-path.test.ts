/**
 * The core's fast path (issue 15) against its general path, differentially: a value's ASCII text straight from its
 * base64 (atob), instead of Buffer.from + TextDecoder. Whatever the record, the two must give the same output: kind,
 * value bytes, key, headers, error code and message, size, coordinates.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { MskRecord } from "../../functions/core/msk.ts";
import { type OutputRecord, processRecord, processRecordGenerally } from "../../functions/core/process.ts";
import { validLogin } from "../support/msk.ts";

const options = {
  topics: { processed: "processed-user-login", deadLetter: "user-login-dlq" },
  processedAt: "2026-11-25T10:00:00.000Z",
};

/** Number and literal tokens, valid and not, written as they are. */
const ODD_TOKENS = [
  "0",
  "-0",
  "01",
  "-01",
  "1.",
  ".5",
  "1e",
  "1e+",
  "1E+2",
  "1e-7",
  "1e400",
  "-1e400",
  "2.5e-400",
  "0.0",
  "-",
  "+1",
  "1694479551.000",
  "1.694479551e9",
  "1694479551.0000000001",
  "9007199254740993",
  "123456789012345678901234567890",
  "0x10",
  "1_000",
  "Infinity",
  "NaN",
  "true",
  "tru",
  "false",
  "fals",
  "null",
  "nul",
  "nulll",
  "True",
  "1 2",
  '""',
  '"1694479551"',
  '"01"',
  "{}",
  "[]",
  '{"a":1}',
  "[1,2]",
];
/** Characters that matter to JSON, base64 or UTF-8, for mutations. */
const ODD_CHARS = [
  "\u0000",
  "\u0001",
  "\u001f",
  "\t",
  "\n",
  "\r",
  " ",
  "\u000b",
  "\u000c",
  '"',
  "\\",
  "/",
  "{",
  "}",
  "[",
  "]",
  ",",
  ":",
  "0",
  "-",
  "e",
  ".",
  "a",
  "\u007f",
  "é",
  "\u00a0",
  "\ufeff",
  "\u2028",
  "\ud800",
  "\udc00",
  "😀",
  "\\u0000",
  "\\ud800",
  '\\"',
  "\\n",
  "\\x",
];

const oddToken = fc.constantFrom(...ODD_TOKENS);
/** Spacing: mostly what JSON.stringify or a Python producer writes, sometimes what JSON allows or refuses. */
const space = fc.oneof(
  { weight: 30, arbitrary: fc.constantFrom("", " ") },
  { weight: 1, arbitrary: fc.constantFrom("  ", "\n", "\t", "\r\n", "\u00a0", "\ufeff") },
);
const name = fc.oneof(
  fc.constantFrom(
    "user_id",
    "app_version",
    "device_type",
    "ip",
    "locale",
    "device_id",
    "timestamp",
    "created_at",
    "processed_at",
    "__proto__",
    "constructor",
    "toString",
    "0",
    "1",
    "",
    "timestamps",
    "user_i",
    "u\\u0073er_id",
    "tim\\u0065stamp",
  ),
  fc.string({ maxLength: 8 }).map((s) => JSON.stringify(s).slice(1, -1)),
);
/** A member value as written: JSON of a generated value, an odd token, or a long or non-ASCII string. */
const valueText = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.oneof(fc.string({ maxLength: 12 }), fc.double(), fc.integer()).map((v) => JSON.stringify(v)),
  },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 1 }).map((v) => JSON.stringify(v)) },
  { weight: 3, arbitrary: oddToken },
  { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 20 }).map((s) => JSON.stringify(s)) },
  { weight: 1, arbitrary: fc.nat({ max: 70_000 }).map((n) => `"${"x".repeat(n)}"`) },
);
const member = fc.tuple(name, space, space, valueText).map(([n, a, b, v]) => `"${n}"${a}:${b}${v}`);

/** A login as its producer might write it: valid, or with extra, repeated, odd or missing members, odd spacing. */
const loginText = fc
  .tuple(
    fc.record({
      user_id: fc.oneof(fc.uuid(), fc.constantFrom("", "x", 5, null)),
      app_version: fc.constantFrom("2.3.0", "2.4.1", "", "1.0.0-ß"),
      device_type: fc.constantFrom("iOS", "Android", "", 1),
      ip: fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom("256.1.1.1", "", "::1")),
      locale: fc.constantFrom("IL", "de-DE", "en", "fr", "日本"),
      device_id: fc.uuid(),
      timestamp: fc.oneof(fc.nat(), fc.constantFrom("1694479551", 1.5, -1, 253402300800, "01", 1e21)),
    }),
    fc.array(member, { maxLength: 3 }),
    fc.subarray(["user_id", "ip", "timestamp", "device_type"]),
    fc.array(space, { minLength: 4, maxLength: 4 }),
  )
  .map(([login, extra, missing, [before, after, around, end]]) => {
    const members = Object.entries(login)
      .filter(([n]) => !missing.includes(n))
      .map(([n, v]) => `"${n}":${around}${JSON.stringify(v)}`);
    members.splice(extra.length % (members.length + 1), 0, ...extra);
    return `${before}{${after}${members.join(`${around},${after}`)}${around}}${end}`;
  });

/** Text edits: a character replaced or inserted, the text cut short, a BOM or junk around it. */
const mutated = fc
  .tuple(
    loginText,
    fc.nat(),
    fc.constantFrom(...ODD_CHARS),
    fc.constantFrom("replace", "insert", "truncate", "bom", "tail"),
  )
  .map(([text, at, c, how]) => {
    const i = at % (text.length + 1);
    if (how === "replace") return text.slice(0, i) + c + text.slice(i + 1);
    if (how === "insert") return text.slice(0, i) + c + text.slice(i);
    if (how === "truncate") return text.slice(0, i);
    return how === "bom" ? `\ufeff${text}` : `${text}${c}`;
  });
const text = fc.oneof({ weight: 5, arbitrary: loginText }, { weight: 3, arbitrary: mutated }, fc.json(), fc.string());

/** The value as bytes (UTF-8, sometimes with a byte changed: invalid UTF-8 too), then as base64, sometimes odd. */
const value = fc
  .tuple(
    text,
    fc.oneof({ weight: 4, arbitrary: fc.constant(null) }, fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }))),
  )
  .map(([t, flip]) => {
    const bytes = Buffer.from(t);
    if (flip && bytes.length > 0) bytes[flip[0] % bytes.length] = flip[1];
    return bytes;
  });
const base64 = fc
  .tuple(
    value,
    fc.oneof(
      { weight: 6, arbitrary: fc.constant("plain") },
      fc.constantFrom("unpadded", "url", "spaces", "newline", "junk", "pad"),
    ),
    fc.nat(),
  )
  .map(([bytes, how, at]) => {
    const b = bytes.toString("base64");
    const i = at % (b.length + 1);
    if (how === "unpadded") return b.replace(/=+$/, "");
    if (how === "url") return b.replace(/\+/g, "-").replace(/\//g, "_");
    if (how === "spaces") return `${b.slice(0, i)} ${b.slice(i)}`;
    if (how === "newline") return `${b.slice(0, i)}\n${b.slice(i)}`;
    if (how === "junk") return `${b.slice(0, i)}*${b.slice(i)}`;
    return how === "pad" ? `${b}=` : b;
  });

const record = fc
  .tuple(
    fc.oneof({ weight: 8, arbitrary: base64 }, fc.constantFrom(null, undefined, "", "====", "QQ", "QQ=", "=QQ")),
    fc.option(fc.uuid().map((k) => Buffer.from(k).toString("base64"))),
    fc.nat(),
  )
  .map(([v, key, offset]): MskRecord => {
    const r: MskRecord = {
      topic: "user-login",
      partition: offset % 3,
      offset,
      timestamp: 1_720_589_697_000,
      timestampType: "CREATE_TIME",
      headers: [{ "trace-id": [...Buffer.from(`t-${offset}`)] }],
      key,
    };
    if (v !== undefined) r.value = v;
    return r;
  });

/** Whether a record's value can take the fast path: base64 that atob accepts, of ASCII text that JSON.parse accepts. */
function fastCandidate(value: string | null | undefined): boolean {
  try {
    const text = atob(value ?? "");
    JSON.parse(text);
    return Buffer.byteLength(text) === text.length;
  } catch {
    return false;
  }
}

/** Everything an output carries, in comparable form. */
const comparable = (out: OutputRecord) => ({
  ...out,
  key: out.key === null ? null : Buffer.from(out.key).toString("hex"),
  value: out.value === null ? null : typeof out.value === "string" ? out.value : `bytes ${out.value.toString("hex")}`,
  headers: Object.entries(out.headers).map(([n, v]) => [n, Array.isArray(v) ? v.map(String) : String(v)]),
});

describe("atob against Buffer.from, the fast path's premise", () => {
  it("decodes alike whatever atob accepts: padding or not, whitespace, any alphabet", () => {
    const chars = fc.constantFrom(..."AZaz09+/=-_ \t\n\r\f\u000b.*é\u0000".split(""));
    const nearBase64 = fc.tuple(fc.uint8Array({ maxLength: 30 }), fc.nat(), chars).map(([b, at, c]) => {
      const s = Buffer.from(b).toString("base64");
      const i = at % (s.length + 1);
      return s.slice(0, i) + c + s.slice(i);
    });
    let accepted = 0;
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: chars, maxLength: 24 }), nearBase64), (s) => {
        let text: string;
        try {
          text = atob(s);
        } catch {
          return;
        }
        accepted++;
        expect(Buffer.from(text, "latin1").equals(Buffer.from(s, "base64"))).toBe(true);
      }),
      { numRuns: 20_000 },
    );
    expect(accepted).toBeGreaterThan(2_000);
  });
});

describe("processRecord against its general path", () => {
  it("gives the same output for any record: generated, mutated, odd base64, invalid UTF-8, empty", () => {
    let fast = 0;
    fc.assert(
      fc.property(record, (r) => {
        if (fastCandidate(r.value)) fast++;
        expect(comparable(processRecord(r, options))).toEqual(comparable(processRecordGenerally(r, options)));
      }),
      { numRuns: 20_000 },
    );
    // The property is about something: a good share of the records takes the fast path up to the schema.
    expect(fast).toBeGreaterThan(3_000);
  });

  it("gives the same output with an output limit, a value that is not a string, and a validator that throws", () => {
    const login = Buffer.from(JSON.stringify(validLogin())).toString("base64");
    const base: MskRecord = { topic: "t", partition: 0, offset: 7, timestamp: 0, timestampType: "CREATE_TIME" };
    const cases: [MskRecord, typeof options & Record<string, unknown>][] = [
      [
        { ...base, value: login },
        { ...options, maxProcessedBytes: 100 },
      ],
      [{ ...base, value: 1234 as unknown as string }, options],
      [{ ...base, value: login, headers: [{ h: "x" as unknown as number[] }] }, options],
      [
        { ...base, value: login },
        {
          ...options,
          validate: () => {
            throw new RangeError("no");
          },
        },
      ],
    ];
    for (const [r, o] of cases)
      expect(comparable(processRecord(r, o))).toEqual(comparable(processRecordGenerally(r, o)));
  });
});
