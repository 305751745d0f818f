import { createServer } from "node:net";
import type { Metrics } from "@aws-lambda-powertools/metrics";
import middy from "@middy/core";
import { afterEach, describe, expect, it, vi } from "vitest";
import { EVENT_SOURCES, InvalidEventError, parseMskEvent } from "../../functions/core/msk.ts";
import type { OutputRecord } from "../../functions/core/process.ts";
import { lambdaContext } from "../../functions/local/lambda-runtime.ts";
import {
  containerSender,
  createHandler,
  EventSourceMismatchError,
  KafkaConnectError,
  ProduceError,
  processMskEvent,
} from "../../functions/processor/processor.ts";
import { kafkaSender, type OutputSender, type SendResult } from "../../functions/processor/sender.ts";
import { loadProcessorConfig } from "../../functions/shared/config.ts";
import { clearDiscoveredBrokers } from "../../functions/shared/msk-auth.ts";
import { fakeSlot } from "../support/fake-producer.ts";
import { loadEvent, mskEvent, mskRecord, validLogin } from "../support/msk.ts";

const NOW = new Date("2026-11-25T10:00:00.000Z");

/** Records what it is given; optionally writes only the first `writeAtMost` records, then fails. */
function recordingSender(writeAtMost = Number.POSITIVE_INFINITY): OutputSender & { sent: OutputRecord[] } {
  const sent: OutputRecord[] = [];
  return {
    sent,
    async send(outputs): Promise<SendResult> {
      const written = Math.min(outputs.length, writeAtMost);
      sent.push(...outputs.slice(0, written));
      return written < outputs.length
        ? { written, error: new Error("Connection error: connect ECONNREFUSED 127.0.0.1:9092") }
        : { written };
    },
  };
}

function deps(sender: OutputSender, env: Record<string, string> = {}) {
  return { config: loadProcessorConfig(env), getSender: async () => sender, now: () => NOW };
}

describe("the processor handler", () => {
  it("produces one record per input and returns a summary with no failures", async () => {
    const sender = recordingSender();
    const response = await processMskEvent(loadEvent("mixed-batch.json"), deps(sender));
    expect(sender.sent).toHaveLength(10);
    expect(sender.sent.filter((o) => o.topic === "processed-user-login")).toHaveLength(2);
    expect(sender.sent.filter((o) => o.topic === "user-login-dlq")).toHaveLength(8);
    expect(response.batchItemFailures).toEqual([]);
    expect(response.summary).toMatchObject({
      in: 10,
      processed: 2,
      deadLettered: 8,
      written: 10,
      deadLetteredByCode: { SCHEMA_VIOLATION: 4, INVALID_JSON: 2, EMPTY_VALUE: 2 },
    });
  });

  it("writes to the topics named by PROCESSED_TOPIC and DLQ_TOPIC", async () => {
    const sender = recordingSender();
    await processMskEvent(loadEvent("mixed-batch.json"), deps(sender, { PROCESSED_TOPIC: "out", DLQ_TOPIC: "dead" }));
    expect(new Set(sender.sent.map((o) => o.topic))).toEqual(new Set(["out", "dead"]));
  });

  it("stamps processed_at with the batch's processing time", async () => {
    const sender = recordingSender();
    await processMskEvent(loadEvent("valid-batch.json"), deps(sender));
    for (const out of sender.sent) expect(JSON.parse(String(out.value)).processed_at).toBe(NOW.toISOString());
  });

  it("names the first unwritten record of each partition when producing fails, with PARTIAL_BATCH_RESPONSE=true", async () => {
    const sender = recordingSender(7);
    const response = await processMskEvent(
      loadEvent("mixed-batch.json"),
      deps(sender, { PARTIAL_BATCH_RESPONSE: "true" }),
    );
    expect(response.batchItemFailures).toEqual([{ itemIdentifier: { partition: "user-login-1", offset: 12 } }]);
    expect(response.summary.written).toBe(7);
  });

  it("counts an unwritable record (UnwritableRecords) even when a later failure ends the send", async () => {
    const tooLarge = Object.assign(new Error("too large"), { type: "MESSAGE_TOO_LARGE" });
    const denied = Object.assign(new Error("denied"), { type: "TOPIC_AUTHORIZATION_FAILED" });
    const record = (partition: number, offset: number) =>
      mskRecord({ partition, offset, key: `k${offset}`, value: JSON.stringify(validLogin()) });
    // The request with 0/1 is refused (alone too: unwritable); the one with 1/3 is denied, which ends the send.
    const { slot } = fakeSlot((call) =>
      call.sources.some((s) => s.partition === "0" && s.offset === 1)
        ? tooLarge
        : call.sources.some((s) => s.partition === "1" && s.offset === 3)
          ? denied
          : undefined,
    );
    const sender = kafkaSender(slot, { requestBytes: 1024 * 1024, maxMessageBytes: {} }, { backoffMs: 0 });
    const added: Record<string, number[]> = {};
    const metrics = {
      addMetric: (name: string, _unit: unknown, value: number) => {
        added[name] = [...(added[name] ?? []), value];
      },
      singleMetric: () => ({ addDimension() {}, addMetric() {} }),
    } as unknown as Metrics;
    const response = await processMskEvent(mskEvent([record(0, 1), record(1, 2), record(1, 3)]), {
      ...deps(sender, { PARTIAL_BATCH_RESPONSE: "true" }),
      metrics,
    });
    expect(response.batchItemFailures).toEqual([
      { itemIdentifier: { partition: "user-login-0", offset: 1 } },
      { itemIdentifier: { partition: "user-login-1", offset: 3 } },
    ]);
    expect(added.UnwritableRecords).toEqual([1]);
    expect(added.ProduceFailures).toEqual([2]);
  });

  it("fails the whole invocation when producing fails, with PARTIAL_BATCH_RESPONSE unset", async () => {
    const sender = recordingSender(3);
    const run = processMskEvent(loadEvent("mixed-batch.json"), deps(sender));
    await expect(run).rejects.toThrow(ProduceError);
    await expect(run).rejects.toThrow(/wrote 3 of 10 records before producing failed: Connection error/);
  });

  it("does not connect for an event without records", async () => {
    const event = loadEvent("valid-batch.json");
    event.records = {};
    const response = await processMskEvent(event, {
      config: loadProcessorConfig({}),
      getSender: () => Promise.reject(new Error("must not connect")),
    });
    expect(response.summary).toMatchObject({ in: 0, written: 0 });
  });

  it("rejects an event that is not an MSK event with a clear error", async () => {
    const handler = createHandler(deps(recordingSender()));
    await expect(handler(loadEvent("not-an-msk-event.json"), lambdaContext())).rejects.toThrow(
      /not an MSK event: eventSource must be "aws:kafka"/,
    );
    await expect(
      handler({ eventSource: "aws:kafka", records: { "t-0": [{ topic: "t" }] } }, lambdaContext()),
    ).rejects.toThrow(/records\["t-0"\]\[0\].partition must be an integer/);
  });

  it.each([
    ["SelfManagedKafka", "self-managed-batch.json"],
    ["aws:SelfManagedKafka", "self-managed-aws-prefixed-batch.json"],
  ])("accepts a self-managed Kafka event (eventSource %s) and processes every record", async (source, file) => {
    const event = loadEvent(file);
    expect(event.eventSource).toBe(source);
    expect(parseMskEvent(event)).toBe(event);
    const sender = recordingSender();
    const response = await createHandler(deps(sender))(event, lambdaContext());
    expect(response.batchItemFailures).toEqual([]);
    expect(response.summary).toMatchObject({ in: 2, processed: 2, written: 2 });
    expect(sender.sent.map((o) => o.kind)).toEqual(["processed", "processed"]);
  });

  it("names every accepted eventSource when it rejects one", () => {
    for (const eventSource of ["aws:sqs", "aws:kafka ", "selfmanagedkafka", undefined]) {
      expect(() => parseMskEvent({ eventSource, records: {} })).toThrow(
        'eventSource must be "aws:kafka", "SelfManagedKafka" or "aws:SelfManagedKafka", got',
      );
    }
    expect(EVENT_SOURCES).toEqual(["aws:kafka", "SelfManagedKafka", "aws:SelfManagedKafka"]);
  });

  it("runs the saved events through the middy handler", async () => {
    const sender = recordingSender();
    const handler = createHandler(deps(sender));
    const response = await handler(loadEvent("valid-batch.json"), lambdaContext());
    expect(response.summary).toMatchObject({ in: 3, processed: 3, written: 3 });
    expect(sender.sent.map((o) => o.kind)).toEqual(["processed", "processed", "processed"]);
  });

  it("fails an invocation with a clear message when the producer cannot connect, and tries again next time", async () => {
    const container = containerSender(loadProcessorConfig({ KAFKA_BROKERS: "127.0.0.1:1" }));
    const event = loadEvent("valid-batch.json");
    await expect(container.getSender(event)).rejects.toThrow(KafkaConnectError);
    await expect(container.getSender(event)).rejects.toThrow(/could not connect the producer to 127.0.0.1:1/);
    await container.close();
  });

  it("uses the event's bootstrapServers when KAFKA_BROKERS is not set, and says so when neither is", async () => {
    const container = containerSender(loadProcessorConfig({}));
    const event = loadEvent("valid-batch.json");
    event.bootstrapServers = undefined;
    await expect(container.getSender(event)).rejects.toThrow(/KAFKA_BROKERS environment variable is not set/);
    event.bootstrapServers = "127.0.0.1:1";
    await expect(container.getSender(event)).rejects.toThrow(/could not connect the producer to 127.0.0.1:1/);
  });
});

describe("the configured cluster (MSK_CLUSTER_ARN), as deployed", () => {
  const CLUSTER = "arn:aws:kafka:us-east-1:123456789012:cluster/user-login/a1b2c3d4-e5f6-7890-abcd-ef1234567890-1";
  const OTHER = "arn:aws:kafka:us-east-1:999999999999:cluster/elsewhere/00000000-0000-0000-0000-000000000000-1";
  const deployed = { MSK_CLUSTER_ARN: CLUSTER, AWS_REGION: "us-east-1" };

  afterEach(() => clearDiscoveredBrokers());

  it("processes an event from the configured cluster", async () => {
    const sender = recordingSender();
    const event = loadEvent("valid-batch.json");
    expect(event.eventSourceArn).toBe(CLUSTER);
    const response = await processMskEvent(event, deps(sender, deployed));
    expect(response.summary).toMatchObject({ in: 3, written: 3 });
  });

  it.each([
    ["another cluster's ARN", OTHER, `eventSourceArn "${OTHER}"`],
    ["no eventSourceArn", undefined, "no eventSourceArn"],
  ])("refuses an event with %s, naming what it expected, what it got and the setting", async (_n, arn, got) => {
    const event = { ...loadEvent("valid-batch.json"), eventSourceArn: arn, bootstrapServers: "attacker.example:9098" };
    let connects = 0;
    const handler = createHandler({
      config: loadProcessorConfig(deployed),
      getSender: async () => {
        connects++;
        return recordingSender();
      },
    });
    const run = handler(event, lambdaContext());
    await expect(run).rejects.toThrow(EventSourceMismatchError);
    await expect(run).rejects.toThrow(InvalidEventError);
    await expect(run).rejects.toThrow(
      `event refused: it has ${got}, but this function is configured for MSK_CLUSTER_ARN "${CLUSTER}"`,
    );
    expect(connects).toBe(0);
  });

  it("connects to the brokers GetBootstrapBrokers gives for MSK_CLUSTER_ARN, never to the event's bootstrapServers", async () => {
    // A listener standing in for the brokers an event names: it must never see a connection (nor an IAM token).
    const named = createServer();
    let connections = 0;
    named.on("connection", (socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => named.listen(0, "127.0.0.1", resolve));
    const port = (named.address() as { port: number }).port;
    const lookups: unknown[] = [];
    const kafka = {
      send: async (command: { input: unknown }) => {
        lookups.push(command.input);
        return { BootstrapBrokerString: "127.0.0.1:1" };
      },
    };
    const container = containerSender(loadProcessorConfig({ ...deployed, KAFKA_AUTH: "none" }), {
      kafka: kafka as never,
    });
    const event = { ...loadEvent("valid-batch.json"), bootstrapServers: `127.0.0.1:${port}` };
    try {
      await expect(container.getSender(event)).rejects.toThrow(/could not connect the producer to 127.0.0.1:1 /);
      expect(lookups).toEqual([{ ClusterArn: CLUSTER }]);
      expect(connections).toBe(0);
      // And an event from elsewhere is refused before any connection is tried.
      await expect(container.getSender({ ...event, eventSourceArn: OTHER })).rejects.toThrow(EventSourceMismatchError);
      expect(lookups).toHaveLength(1);
    } finally {
      await container.close();
      await new Promise((resolve) => named.close(resolve));
    }
  });

  it("with KAFKA_BROKERS and no MSK_CLUSTER_ARN uses KAFKA_BROKERS, not the event's bootstrapServers", async () => {
    const container = containerSender(loadProcessorConfig({ KAFKA_BROKERS: "127.0.0.1:1" }));
    const event = { ...loadEvent("valid-batch.json"), bootstrapServers: "127.0.0.1:2" };
    await expect(container.getSender(event)).rejects.toThrow(/could not connect the producer to 127.0.0.1:1 /);
    await container.close();
  });
});

describe("personal data and the logs", () => {
  it("never logs a record's value, key or headers, even with POWERTOOLS_LOGGER_LOG_EVENT=true", async () => {
    // Powertools reads the setting when the Logger is made: a fresh copy of the modules, made with it on.
    vi.stubEnv("POWERTOOLS_LOGGER_LOG_EVENT", "true");
    vi.stubEnv("LOG_LEVEL", "DEBUG");
    vi.resetModules();
    const lines: string[] = [];
    const capture = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => {
      lines.push(String(chunk));
      return true;
    });
    try {
      const processor = await import("../../functions/processor/processor.ts");
      const { logger } = await import("../../functions/shared/log.ts");
      const { injectLambdaContext } = await import("@aws-lambda-powertools/logger/middleware");
      const ip = "203.0.113.77";
      const userId = "0d4c7b1e-5f7a-4e8b-9c61-2a3b4c5d6e7f";
      const record = mskRecord({
        value: JSON.stringify(validLogin({ ip, user_id: userId })),
        key: "user-key-4242",
        headers: { "x-session": "session-secret-9876" },
      });
      const event = mskEvent([record]);
      const secrets = [record.value as string, record.key as string, ip, userId, "session-secret-9876"];

      // Control: Powertools' middleware left to the setting logs the whole event, these values with it.
      await middy()
        .use(injectLambdaContext(logger))
        .handler(async () => ({}))(event, lambdaContext());
      expect(lines.join("")).toContain(record.value);
      lines.length = 0;

      const handler = processor.createHandler({ ...deps(recordingSender()), config: loadProcessorConfig({}) });
      const response = await handler(event, lambdaContext());
      expect(response.summary).toMatchObject({ in: 1, processed: 1, written: 1 });
      const logged = lines.join("");
      expect(logged).toContain("batch done");
      for (const secret of secrets) expect(logged).not.toContain(secret);
    } finally {
      capture.mockRestore();
      vi.unstubAllEnvs();
      vi.resetModules();
    }
  });
});

describe("processor configuration", () => {
  it("has the documented defaults", () => {
    expect(loadProcessorConfig({})).toEqual({
      connection: {
        brokers: undefined,
        clusterArn: undefined,
        auth: "none",
        tls: false,
        tlsCaFile: undefined,
        region: undefined,
        scram: undefined,
      },
      clientId: "user-login-processor",
      topics: { source: "user-login", processed: "processed-user-login", deadLetter: "user-login-dlq" },
      partialBatchResponse: false,
      produceChunkBytes: 1048576,
      maxMessageBytes: { processed: 1048588, deadLetter: 2097152 },
      outputCompression: "none",
    });
  });

  it.each(["none", "gzip", "snappy", "lz4", "zstd", " ZSTD "])("reads OUTPUT_COMPRESSION=%j", (value) => {
    expect(loadProcessorConfig({ OUTPUT_COMPRESSION: value }).outputCompression).toBe(value.trim().toLowerCase());
  });

  it.each([
    [{ PARTIAL_BATCH_RESPONSE: "maybe" }, /PARTIAL_BATCH_RESPONSE must be "true" or "false", got "maybe"/],
    [{ KAFKA_BROKERS: "localhost" }, /KAFKA_BROKERS entry "localhost" is not host:port/],
    [{ PROCESSED_TOPIC: " " }, /PROCESSED_TOPIC is set but empty/],
    [{ DLQ_TOPIC: "user-login" }, /SOURCE_TOPIC, PROCESSED_TOPIC and DLQ_TOPIC must be three different topics/],
    [{ PRODUCE_CHUNK_BYTES: "12k" }, /PRODUCE_CHUNK_BYTES must be a whole number from 1024 to/],
    [
      { PRODUCE_CHUNK_BYTES: String(64 * 1024 * 1024) },
      /PRODUCE_CHUNK_BYTES must be a whole number from 1024 to 16777216/,
    ],
    [{ DLQ_MAX_MESSAGE_BYTES: "2MB" }, /DLQ_MAX_MESSAGE_BYTES must be a whole number from 1024 to 16777216/],
    [{ PROCESSED_MAX_MESSAGE_BYTES: "0" }, /PROCESSED_MAX_MESSAGE_BYTES must be a whole number from 1024/],
    [
      { OUTPUT_COMPRESSION: "brotli" },
      /OUTPUT_COMPRESSION must be one of none, gzip, snappy, lz4, zstd, got "brotli": set it to one of them/,
    ],
  ])("rejects %j with a message naming the variable", (env, message) => {
    expect(() => loadProcessorConfig(env)).toThrow(message);
  });
});
