import { isIPv4 } from "node:net";
import { describe, expect, it } from "vitest";
import { processRecord } from "../../functions/core/process.ts";
import { loadGeneratorConfig, parseDuration } from "../../functions/generator/config.ts";
import {
  GeneratorModel,
  INVALID_KINDS,
  type InvalidKind,
  seededRandom,
  US_STATES,
  uuidV4,
} from "../../functions/generator/model.ts";
import { dryRunSink, type RecordSink, runGenerator } from "../../functions/generator/run.ts";
import { mskRecord } from "../support/msk.ts";

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const options = { topics: { processed: "p", deadLetter: "d" }, processedAt: "2026-11-25T10:00:00.000Z" };

describe("the generator's event model", () => {
  const NOW = Date.parse("2026-11-25T10:00:00Z");
  const events = (n: number, seed = 7) => {
    const model = new GeneratorModel({ seed, now: () => NOW });
    return Array.from({ length: n }, () => model.next());
  };

  it("reproduces the real generator's shape and mix over 100,000 seeded events", () => {
    const sample = events(100_000);
    let missing = 0;
    const states = new Set<string>();
    // Plain checks per event, one assertion over all of them: 100,000 expect() calls would dominate the run.
    const broken: Record<string, number> = {};
    const check = (name: string, ok: boolean) => {
      if (!ok) broken[name] = (broken[name] ?? 0) + 1;
    };
    for (const record of sample) {
      const event = JSON.parse(record.value as string);
      check(
        "field order",
        Object.keys(event).slice(0, 6).join() === "user_id,app_version,ip,locale,device_id,timestamp",
      );
      check("user_id UUIDv4", UUID_V4.test(event.user_id));
      check("device_id UUIDv4", UUID_V4.test(event.device_id));
      check("key UUIDv4", UUID_V4.test(record.key));
      check("key unrelated to user_id", record.key !== event.user_id);
      check("app_version", event.app_version === "2.3.0");
      check("IPv4", isIPv4(event.ip));
      check(
        "integer timestamp near now",
        Number.isInteger(event.timestamp) && Math.abs(event.timestamp - NOW / 1000) <= 1,
      );
      states.add(event.locale);
      if ("device_type" in event) check("device_type", event.device_type === "android" || event.device_type === "iOS");
      else {
        missing++;
        check("kind missing-device-type", record.kind === "missing-device-type");
      }
    }
    expect(broken).toEqual({});
    expect(missing / sample.length).toBeGreaterThan(0.045);
    expect(missing / sample.length).toBeLessThan(0.055);
    expect([...states].sort()).toEqual([...US_STATES].sort());
  });

  it("writes JSON with Python's separators, as the real generator's messages look", () => {
    expect(events(1)[0]?.value).toMatch(/^\{"user_id": "[0-9a-f-]{36}", "app_version": "2.3.0", "ip": "/);
  });

  it("gives the same events for the same seed and different ones for another", () => {
    expect(events(50, 1)).toEqual(events(50, 1));
    expect(events(50, 1)).not.toEqual(events(50, 2));
  });

  it("makes RFC 9562 version-4 UUIDs", () => {
    const random = seededRandom(3);
    for (let i = 0; i < 1000; i++) expect(uuidV4(random)).toMatch(UUID_V4);
  });

  it("reuses a pool of users, keyed by user_id, with --users", () => {
    const model = new GeneratorModel({ seed: 5, users: 10, missingDeviceTypeRatio: 0 });
    const sample = Array.from({ length: 1000 }, () => model.next());
    const users = new Set(sample.map((r) => JSON.parse(r.value as string).user_id));
    expect(users.size).toBe(10);
    for (const record of sample) expect(record.key).toBe(JSON.parse(record.value as string).user_id);
  });

  it("draws about --invalid-ratio bad records, of every kind", () => {
    const model = new GeneratorModel({ seed: 11, invalidRatio: 0.2 });
    const kinds = new Map<string, number>();
    for (let i = 0; i < 20_000; i++) {
      const { kind } = model.next();
      kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
    }
    const bad = [...kinds].filter(([k]) => k in INVALID_KINDS).reduce((n, [, c]) => n + c, 0);
    expect(bad / 20_000).toBeGreaterThan(0.18);
    expect(bad / 20_000).toBeLessThan(0.22);
    for (const kind of Object.keys(INVALID_KINDS)) expect(kinds.get(kind)).toBeGreaterThan(0);
  });

  it.each(Object.entries(INVALID_KINDS))("sends a %s record to the DLQ with %s through the core", (kind, code) => {
    const model = new GeneratorModel({ seed: 13 });
    for (let i = 0; i < 20; i++) {
      const record = model.invalid(kind as InvalidKind);
      const out = processRecord(mskRecord({ value: record.value, key: record.key }), options);
      expect(out.kind).toBe("dead-letter");
      if (out.kind === "dead-letter") expect(out.errorCode).toBe(code);
    }
  });

  it("has every good event processed and every missing-device-type event dead-lettered by the core", () => {
    for (const record of events(5000)) {
      const out = processRecord(mskRecord({ value: record.value, key: record.key }), options);
      if (record.kind === "valid") expect(out.kind).toBe("processed");
      else {
        expect(out.kind === "dead-letter" && out.errorMessage).toBe("must have required property 'device_type'");
      }
    }
  });
});

describe("the generator's loop", () => {
  const collecting = (): RecordSink & { count: number; batches: number } => {
    const sink = {
      count: 0,
      batches: 0,
      async send(records: readonly unknown[]) {
        sink.count += records.length;
        sink.batches++;
      },
    };
    return sink;
  };

  it("stops after exactly --count records", async () => {
    const sink = collecting();
    const summary = await runGenerator({
      model: new GeneratorModel({ seed: 1 }),
      sink,
      rate: 100_000,
      count: 12_345,
      signal: new AbortController().signal,
    });
    expect(sink.count).toBe(12_345);
    expect(summary.sent).toBe(12_345);
    expect(summary.failed).toBe(0);
  });

  it("keeps sending the same batch through failures, then counts it once", async () => {
    let calls = 0;
    const sink: RecordSink = {
      async send() {
        calls++;
        if (calls <= 3) throw new Error("broker unreachable");
      },
    };
    const messages: string[] = [];
    const summary = await runGenerator({
      model: new GeneratorModel({ seed: 1 }),
      sink,
      rate: 1000,
      count: 10,
      maxBatch: 10,
      retryMs: 1,
      signal: new AbortController().signal,
      log: (line) => messages.push(line),
    });
    expect(summary).toMatchObject({ sent: 10, failed: 0 });
    expect(messages).toHaveLength(3);
    expect(messages[0]).toMatch(/send failed \(broker unreachable\); retrying in 1 ms/);
  });

  it("counts a batch it could not send before being stopped as failed", async () => {
    const stop = new AbortController();
    const sink: RecordSink = {
      async send() {
        stop.abort();
        throw new Error("broker unreachable");
      },
    };
    const summary = await runGenerator({
      model: new GeneratorModel(),
      sink,
      rate: 1000,
      maxBatch: 5,
      signal: stop.signal,
    });
    expect(summary.sent).toBe(0);
    expect(summary.failed).toBeGreaterThan(0);
  });

  it("prints JSON lines with the exact text, or valueBase64 for bytes, with --dry-run", async () => {
    let text = "";
    const model = new GeneratorModel({ seed: 2 });
    const records = [model.next(), model.invalid("invalid-utf8"), model.invalid("tombstone")];
    await dryRunSink((t) => {
      text += t;
    }).send(records);
    const lines = text
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(lines[0]).toEqual({ key: records[0]?.key, value: records[0]?.value });
    expect(Buffer.from(lines[1].valueBase64, "base64").equals(records[1]?.value as Buffer)).toBe(true);
    expect(lines[2]).toEqual({ key: records[2]?.key, value: null });
  });
});

describe("generator settings", () => {
  it("reads flags, then the environment, then defaults", () => {
    expect(
      loadGeneratorConfig(["--rate", "50", "--count", "10"], { KAFKA_BROKERS: "h:1", GENERATOR_RATE: "7" }),
    ).toMatchObject({
      brokers: ["h:1"],
      topic: "user-login",
      rate: 50,
      count: 10,
      missingDeviceTypeRatio: 0.05,
      invalidRatio: 0,
    });
    expect(
      loadGeneratorConfig([], { KAFKA_BROKERS: "h:1", GENERATOR_RATE: "7", GENERATOR_DURATION: "15m" }),
    ).toMatchObject({
      rate: 7,
      durationMs: 900_000,
    });
  });

  it.each([
    [["--rate=-1"], {}, /--rate must be a number from 0.001 to 1000000, got "-1"/],
    [["--count", "1.5"], {}, /--count must be a whole number/],
    [[], { GENERATOR_INVALID_RATIO: "2" }, /GENERATOR_INVALID_RATIO must be a number from 0 to 1, got "2"/],
    [["--duration", "soon"], {}, /--duration must be a positive duration such as 90, 90s, 15m or 2h, got "soon"/],
    [["--bogus"], {}, /Unknown option '--bogus'/],
  ])("rejects %j %j with a message naming the setting", (argv, env, message) => {
    expect(() => loadGeneratorConfig(argv, { KAFKA_BROKERS: "h:1", ...env })).toThrow(message);
  });

  it("requires brokers unless --dry-run", () => {
    expect(() => loadGeneratorConfig([], {})).toThrow(/--brokers \(or KAFKA_BROKERS\) is required unless --dry-run/);
    expect(loadGeneratorConfig(["--dry-run"], {}).brokers).toBeUndefined();
  });

  it("parses durations in ms, s, m and h", () => {
    expect([parseDuration("500ms"), parseDuration("90"), parseDuration("2m"), parseDuration("1h")]).toEqual([
      500, 90_000, 120_000, 3_600_000,
    ]);
    expect(parseDuration("1d")).toBeUndefined();
  });
});
