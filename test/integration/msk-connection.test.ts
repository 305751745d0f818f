/**
 * The connection module against a real broker with a SASL_SSL (SCRAM-SHA-512) listener, as MSK's SCRAM endpoint,
 * on a broker of its own; and a warm producer that outlives a broker restart.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EmbeddedKafka } from "../../functions/local/embedded-kafka.ts";
import { containerSender, createHandler } from "../../functions/processor/processor.ts";
import { loadConnectionConfig, loadProcessorConfig } from "../../functions/shared/config.ts";
import { connectKafka, createKafka, createProducer } from "../../functions/shared/kafka.ts";
import { ensureTopics } from "../../functions/shared/topics.ts";
import { readTopic } from "../support/kafka.ts";
import { loadEvent } from "../support/msk.ts";
import { makeTestPki, type TestPki } from "../support/tls.ts";

const USER = "processor";
const PASSWORD = "scram-password-7f3a";
let pki: TestPki;
let broker: EmbeddedKafka;

beforeAll(async () => {
  pki = makeTestPki();
  broker = new EmbeddedKafka({
    heap: "512m",
    saslSsl: { keystore: pki.keystore, password: pki.password, users: { [USER]: PASSWORD } },
  });
  await broker.start();
});
afterAll(async () => {
  await broker?.destroy();
  pki?.dispose();
});

const scramEnv = (overrides: Record<string, string> = {}) => ({
  KAFKA_BROKERS: broker.saslSslBrokers,
  KAFKA_AUTH: "scram",
  KAFKA_SASL_USERNAME: USER,
  KAFKA_SASL_PASSWORD: PASSWORD,
  KAFKA_TLS_CA_FILE: pki.caFile,
  ...overrides,
});

/** Captures what is written to stderr (our logs) while `run` runs. */
async function captureStderr(run: () => Promise<unknown>): Promise<string> {
  let text = "";
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array) => {
    text += chunk.toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    await run().catch(() => {});
  } finally {
    process.stderr.write = write;
  }
  return text;
}

describe("SCRAM-SHA-512 over TLS on a real broker", () => {
  it("produces and consumes with the right credentials", async () => {
    const topic = `scram-${randomUUID().slice(0, 8)}`;
    const { kafka } = await connectKafka(loadConnectionConfig(scramEnv()), "scram-test");
    await ensureTopics(kafka, [{ topic }]);
    const producer = createProducer(kafka);
    await producer.connect();
    await producer.send({ topic, acks: -1, messages: [{ key: "k", value: "over tls" }] });
    await producer.disconnect();
    const records = await readTopic(kafka, topic);
    expect(records.map((r) => String(r.value))).toEqual(["over tls"]);
  });

  it("runs the processor handler over SCRAM", async () => {
    const admin = createKafka({ brokers: [broker.brokers], clientId: "scram-admin" });
    await ensureTopics(admin, [{ topic: "processed-user-login", numPartitions: 2 }, { topic: "user-login-dlq" }]);
    const config = loadProcessorConfig(scramEnv());
    const container = containerSender(config);
    const handler = createHandler({ config, getSender: container.getSender });
    const response = await handler(loadEvent("valid-batch.json"), {} as never);
    await container.close();
    expect(response.summary).toMatchObject({ in: 3, written: 3 });
    expect(await readTopic(admin, "processed-user-login")).toHaveLength(3);
  });

  it("rejects a wrong password with a clear error, and never logs the password", async () => {
    const wrong = "not-the-password-91c2";
    const config = loadProcessorConfig(scramEnv({ KAFKA_SASL_PASSWORD: wrong }));
    const container = containerSender(config);
    let failure: Error | undefined;
    const logs = await captureStderr(async () => {
      await container.getSender(loadEvent("valid-batch.json")).catch((error: Error) => {
        failure = error;
      });
    });
    expect(failure?.message).toMatch(
      /could not connect the producer to 127\.0\.0\.1:\d+ \(KAFKA_AUTH=scram\): .*authentication failed/i,
    );
    expect(failure?.message).not.toContain(wrong);
    expect(logs).not.toContain(wrong);
    expect(logs).not.toContain(PASSWORD);
  });

  it("does not let a plaintext client talk to the TLS port", async () => {
    const plain = createKafka({ brokers: [broker.saslSslBrokers], clientId: "plaintext-test", retries: 1 });
    const admin = plain.admin();
    await expect(admin.connect()).rejects.toThrow();
  });

  it("refuses a broker certificate from a CA it was not told to trust", async () => {
    const { kafka } = await connectKafka(
      loadConnectionConfig({ ...scramEnv(), KAFKA_TLS_CA_FILE: "" }),
      "untrusted-ca-test",
      { retries: 1 },
    );
    await expect(kafka.admin().connect()).rejects.toThrow(/certificate/i);
  });
});

describe("a warm producer", () => {
  it("survives a broker restart while idle: the next invocation succeeds without a new producer", async () => {
    const admin = createKafka({ brokers: [broker.brokers], clientId: "restart-admin" });
    await ensureTopics(admin, [{ topic: "processed-user-login", numPartitions: 2 }, { topic: "user-login-dlq" }]);
    const before = (await readTopic(admin, "processed-user-login")).length;
    const config = loadProcessorConfig({ KAFKA_BROKERS: broker.brokers });
    const container = containerSender(config);
    const handler = createHandler({ config, getSender: container.getSender });
    await handler(loadEvent("valid-batch.json"), {} as never);
    await broker.stop();
    await broker.start();
    const response = await handler(loadEvent("valid-batch.json"), {} as never);
    expect(response.summary.written).toBe(3);
    expect(container.connects()).toBe(1);
    await container.close();
    expect((await readTopic(admin, "processed-user-login")).length).toBe(before + 6);
  });
});
