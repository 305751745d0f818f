/**
 * Regressions of the "never lose, never wedge" review (one per defect), at the core: headers named like
 * Object.prototype members, faithful pass-through, whole-number timestamps, reasons without record bytes, and sizes
 * in UTF-8 bytes as the broker counts them.
 */
import { createRequire } from "node:module";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  isWholeNumberToken,
  jsonSyntaxError,
  kindOf,
  MEMBER_CREATED_AT,
  MEMBER_OTHER,
  MEMBER_PROCESSED_AT,
  MEMBER_TIMESTAMP,
  memberSpans,
  objectMembers,
} from "../../functions/core/json-text.ts";
import { type DeadLetterOutput, type OutputRecord, processRecord } from "../../functions/core/process.ts";
import { RECORD_BATCH_OVERHEAD, recordBytes } from "../../functions/core/record-size.ts";
import { nextRequest } from "../../functions/processor/sender.ts";
import { mskRecord, validLogin } from "../support/msk.ts";

const options = {
  topics: { processed: "processed-user-login", deadLetter: "user-login-dlq" },
  processedAt: "2026-11-25T10:00:00.000Z",
};
const run = (value: string | Buffer, extra: Partial<Parameters<typeof mskRecord>[0]> = {}) =>
  processRecord(mskRecord({ ...extra, value }), options);

const PROTOTYPE_NAMES = ["constructor", "toString", "hasOwnProperty", "__proto__", "valueOf", "isPrototypeOf"];

describe("headers named like Object.prototype members (defect 3)", () => {
  it.each(PROTOTYPE_NAMES)("passes a header named %s through as bytes, once", (name) => {
    const record = mskRecord({ value: JSON.stringify(validLogin()) });
    record.headers = [{ [name]: [1, 2, 3] }, { other: [4] }];
    // Built the way Lambda's JSON would be parsed: an own property, even for __proto__.
    record.headers[0] = JSON.parse(`{${JSON.stringify(name)}:[1,2,3]}`);
    const out = processRecord(record, options);
    expect(out.kind).toBe("processed");
    expect(Object.keys(out.headers)).toContain(name);
    const value = out.headers[name];
    expect(Buffer.isBuffer(value)).toBe(true);
    expect([...(value as Buffer)]).toEqual([1, 2, 3]);
    // No name is inherited: the prototype is an empty object without a prototype (a fast-mode HeaderMap).
    for (const other of PROTOTYPE_NAMES) if (other !== name) expect(other in out.headers).toBe(false);
    const proto = Object.getPrototypeOf(out.headers);
    expect(proto === null || (Reflect.ownKeys(proto).length === 0 && Object.getPrototypeOf(proto) === null)).toBe(true);
    expect(Number.isFinite(out.bytes)).toBe(true);
  });

  it("keeps a repeated prototype-named header as an array in order", () => {
    const record = mskRecord({ value: JSON.stringify(validLogin()) });
    record.headers = [{ constructor: [1] }, { constructor: [2] }];
    const value = processRecord(record, options).headers.constructor as unknown as Buffer[];
    expect(value.map((b) => [...b])).toEqual([[1], [2]]);
  });

  it("passes a null header value through as null", () => {
    const record = mskRecord({ value: JSON.stringify(validLogin()) });
    record.headers = [{ empty: null }];
    expect(processRecord(record, options).headers.empty).toBeNull();
  });
});

describe("pass-through is byte for byte (defect 4)", () => {
  it("keeps every member's text, numbers beyond double precision and trailing zeros included", () => {
    const text =
      '{"user_id":"u1", "app_version" : "2.3.0","device_type":"iOS","ip":"10.0.0.1","locale":"RU",' +
      '"device_id":"d1","timestamp":1694479551,"big":12345678901234567890,"dec":1.10,"exp":1E+2,' +
      '"nested":{ "a" : [1.0, -0, 2e-3] },"esc":"caf\\u00e9 \\"q\\"","emoji":"😀"}';
    const out = run(text);
    expect(out.kind).toBe("processed");
    const value = out.value as string;
    for (const member of [
      '"user_id":"u1"',
      '"app_version" : "2.3.0"',
      '"big":12345678901234567890',
      '"dec":1.10',
      '"exp":1E+2',
      '"nested":{ "a" : [1.0, -0, 2e-3] }',
      '"esc":"caf\\u00e9 \\"q\\""',
      '"emoji":"😀"',
    ]) {
      expect(value).toContain(member);
    }
    expect(value).not.toContain("timestamp");
    expect(value.endsWith(',"created_at":"2023-09-12T00:45:51.000Z","processed_at":"2026-11-25T10:00:00.000Z"}')).toBe(
      true,
    );
    expect(JSON.parse(value).big).toBe(JSON.parse(text).big);
  });

  it("overwrites created_at and processed_at in place when the input has them", () => {
    const text = JSON.stringify({ created_at: "old", ...validLogin({ timestamp: 0 }), processed_at: 5 });
    const value = run(text).value as string;
    expect(value.startsWith('{"created_at":"1970-01-01T00:00:00.000Z",')).toBe(true);
    expect(value.endsWith(',"processed_at":"2026-11-25T10:00:00.000Z"}')).toBe(true);
    expect(value.match(/created_at/g)).toHaveLength(1);
  });

  it("rejects a property name that occurs twice without quoting it", () => {
    const secret = "s3cr3t-name";
    const twice = `{${JSON.stringify(validLogin()).slice(1, -1)},"${secret}":1,"${secret}":2}`;
    const out = run(twice) as DeadLetterOutput;
    expect(out.errorCode).toBe("SCHEMA_VIOLATION");
    expect(out.errorMessage).toMatch(/^a property name at character \d+ occurs more than once/);
    expect(out.errorMessage).not.toContain(secret);
    const userTwice = `{"user_id":"a",${JSON.stringify(validLogin()).slice(1)}`;
    expect((run(userTwice) as DeadLetterOutput).errorMessage).toBe(
      "/user_id occurs more than once (property names must be unique)",
    );
  });

  it("passes any object with extra members through member for member (property)", () => {
    fc.assert(
      fc.property(
        fc.dictionary(
          fc.string().filter((k) => !(k in validLogin()) && k !== "created_at" && k !== "processed_at"),
          fc.jsonValue(),
        ),
        (extra) => {
          const text = JSON.stringify({ ...validLogin(), ...extra });
          const out = run(text);
          expect(out.kind).toBe("processed");
          // Every member of the input but timestamp stands in the output with the very same text.
          const slices = (json: string) =>
            new Map(objectMembers(json).map((m) => [m.name, json.slice(m.start, m.end)] as const));
          const before = slices(text);
          const after = slices(out.value as string);
          for (const name of Object.keys(extra)) expect(after.get(name)).toBe(before.get(name));
          const members = objectMembers(out.value as string).map((m) => m.name);
          expect(members).toEqual([
            ...Object.keys({ ...validLogin(), ...extra }).filter((k) => k !== "timestamp"),
            "created_at",
            "processed_at",
          ]);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("whole-number timestamps (defect 4)", () => {
  it.each([
    ["1694479551", "2023-09-12T00:45:51.000Z"],
    ["1694479551.000", "2023-09-12T00:45:51.000Z"],
    ["1.694479551e9", "2023-09-12T00:45:51.000Z"],
    ["1e3", "1970-01-01T00:16:40.000Z"],
    ["1.0", "1970-01-01T00:00:01.000Z"],
  ])("accepts %s as a whole number of seconds", (token, createdAt) => {
    const text = JSON.stringify(validLogin()).replace('"timestamp":1720589697', `"timestamp":${token}`);
    expect(JSON.parse(run(text).value as string).created_at).toBe(createdAt);
  });

  it.each(["1694479551.5", "1694479551.0000000001", "-0", "-1", "1e-1", "253402300800"])("rejects %s", (token) => {
    const text = JSON.stringify(validLogin()).replace('"timestamp":1720589697', `"timestamp":${token}`);
    const out = run(text) as DeadLetterOutput;
    expect(out.errorCode).toBe("SCHEMA_VIOLATION");
    expect(out.errorMessage).toMatch(/^\/timestamp must be/);
  });

  it("agrees with exact decimal arithmetic on whether a token is whole (property)", () => {
    fc.assert(
      fc.property(fc.nat(), fc.nat({ max: 1000 }), fc.integer({ min: -12, max: 12 }), (int, frac, exp) => {
        const token = `${int}${frac > 0 ? `.${frac}` : ""}e${exp}`;
        // value = int.frac × 10^exp is whole iff the digits right of the shifted point are all zeros.
        const digits = `${int}${frac > 0 ? frac : ""}`;
        const scale = (frac > 0 ? String(frac).length : 0) - exp;
        const whole = scale <= 0 || BigInt(digits) % 10n ** BigInt(scale) === 0n;
        expect(isWholeNumberToken(token)).toBe(whole);
      }),
      { numRuns: 2000 },
    );
  });
});

describe("reasons never quote the record (defect 5)", () => {
  it.each([
    ['{"ip":"10.1.2.3" "x":1}', "expected ',' or '}' at byte 17"],
    ['{"token":"abc', "unterminated string at byte 9"],
    ["secret-token-123", "unexpected character at byte 0"],
    ['{"a":01}', "expected ',' or '}' at byte 6"],
    ['{"a":"\\x"}', "invalid escape sequence at byte 7"],
    ['{"a":1}garbage', "unexpected data after the JSON value at byte 7"],
    [" ", "unexpected end of input at byte 1"],
    ['{"é":tru}', "unexpected character at byte 6"],
  ])("describes %j by kind and byte position", (text, reason) => {
    const out = run(Buffer.from(text)) as DeadLetterOutput;
    expect(out.errorCode).toBe("INVALID_JSON");
    expect(out.errorMessage).toBe(`value is not valid JSON: ${reason}`);
  });

  it("counts a byte order mark in the byte position", () => {
    const out = run(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from("{x")])) as DeadLetterOutput;
    expect(out.errorMessage).toBe("value is not valid JSON: expected a property name at byte 4");
  });

  it("agrees with JSON.parse on what is valid, and says only words of its own (property)", () => {
    const vocabulary =
      /^value is not valid JSON: (unexpected end of input|unexpected character|unterminated string|control character in a string|invalid \\u escape|invalid escape sequence|invalid number|expected a property name|expected ':' after a property name|expected ',' or '\}'|expected ',' or '\]'|unexpected data after the JSON value) at byte \d+$/;
    const mutated = fc
      .tuple(fc.json(), fc.nat(), fc.constantFrom("", '"', "{", "]", ",", ":", "\\", "0", "x", "\u0001", " "))
      .map(([json, at, insert]) => {
        const i = at % (json.length + 1);
        return `${json.slice(0, i)}${insert}${json.slice(i + (insert ? 0 : 1))}`;
      });
    fc.assert(
      fc.property(fc.oneof(fc.json(), mutated, fc.string()), (text) => {
        let parses = true;
        try {
          JSON.parse(text);
        } catch {
          parses = false;
        }
        expect(jsonSyntaxError(text) === undefined).toBe(parses);
        if (!parses && text.trim().length > 0 && !text.startsWith("\uFEFF")) {
          const out = run(text) as DeadLetterOutput;
          if (out.errorCode === "INVALID_JSON") expect(out.errorMessage).toMatch(vocabulary);
        }
      }),
      { numRuns: 3000 },
    );
  });
});

/** kafkajs's own record encoder: the bytes it puts on the wire for one record. */
const requireCjs = createRequire(import.meta.url);
const encodeRecord = requireCjs("kafkajs/src/protocol/recordBatch/record/v0/index.js") as (record: {
  key: Buffer | string | null;
  value: Buffer | string | null;
  headers: Record<string, Buffer | string | (Buffer | string)[]>;
  timestampDelta?: number;
  offsetDelta?: number;
}) => { buffer: Buffer };

describe("sizes are UTF-8 bytes as the broker counts them (defect 2)", () => {
  it("bounds kafkajs's encoding of a record from above by at most 14 bytes (the deltas' worst case)", () => {
    fc.assert(
      fc.property(
        fc.option(fc.string({ unit: "binary" }), { nil: null }),
        fc.string({ unit: "binary", maxLength: 5000 }),
        fc.dictionary(fc.string({ unit: "binary" }), fc.string({ unit: "binary" })),
        (key, value, headers) => {
          const wire = encodeRecord({ key, value, headers, timestampDelta: 0, offsetDelta: 0 }).buffer.length;
          const bound = recordBytes(key, value, headers);
          expect(bound).toBeGreaterThanOrEqual(wire);
          expect(bound - wire).toBeLessThanOrEqual(14);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("counts text in CJK scripts at 3 bytes a character", () => {
    const cjk = "漢".repeat(300_000);
    expect(recordBytes(null, cjk, undefined)).toBeGreaterThan(900_000);
  });

  it("dead-letters a processed record that would be over the processed topic's limit as OUTPUT_TOO_LARGE", () => {
    const limit = 4096;
    const login = JSON.stringify(validLogin({ note: "漢".repeat(1290) }));
    expect(Buffer.byteLength(login)).toBeLessThan(limit);
    const out = processRecord(mskRecord({ value: login, offset: 3 }), { ...options, maxProcessedBytes: limit });
    expect(out.kind).toBe("dead-letter");
    const dead = out as DeadLetterOutput;
    expect(dead.errorCode).toBe("OUTPUT_TOO_LARGE");
    expect(dead.errorMessage).toMatch(
      /^the processed record would take \d+ bytes in a record batch, over processed-user-login's max.message.bytes of 4096$/,
    );
    expect(dead.value?.toString()).toBe(login);
    const fits = processRecord(mskRecord({ value: login }), { ...options, maxProcessedBytes: limit + 300 });
    expect(fits.kind).toBe("processed");
    expect(RECORD_BATCH_OVERHEAD + fits.bytes).toBeLessThanOrEqual(limit + 300);
  });

  it("keeps every produce request within each topic's limit and takes at least one record", () => {
    const outputs = Array.from({ length: 50 }, (_, i) =>
      run(i % 3 ? JSON.stringify(validLogin({ note: "漢".repeat(100 * i) })) : "x".repeat(200 * i + 1), { offset: i }),
    );
    const limits = {
      requestBytes: 40_000,
      maxMessageBytes: { "processed-user-login": 20_000, "user-login-dlq": 12_000 },
    };
    let start = 0;
    while (start < outputs.length) {
      const { indices, end } = nextRequest(outputs, start, limits);
      expect(end).toBeGreaterThan(start);
      expect(indices).toEqual(Array.from({ length: end - start }, (_, k) => start + k));
      const perTopic = new Map<string, number>();
      for (const o of outputs.slice(start, end) as OutputRecord[])
        perTopic.set(o.topic, (perTopic.get(o.topic) ?? RECORD_BATCH_OVERHEAD) + o.bytes);
      for (const [topic, bytes] of perTopic)
        expect(bytes).toBeLessThanOrEqual(limits.maxMessageBytes[topic as keyof typeof limits.maxMessageBytes]);
      start = end;
    }
    const tooBig = run("y".repeat(13_000));
    expect(nextRequest([tooBig], 0, limits).indices).toEqual([]);
  });
});

describe("the hot path's member spans (performance)", () => {
  const kind = kindOf;
  /** Writes names in JSON with some characters escaped, and spacing around members, as any producer might. */
  const writtenAs = (value: Record<string, unknown>, escapeNames: boolean, space: string) =>
    `{${space}${Object.entries(value)
      .map(([name, v]) => {
        const written = escapeNames
          ? JSON.stringify(name).replace(/[a-z]/, (c) => `\\u00${c.charCodeAt(0).toString(16)}`)
          : JSON.stringify(name);
        return `${written}${space}:${space}${JSON.stringify(v)}`;
      })
      .join(`${space},${space}`)}${space}}`;

  it("finds the same members as objectMembers, names compared decoded, escapes included", () => {
    const names = fc.oneof(
      fc.constantFrom("timestamp", "created_at", "processed_at", "user_id", "timestamps"),
      fc.string(),
    );
    fc.assert(
      fc.property(
        fc.dictionary(names, fc.jsonValue()),
        fc.boolean(),
        fc.constantFrom("", " ", "\n "),
        (value, escapeNames, space) => {
          const text = writtenAs(value, escapeNames, space);
          const members = objectMembers(text);
          const spans: number[] = [];
          const count = memberSpans(text, spans);
          expect(count).toBe(members.length);
          members.forEach((m, k) => {
            expect(spans.slice(k * 4, k * 4 + 4)).toEqual([m.start, m.valueStart, m.end, kind(m.name)]);
          });
        },
      ),
      { numRuns: 1000 },
    );
  });

  it("gives the same processed text as the member-by-member path, for names written with escapes", () => {
    const login = validLogin({ created_at: "x", processed_at: "y" }) as Record<string, unknown>;
    const plain = processRecord(mskRecord({ value: writtenAs(login, false, " ") }), options);
    const escaped = processRecord(mskRecord({ value: writtenAs(login, true, " ") }), options);
    expect(plain.kind).toBe("processed");
    expect(escaped.kind).toBe("processed");
    // The created_at and processed_at members keep their written names and get this hop's values, in place.
    expect(escaped.value).toMatch(/^\{"\\u0075ser_id" : /);
    expect(JSON.parse(escaped.value as string)).toEqual(JSON.parse(plain.value as string));
    expect(Object.keys(JSON.parse(plain.value as string)).at(-1)).toBe("processed_at");
  });

  it("still refuses a name repeated under an escape, and a timestamp whose written digits are not whole", () => {
    const login = validLogin() as Record<string, unknown>;
    const repeated = `${JSON.stringify(login).slice(0, -1)},"\\u0075ser_id":"again"}`;
    const out = processRecord(mskRecord({ value: repeated }), options) as DeadLetterOutput;
    expect(out.errorCode).toBe("SCHEMA_VIOLATION");
    expect(out.errorMessage).toBe("/user_id occurs more than once (property names must be unique)");
    const fraction = JSON.stringify(login).replace(/"timestamp":\d+/, '"timestamp":1694479551.0000000001');
    const second = processRecord(mskRecord({ value: fraction }), options) as DeadLetterOutput;
    expect(second.errorCode).toBe("SCHEMA_VIOLATION");
    const whole = JSON.stringify(login).replace(/"timestamp":\d+/, '"timestamp":1.694479551e9');
    expect(processRecord(mskRecord({ value: whole }), options).kind).toBe("processed");
  });
});

describe("the processed record's size, summed while the headers are built (performance)", () => {
  it("is what recordBytes gives for the output's key, value and headers", () => {
    const headerValue = fc.option(
      fc.uint8Array({ maxLength: 40 }).map((b) => [...b]),
      { nil: null },
    );
    fc.assert(
      fc.property(
        fc.array(fc.dictionary(fc.string({ maxLength: 20 }), headerValue, { maxKeys: 3 }), { maxLength: 4 }),
        fc.nat(),
        fc.nat({ max: 1000 }),
        fc.option(fc.string({ minLength: 1 }), { nil: null }),
        fc.constantFrom("user-login", "tópico"),
        (headers, offset, partition, key, topic) => {
          const record = mskRecord({ value: JSON.stringify(validLogin()), offset, partition });
          record.topic = topic;
          record.headers = headers;
          record.key = key === null ? null : Buffer.from(key).toString("base64");
          const out = processRecord(record, options);
          expect(out.kind).toBe("processed");
          expect(out.bytes).toBe(recordBytes(out.key, out.value, out.headers));
        },
      ),
      { numRuns: 1000 },
    );
  });
});
