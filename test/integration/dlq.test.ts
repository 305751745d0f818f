/**
 * The dead-letter workflow on a real broker: stats, peek, redrive; and the topic overview.
 */
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { compileInputSchema, userLoginSchema } from "../../functions/core/schema.ts";
import { GeneratorModel, INVALID_KINDS, type RecordKind } from "../../functions/generator/model.ts";
import {
  type DeadLetter,
  dlqStats,
  peekLine,
  RedriveBusyError,
  RedriveConflictError,
  readDeadLetters,
  redrive,
} from "../../functions/local/dlq.ts";
import { REPO_ROOT } from "../../functions/local/embedded-kafka.ts";
import { MskEventSourceHarness } from "../../functions/local/harness.ts";
import { topicOverview } from "../../functions/local/topic-overview.ts";
import { containerSender, createHandler, type ProcessorDependencies } from "../../functions/processor/processor.ts";
import { loadProcessorConfig } from "../../functions/shared/config.ts";
import { createProducer } from "../../functions/shared/kafka.ts";
import {
  createTopicTrio,
  groupLag,
  type PipelineTopics,
  produce,
  readTopic,
  testKafka,
  waitFor,
} from "../support/kafka.ts";

const { kafka, brokers } = testKafka("dlq-test");

function expectedCode(kind: RecordKind): string | undefined {
  if (kind === "valid") return undefined;
  if (kind === "missing-device-type") return "SCHEMA_VIOLATION";
  return INVALID_KINDS[kind];
}

/** Runs harness + handler over the source topic until the group has committed everything. */
async function drain(topics: PipelineTopics, groupId: string, validate?: ProcessorDependencies["validate"]) {
  const config = loadProcessorConfig({
    KAFKA_BROKERS: brokers.join(","),
    PROCESSED_TOPIC: topics.processed,
    DLQ_TOPIC: topics.deadLetter,
    SOURCE_TOPIC: topics.source,
  });
  const container = containerSender(config);
  const handler = createHandler({ config, getSender: container.getSender, validate });
  const harness = new MskEventSourceHarness({
    kafka,
    bootstrapServers: brokers.join(","),
    topic: topics.source,
    groupId,
    batchSize: 200,
    batchWindowMs: 100,
    invoke: (event) => handler(event, {} as never),
  });
  await harness.start();
  await waitFor("the source topic drained", async () => (await groupLag(kafka, groupId, topics.source)) === 0);
  await harness.stop();
  await container.close();
}

describe("dlq peek masking", () => {
  const ip = "198.51.100.23";
  const userId = "6f1d2c3b-4a59-4e8f-9a7b-0c1d2e3f4a5b";
  const letter: DeadLetter = {
    partition: 0,
    offset: 7,
    timestamp: 1_720_589_697_000,
    key: Buffer.from(userId),
    value: Buffer.from(JSON.stringify({ user_id: userId, ip, device_type: "iOS" })),
    headers: Object.assign(Object.create(null), {
      "error.code": Buffer.from("SCHEMA_VIOLATION"),
      "error.message": Buffer.from("must have required property 'device_id'"),
      "source.topic": Buffer.from("user-login"),
      "source.offset": Buffer.from("7"),
      "redrive.from": Buffer.from("user-login-dlq/0/3"),
      // The source record's own headers: content unknown, personal data possible.
      "x-forwarded-for": Buffer.from(ip),
      "x-user": Buffer.from(userId),
      "x-email": Buffer.from("jane.doe@example.com"),
      "x-empty": null,
    }),
    code: "SCHEMA_VIOLATION",
    message: "must have required property 'device_id'",
  };

  it("masks header values too (a source record's headers whole, the pipeline's by pattern) unless --unmask", () => {
    const masked = peekLine(letter, false);
    const text = JSON.stringify(masked);
    for (const secret of [ip, userId, "jane.doe@example.com"]) expect(text).not.toContain(secret);
    // The pipeline's own headers stay readable: they say why and from where.
    expect(masked.headers).toMatchObject({
      "error.code": "SCHEMA_VIOLATION",
      "error.message": "must have required property 'device_id'",
      "source.topic": "user-login",
      "source.offset": "7",
      "redrive.from": "user-login-dlq/0/3",
      "x-empty": "",
    });
    expect(masked.headers["x-email"]).toBe("********.com");
    expect(masked.headers["x-forwarded-for"]).toBe("********0.23");

    const unmasked = peekLine(letter, true);
    expect(unmasked.headers).toMatchObject({
      "x-forwarded-for": ip,
      "x-user": userId,
      "x-email": "jane.doe@example.com",
    });
    expect(unmasked.key).toBe(userId);
    expect(unmasked.value).toContain(ip);
  });
});

/** Dead letters written straight to the DLQ, as the processor writes them, at the given times (epoch ms). */
async function deadLetter(topic: string, letters: { key: string; timestamp?: number }[]) {
  const producer = createProducer(kafka);
  await producer.connect();
  await producer.send({
    topic,
    acks: -1,
    messages: letters.map((l) => ({
      key: l.key,
      value: JSON.stringify({ note: l.key }),
      timestamp: l.timestamp === undefined ? undefined : String(l.timestamp),
      headers: { "error.code": "SCHEMA_VIOLATION", "error.message": "must have required property 'device_type'" },
    })),
  });
  await producer.disconnect();
}

const keysOf = async (topic: string) => (await readTopic(kafka, topic)).map((r) => r.key?.toString());

describe("redrive bound to what it was shown", () => {
  it("with a preview's ends and count, redrives what the preview showed, not what arrived since", async () => {
    const topics = await createTopicTrio(kafka, 1);
    const group = `redrive-${randomUUID()}`;
    const options = { from: topics.deadLetter, to: topics.source, group };
    await deadLetter(topics.deadLetter, [{ key: "a" }, { key: "b" }]);
    const preview = await redrive(kafka, { ...options, dryRun: true });
    expect(preview.redriven).toBe(2);
    expect(preview.ends).toEqual({ 0: 2 });
    // New dead letters arrive between the preview and the confirmation.
    await deadLetter(topics.deadLetter, [{ key: "c" }, { key: "d" }, { key: "e" }]);
    const done = await redrive(kafka, { ...options, upTo: preview.ends, expectCount: preview.redriven });
    expect(done.redriven).toBe(2);
    expect(done.positions).toEqual({ 0: 2 });
    expect(await keysOf(topics.source)).toEqual(["a", "b"]);
    // The later ones wait for the next preview.
    const next = await redrive(kafka, { ...options, dryRun: true });
    expect(next.letters.map((l) => l.key?.toString())).toEqual(["c", "d", "e"]);
  });

  it("refuses, before publishing, when the count is no longer the preview's (another redrive ran)", async () => {
    const topics = await createTopicTrio(kafka, 1);
    const group = `redrive-${randomUUID()}`;
    const options = { from: topics.deadLetter, to: topics.source, group };
    await deadLetter(topics.deadLetter, [{ key: "a" }, { key: "b" }]);
    const preview = await redrive(kafka, { ...options, dryRun: true });
    await redrive(kafka, options);
    expect(await keysOf(topics.source)).toEqual(["a", "b"]);
    await expect(redrive(kafka, { ...options, upTo: preview.ends, expectCount: preview.redriven })).rejects.toThrow(
      RedriveConflictError,
    );
    expect(await keysOf(topics.source)).toEqual(["a", "b"]);
  });

  it("with until, a partition stops at its first dead letter written at or after until (later ones are not skipped)", async () => {
    const topics = await createTopicTrio(kafka, 1);
    const group = `redrive-${randomUUID()}`;
    const options = { from: topics.deadLetter, to: topics.source, group };
    const t = Date.now() - 60_000;
    // Offsets 0..3: before, after, before (out of order), before.
    await deadLetter(topics.deadLetter, [
      { key: "early-1", timestamp: t },
      { key: "late", timestamp: t + 30_000 },
      { key: "early-2", timestamp: t + 1000 },
      { key: "early-3", timestamp: t + 2000 },
    ]);
    const first = await redrive(kafka, { ...options, until: t + 10_000 });
    expect(first.letters.map((l) => l.key?.toString())).toEqual(["early-1"]);
    expect(first.positions).toEqual({ 0: 1 });
    // Nothing was passed over for good: a run without until takes the rest.
    const rest = await redrive(kafka, options);
    expect(rest.letters.map((l) => l.key?.toString())).toEqual(["late", "early-2", "early-3"]);
    expect(await keysOf(topics.source)).toEqual(["early-1", "late", "early-2", "early-3"]);
    await expect(redrive(kafka, { ...options, since: t + 5, until: t + 5 })).rejects.toThrow(
      "since must be before until",
    );
  });

  it("refuses, before publishing, while the redrive group has running members (another process)", async () => {
    const topics = await createTopicTrio(kafka, 1);
    const group = `redrive-${randomUUID()}`;
    await deadLetter(topics.deadLetter, [{ key: "a" }]);
    const member = kafka.consumer({ groupId: group });
    await member.connect();
    const joined = new Promise((resolve) => member.on(member.events.GROUP_JOIN, resolve));
    await member.subscribe({ topics: [topics.deadLetter] });
    await member.run({ autoCommit: false, eachMessage: async () => {} });
    try {
      await joined;
      const refused = redrive(kafka, { from: topics.deadLetter, to: topics.source, group });
      await expect(refused).rejects.toThrow(RedriveBusyError);
      await expect(refused).rejects.toThrow(/nothing was published/);
      expect(await keysOf(topics.source)).toEqual([]);
    } finally {
      await member.disconnect();
    }
  });
});

describe("the dead-letter workflow", () => {
  it("counts the generator's bad mix by code, masks personal data, and redrives once after the schema is loosened", async () => {
    const topics = await createTopicTrio(kafka, 2);
    const model = new GeneratorModel({ seed: 42, invalidRatio: 0.3, missingDeviceTypeRatio: 0.1 });
    const records = Array.from({ length: 600 }, () => model.next());
    await produce(kafka, topics.source, records);
    const groupId = `group-${randomUUID()}`;
    await drain(topics, groupId);

    // stats: the right counts per code
    const expected: Record<string, number> = {};
    for (const record of records) {
      const code = expectedCode(record.kind);
      if (code) expected[code] = (expected[code] ?? 0) + 1;
    }
    const letters = await readDeadLetters(kafka, topics.deadLetter);
    const stats = dlqStats(letters);
    expect(stats.byCode).toEqual(expected);
    expect(stats.total).toBe(Object.values(expected).reduce((a, b) => a + b, 0));
    const missing = records.filter((r) => r.kind === "missing-device-type").length;
    expect(stats.topMessages.find((m) => m.message === "must have required property 'device_type'")?.count).toBe(
      missing,
    );
    expect(dlqStats(await readDeadLetters(kafka, topics.deadLetter, { code: "EMPTY_VALUE" })).total).toBe(
      expected.EMPTY_VALUE,
    );

    // peek: personal data masked unless asked
    const withIp = letters.find((l) => l.value?.toString().includes('"ip": "')) as (typeof letters)[number];
    const ip = /"ip": "([^"]+)"/.exec(withIp.value?.toString() ?? "")?.[1] as string;
    expect(JSON.stringify(peekLine(withIp, false))).not.toContain(ip);
    expect(JSON.stringify(peekLine(withIp, true))).toContain(ip);

    // redrive (dry run first: changes nothing)
    const group = `redrive-${randomUUID()}`;
    const options = { from: topics.deadLetter, to: topics.source, group, code: "SCHEMA_VIOLATION" };
    const dry = await redrive(kafka, { ...options, dryRun: true });
    expect(dry.redriven).toBe(expected.SCHEMA_VIOLATION);
    const first = await redrive(kafka, options);
    expect(first.redriven).toBe(expected.SCHEMA_VIOLATION);
    expect(first.byCode).toEqual({ SCHEMA_VIOLATION: expected.SCHEMA_VIOLATION });
    const second = await redrive(kafka, options);
    expect(second.redriven).toBe(0);

    // the loosened contract: device_type no longer required
    const loosened = userLoginSchema();
    loosened.required = (loosened.required as string[]).filter((field) => field !== "device_type");
    await drain(topics, groupId, compileInputSchema(loosened));
    const processed = await readTopic(kafka, topics.processed);
    const redriven = processed.filter((r) => r.headers["redrive.from"]?.startsWith(`${topics.deadLetter}/`));
    expect(redriven).toHaveLength(missing);
    for (const record of redriven) expect(JSON.parse(String(record.value)).device_type).toBeUndefined();
    // the other schema violations are dead letters again, once each
    const again = (await readDeadLetters(kafka, topics.deadLetter)).filter(
      (l) => l.headers["redrive.from"] !== undefined,
    );
    expect(again).toHaveLength((expected.SCHEMA_VIOLATION ?? 0) - missing);
  });

  it("redrives a dead letter with the user's own headers, even ones named error.* or source.*", async () => {
    const topics = await createTopicTrio(kafka, 1);
    const producer = createProducer(kafka);
    await producer.connect();
    await producer.send({
      topic: topics.source,
      acks: -1,
      messages: [{ key: "k", value: "not json", headers: { "source.app": "web", "error.trace": "t1", plain: "p" } }],
    });
    await producer.disconnect();
    await drain(topics, `group-${randomUUID()}`);
    await redrive(kafka, { from: topics.deadLetter, to: topics.source, group: `redrive-${randomUUID()}` });
    const source = await readTopic(kafka, topics.source);
    expect(source).toHaveLength(2);
    const { "redrive.from": from, ...rest } = source[1]?.headers ?? {};
    expect(from).toBe(`${topics.deadLetter}/0/0`);
    expect(rest).toEqual({ "source.app": "web", "error.trace": "t1", plain: "p" });
  });

  it("lists topics with end offsets and each group's lag", async () => {
    const topics = await createTopicTrio(kafka, 2);
    const producer = createProducer(kafka);
    await producer.connect();
    await producer.send({
      topic: topics.source,
      acks: -1,
      messages: [
        { key: "a", value: "x" },
        { key: "b", value: "y" },
      ],
    });
    await producer.disconnect();
    const admin = kafka.admin();
    await admin.connect();
    await admin.setOffsets({
      groupId: `lagging-${topics.source}`,
      topic: topics.source,
      partitions: [
        { partition: 0, offset: "0" },
        { partition: 1, offset: "0" },
      ],
    });
    await admin.disconnect();
    const overview = (await topicOverview(kafka)).find((t) => t.topic === topics.source);
    expect(overview?.partitions).toBe(2);
    expect(overview?.endOffsets.reduce((a, b) => a + b, 0)).toBe(2);
    expect(overview?.groups).toEqual([
      { groupId: `lagging-${topics.source}`, lag: 2, lagByPartition: expect.any(Array) },
    ]);
  });

  it("prints stats from the CLI", async () => {
    const topics = await createTopicTrio(kafka, 1);
    const producer = createProducer(kafka);
    await producer.connect();
    await producer.send({
      topic: topics.deadLetter,
      acks: -1,
      messages: [
        { value: "x", headers: { "error.code": "INVALID_JSON", "error.message": "value is not valid JSON: x" } },
      ],
    });
    await producer.disconnect();
    const result = spawnSync(
      join(REPO_ROOT, "node_modules", ".bin", "tsx"),
      [join(REPO_ROOT, "bin", "dlq.ts"), "stats", "--brokers", brokers.join(","), "--topic", topics.deadLetter],
      { encoding: "utf8" },
    );
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`${topics.deadLetter}: 1 dead letters`));
    expect(result.stdout).toMatch(/INVALID_JSON\s+1/);
  });
});
