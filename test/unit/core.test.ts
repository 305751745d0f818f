import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type DeadLetterOutput,
  ERROR_CODES,
  firstUnwrittenPerPartition,
  type OutputRecord,
  type ProcessedOutput,
  processEvent,
  processRecord,
  summarize,
} from "../../functions/core/process.ts";
import { processedUserLoginValidator, validateUserLogin } from "../../functions/core/schema.ts";

const validateProcessedUserLogin = processedUserLoginValidator();

import { headerText, loadEvent, mskRecord, validLogin } from "../support/msk.ts";

const options = {
  topics: { processed: "processed-user-login", deadLetter: "user-login-dlq" },
  processedAt: "2026-11-25T10:00:00.000Z",
};

const run = (value: string | Buffer | null | undefined, extra: Parameters<typeof mskRecord>[0] = { value }) =>
  processRecord(mskRecord({ ...extra, value }), options);

function expectDeadLetter(output: OutputRecord, code: string, message?: RegExp | string): DeadLetterOutput {
  expect(output.kind, JSON.stringify(output)).toBe("dead-letter");
  const dead = output as DeadLetterOutput;
  expect(dead.topic).toBe("user-login-dlq");
  expect(dead.errorCode).toBe(code);
  expect(headerText(dead.headers, "error.code")).toBe(code);
  expect(headerText(dead.headers, "error.message")).toBe(dead.errorMessage);
  if (message !== undefined) expect(dead.errorMessage).toMatch(message);
  return dead;
}

function expectProcessed(output: OutputRecord): ProcessedOutput & { json: Record<string, unknown> } {
  expect(output.kind, JSON.stringify(output)).toBe("processed");
  const processed = output as ProcessedOutput;
  return { ...processed, json: JSON.parse(processed.value) as Record<string, unknown> };
}

describe("processing a valid user-login record", () => {
  it("replaces timestamp with created_at and adds processed_at, keeping every other field", () => {
    const out = expectProcessed(run(JSON.stringify(validLogin({ timestamp: 1694479551 }))));
    expect(out.topic).toBe("processed-user-login");
    const { timestamp: _dropped, ...rest } = validLogin();
    expect(out.json).toEqual({ ...rest, created_at: "2023-09-12T00:45:51.000Z", processed_at: options.processedAt });
    expect("timestamp" in out.json).toBe(false);
  });

  it("accepts a timestamp given as a string of digits, as the exercise brief shows", () => {
    const out = expectProcessed(run(JSON.stringify(validLogin({ timestamp: "1694479551" }))));
    expect(out.json.created_at).toBe("2023-09-12T00:45:51.000Z");
  });

  it("accepts the bounds 0 and 253402300799 (9999-12-31T23:59:59Z)", () => {
    expect(expectProcessed(run(JSON.stringify(validLogin({ timestamp: 0 })))).json.created_at).toBe(
      "1970-01-01T00:00:00.000Z",
    );
    for (const ts of [253402300799, "253402300799"]) {
      expect(expectProcessed(run(JSON.stringify(validLogin({ timestamp: ts })))).json.created_at).toBe(
        "9999-12-31T23:59:59.000Z",
      );
    }
  });

  it("passes unknown properties through unchanged (forward compatible)", () => {
    const out = expectProcessed(run(JSON.stringify(validLogin({ session: { id: 7, tags: ["a"] }, region: null }))));
    expect(out.json.session).toEqual({ id: 7, tags: ["a"] });
    expect(out.json.region).toBeNull();
  });

  it("accepts a brief-style device_id that is not a UUID and an IPv6 address", () => {
    expectProcessed(run(JSON.stringify(validLogin({ device_id: "593-47-5928", ip: "2001:db8::1" }))));
  });

  it("keys the output by the source key when there is one", () => {
    const out = expectProcessed(run(JSON.stringify(validLogin()), { value: "", key: "source-key" }));
    expect(out.key?.toString()).toBe("source-key");
  });

  it("keys the output by user_id when the source record has no key", () => {
    const out = expectProcessed(run(JSON.stringify(validLogin())));
    expect(out.key).toBe("b22a51d5-0f2f-42e3-8505-f2f8d2b01060");
  });

  it("carries the source headers plus source.topic, source.partition and source.offset", () => {
    const record = mskRecord({
      value: JSON.stringify(validLogin()),
      headers: { "trace-id": "t-1" },
      partition: 3,
      offset: 42,
    });
    const out = processRecord(record, options);
    expect(headerText(out.headers, "trace-id")).toBe("t-1");
    expect(headerText(out.headers, "source.topic")).toBe("user-login");
    expect(headerText(out.headers, "source.partition")).toBe("3");
    expect(headerText(out.headers, "source.offset")).toBe("42");
    expect(out.source).toEqual({ topic: "user-login", partition: 3, offset: 42 });
  });

  it("keeps repeated source headers, in order", () => {
    const record = mskRecord({ value: JSON.stringify(validLogin()) });
    record.headers = [{ hop: [...Buffer.from("a")] }, { hop: [...Buffer.from("b")] }];
    const hops = processRecord(record, options).headers.hop;
    expect(Array.isArray(hops) && hops.map(String)).toEqual(["a", "b"]);
  });

  it("replaces stale error.* and source.* headers from an earlier hop", () => {
    const record = mskRecord({
      value: JSON.stringify(validLogin()),
      headers: { "error.code": "SCHEMA_VIOLATION", "source.offset": "1" },
      offset: 9,
    });
    const out = processRecord(record, options);
    expect(out.headers["error.code"]).toBeUndefined();
    expect(headerText(out.headers, "source.offset")).toBe("9");
  });

  it("emits records that validate against schemas/processed-user-login.schema.json", () => {
    const event = loadEvent("mixed-batch.json");
    const processed = processEvent(event, options).filter((o) => o.kind === "processed");
    expect(processed.length).toBeGreaterThan(0);
    for (const out of processed) {
      expect(validateProcessedUserLogin(JSON.parse(out.value)), JSON.stringify(validateProcessedUserLogin.errors)).toBe(
        true,
      );
    }
  });
});

describe("dead-lettering a record that cannot be processed", () => {
  it("sends a tombstone (null value) to the DLQ with EMPTY_VALUE and a null value", () => {
    const out = expectDeadLetter(run(null, { value: null, key: "k" }), "EMPTY_VALUE", /null/);
    expect(out.value).toBeNull();
    expect(out.key?.toString()).toBe("k");
  });

  it("sends a record without a value field to the DLQ with EMPTY_VALUE", () => {
    expectDeadLetter(run(undefined), "EMPTY_VALUE");
  });

  it("sends a zero-length value to the DLQ with EMPTY_VALUE and keeps the empty bytes", () => {
    const out = expectDeadLetter(run(""), "EMPTY_VALUE", /0 bytes/);
    expect(out.value?.length).toBe(0);
  });

  it("sends text that is not JSON to the DLQ with INVALID_JSON and the original bytes", () => {
    const out = expectDeadLetter(run("hello, not json"), "INVALID_JSON", /^value is not valid JSON: /);
    expect(out.value?.toString()).toBe("hello, not json");
  });

  it("sends invalid UTF-8 to the DLQ with INVALID_JSON, byte for byte", () => {
    const bytes = Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]);
    const out = expectDeadLetter(run(bytes), "INVALID_JSON", "value is not valid UTF-8");
    expect(out.value?.equals(bytes)).toBe(true);
  });

  it("sends truncated JSON to the DLQ with INVALID_JSON", () => {
    expectDeadLetter(run('{"user_id": "a"'), "INVALID_JSON");
  });

  it.each([
    ["a JSON array", "[1,2]"],
    ["JSON null", "null"],
    ["a JSON string", '"hello"'],
    ["a JSON number", "42"],
  ])("sends %s to the DLQ with SCHEMA_VIOLATION", (_name, text) => {
    expectDeadLetter(run(text), "SCHEMA_VIOLATION", "must be a JSON object");
  });

  it("sends a record without device_type to the DLQ with SCHEMA_VIOLATION naming the field", () => {
    const { device_type: _missing, ...login } = validLogin();
    expectDeadLetter(run(JSON.stringify(login)), "SCHEMA_VIOLATION", "must have required property 'device_type'");
  });

  it.each([
    ["a float", "1694479551.5"],
    ["a negative number", "-1"],
    ["milliseconds past the bound", "1694479551000"],
    ["a word", '"yesterday"'],
    ["a signed digit string", '"+1694479551"'],
    ["a digit string past the bound", '"253402300800"'],
    ["a digit string with leading zeros", '"01694479551"'],
    ["null", "null"],
    ["a boolean", "true"],
    ["a number too large for a double", "1e400"],
  ])("sends a record whose timestamp is %s to the DLQ with SCHEMA_VIOLATION", (_name, timestampJson) => {
    const text = JSON.stringify(validLogin({ timestamp: 0 })).replace('"timestamp":0', `"timestamp":${timestampJson}`);
    expect(text).toContain(timestampJson);
    expectDeadLetter(
      run(text),
      "SCHEMA_VIOLATION",
      "/timestamp must be an integer or a digit string within 0..253402300799",
    );
  });

  it.each(["user_id", "app_version", "device_type", "locale", "device_id"])(
    "sends a record with an empty %s to the DLQ with SCHEMA_VIOLATION",
    (field) => {
      expectDeadLetter(
        run(JSON.stringify(validLogin({ [field]: "" }))),
        "SCHEMA_VIOLATION",
        `/${field} must be a non-empty string`,
      );
      expectDeadLetter(
        run(JSON.stringify(validLogin({ [field]: 7 }))),
        "SCHEMA_VIOLATION",
        `/${field} must be a non-empty string`,
      );
    },
  );

  it.each(["999.1.1.1", "1.2.3", "localhost", ""])(
    "sends a record with ip %j to the DLQ with SCHEMA_VIOLATION",
    (ip) => {
      expectDeadLetter(
        run(JSON.stringify(validLogin({ ip }))),
        "SCHEMA_VIOLATION",
        "/ip must be a valid IPv4 or IPv6 address",
      );
    },
  );

  it("names every broken field in one message", () => {
    const { locale: _missing, ...login } = validLogin({ ip: "nope" });
    const out = expectDeadLetter(run(JSON.stringify(login)), "SCHEMA_VIOLATION");
    expect(out.errorMessage).toContain("must have required property 'locale'");
    expect(out.errorMessage).toContain("/ip must be a valid IPv4 or IPv6 address");
  });

  it("keeps the source key and headers and adds source.* on a dead letter", () => {
    const out = expectDeadLetter(
      run("nope", { value: "", key: "the-key", headers: { "trace-id": "t" }, partition: 2, offset: 5 }),
      "INVALID_JSON",
    );
    expect(out.key?.toString()).toBe("the-key");
    expect(headerText(out.headers, "trace-id")).toBe("t");
    expect(headerText(out.headers, "source.partition")).toBe("2");
    expect(headerText(out.headers, "source.offset")).toBe("5");
  });

  it("has no key on a dead letter whose source had none", () => {
    expect(expectDeadLetter(run("nope"), "INVALID_JSON").key).toBeNull();
  });

  it("sends deeply nested JSON to exactly one output without throwing", () => {
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    expectDeadLetter(run(deep), "SCHEMA_VIOLATION");
    const text = JSON.stringify(validLogin()).replace("}", `,"extra":${deep}}`);
    const out = run(text);
    expect(["processed", "dead-letter"]).toContain(out.kind);
    if (out.kind === "dead-letter") expect(out.errorCode).toBe("PROCESSING_ERROR");
  });

  it("turns an unexpected failure into PROCESSING_ERROR instead of throwing", () => {
    const record = mskRecord({ value: JSON.stringify(validLogin()), offset: 8 });
    record.headers = [{ broken: "not bytes" as unknown as number[] }];
    const out = expectDeadLetter(
      processRecord(record, options),
      "PROCESSING_ERROR",
      "unexpected error (TypeError) while processing the record",
    );
    expect(out.value?.toString()).toBe(JSON.stringify(validLogin()));
    expect(headerText(out.headers, "source.offset")).toBe("8");
  });
});

describe("processing a whole event", () => {
  it("gives one output per record, in event order, with the codes of the mixed fixture", () => {
    const outputs = processEvent(loadEvent("mixed-batch.json"), options);
    expect(
      outputs.map((o) => `${o.source.partition}/${o.source.offset}:${o.kind === "processed" ? "ok" : o.errorCode}`),
    ).toEqual([
      "0/0:ok",
      "0/1:SCHEMA_VIOLATION",
      "0/2:INVALID_JSON",
      "0/3:EMPTY_VALUE",
      "0/4:EMPTY_VALUE",
      "1/10:INVALID_JSON",
      "1/11:SCHEMA_VIOLATION",
      "1/12:SCHEMA_VIOLATION",
      "1/13:SCHEMA_VIOLATION",
      "1/14:ok",
    ]);
    expect(summarize(outputs)).toEqual({
      in: 10,
      processed: 2,
      deadLettered: 8,
      deadLetteredByCode: { SCHEMA_VIOLATION: 4, INVALID_JSON: 2, EMPTY_VALUE: 2 },
    });
  });

  it("names the first unwritten record of each partition for a partial batch response", () => {
    const outputs = processEvent(loadEvent("mixed-batch.json"), options);
    expect(firstUnwrittenPerPartition(outputs, [])).toEqual([]);
    expect(firstUnwrittenPerPartition(outputs, [7, 8, 9])).toEqual([
      { itemIdentifier: { partition: "user-login-1", offset: 12 } },
    ]);
    expect(firstUnwrittenPerPartition(outputs, [3, 4, 5, 6, 7, 8, 9])).toEqual([
      { itemIdentifier: { partition: "user-login-0", offset: 3 } },
      { itemIdentifier: { partition: "user-login-1", offset: 10 } },
    ]);
  });
});

describe("properties", () => {
  it("gives exactly one output, of a known kind and code, for any bytes", () => {
    fc.assert(
      fc.property(fc.option(fc.uint8Array({ maxLength: 300 }), { nil: null }), fc.nat(), (bytes, offset) => {
        const out = processRecord(mskRecord({ value: bytes === null ? null : Buffer.from(bytes), offset }), options);
        expect(headerText(out.headers, "source.offset")).toBe(String(offset));
        if (out.kind === "dead-letter") {
          expect(ERROR_CODES).toContain(out.errorCode);
          expect(out.value === null ? null : [...out.value]).toEqual(bytes === null ? null : [...bytes]);
        } else {
          expect(validateProcessedUserLogin(JSON.parse(out.value))).toBe(true);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it("processes any object that has the required fields with valid values, whatever else it holds", () => {
    const login = fc.record({
      user_id: fc.string({ minLength: 1 }),
      app_version: fc.string({ minLength: 1 }),
      device_type: fc.string({ minLength: 1 }),
      locale: fc.string({ minLength: 1 }),
      device_id: fc.string({ minLength: 1 }),
      ip: fc.oneof(fc.ipV4(), fc.ipV6()),
      timestamp: fc.oneof(
        fc.integer({ min: 0, max: 253402300799 }),
        fc.integer({ min: 0, max: 253402300799 }).map(String),
      ),
    });
    fc.assert(
      fc.property(login, fc.dictionary(fc.string(), fc.jsonValue()), (fields, extra) => {
        const event = { ...extra, ...fields };
        const out = expectProcessed(run(JSON.stringify(event)));
        expect(out.json.created_at).toBe(new Date(Number(fields.timestamp) * 1000).toISOString());
      }),
      { numRuns: 500 },
    );
  });

  it("accepts a digit-string timestamp exactly when its value is within 0..253402300799", () => {
    const check = (text: string) => {
      const inRange = /^(0|[1-9][0-9]*)$/.test(text) && BigInt(text) <= 253402300799n;
      expect(validateUserLogin(validLogin({ timestamp: text })), text).toBe(inRange);
    };
    fc.assert(fc.property(fc.stringMatching(/^[0-9]{1,13}$/), check), { numRuns: 5000 });
    fc.assert(fc.property(fc.bigInt({ min: 0n, max: 999999999999n }).map(String), check), { numRuns: 5000 });
    for (const edge of ["253402300799", "253402300800", "253402299999", "253402300000", "99999999999", "100000000000"])
      check(edge);
  });
});

describe("hostile input", () => {
  it("dead-letters 1 MB of nested arrays, 100,000 keys and 10 MB strings, each with a short reason", () => {
    const nested = `${"[".repeat(500_000)}${"]".repeat(500_000)}`;
    const manyKeys = JSON.stringify(Object.fromEntries(Array.from({ length: 100_000 }, (_, i) => [`k${i}`, i])));
    const hugeString = JSON.stringify("x".repeat(10 * 1024 * 1024));
    const hugeText = `not json ${"y".repeat(10 * 1024 * 1024)}`;
    const hugeField = JSON.stringify(validLogin({ user_id: "u".repeat(10 * 1024 * 1024), ip: "not-an-ip" }));
    const cases: [string, string, string][] = [
      [nested, "SCHEMA_VIOLATION", "must be a JSON object"],
      [manyKeys, "SCHEMA_VIOLATION", "must have required property 'user_id'"],
      [hugeString, "SCHEMA_VIOLATION", "must be a JSON object"],
      [hugeText, "INVALID_JSON", "value is not valid JSON"],
      [hugeField, "SCHEMA_VIOLATION", "/ip must be a valid IPv4 or IPv6 address"],
    ];
    for (const [text, code, reason] of cases) {
      const out = expectDeadLetter(run(text), code);
      expect(out.errorMessage).toContain(reason);
      expect(out.errorMessage.length).toBeLessThanOrEqual(1000);
      expect(out.value?.length).toBe(Buffer.byteLength(text));
    }
  });
});
