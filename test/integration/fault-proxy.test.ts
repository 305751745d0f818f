/**
 * The fault-injecting proxy against a real broker of its own, with kafkajs clients that bootstrap at the proxy (the
 * broker's PROXIED listener advertises the proxy, so every connection of theirs goes through it), and reads that
 * bypass it. Also its framing on a fake broker: frames split and coalesced across TCP chunks.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type Server, Socket } from "node:net";
import { type Admin, type IHeaders, Kafka, type Kafka as KafkaClient, logLevel, type Producer } from "kafkajs";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { EmbeddedKafka } from "../../functions/local/embedded-kafka.ts";
import { FaultProxy } from "../../functions/local/fault-proxy.ts";
import { readTopic } from "../../functions/local/read-topic.ts";
import { createKafka, createProducer } from "../../functions/shared/kafka.ts";
import { ensureTopics } from "../../functions/shared/topics.ts";

const PRODUCE = 0;
const FETCH = 1;

let proxy: FaultProxy;
let broker: EmbeddedKafka;
let direct: KafkaClient;
let directAdmin: Admin;
/** Clients a test opened; disconnected after it. */
const opened: { disconnect(): Promise<void> }[] = [];
/** What kafkajs threw under each fault, printed at the end for the record. */
const observed: string[] = [];

beforeAll(async () => {
  // Proxy first: it holds its port while the broker starts, and reads the broker's real port per connection.
  proxy = new FaultProxy({ targetPort: () => broker.proxiedPort });
  const port = await proxy.start();
  broker = new EmbeddedKafka({ heap: "512m", proxiedListener: { advertisedPort: port } });
  await broker.start();
  direct = createKafka({ brokers: [broker.brokers], clientId: "direct" });
  directAdmin = direct.admin();
  await directAdmin.connect();
});
afterEach(async () => {
  proxy.clear();
  proxy.refuseConnections(false);
  await Promise.all(opened.splice(0).map((client) => client.disconnect().catch(() => {})));
});
afterAll(async () => {
  if (observed.length > 0) console.info(`fault proxy, kafkajs under faults:\n  ${observed.join("\n  ")}`);
  await directAdmin?.disconnect();
  await proxy?.stop();
  await broker?.destroy();
});

/** A kafkajs client that bootstraps at the proxy. */
function viaProxy(clientId: string, retries = 0): KafkaClient {
  return createKafka({ brokers: [broker.proxiedBrokers], clientId, retries });
}

async function connected<T extends Producer | Admin>(client: T): Promise<T> {
  opened.push(client);
  await client.connect();
  return client;
}

/** A plain producer: no idempotence, no retries, so each send is one Produce request. */
function plainProducer(kafka: KafkaClient, retries = 0): Promise<Producer> {
  return connected(kafka.producer({ idempotent: false, retry: { retries } }));
}

async function newTopic(partitions = 1): Promise<string> {
  const topic = `fault-proxy-${randomUUID()}`;
  await ensureTopics(direct, [{ topic, numPartitions: partitions }]);
  return topic;
}

/** Records on the topic, counted on the broker directly (not through the proxy). */
async function recordCount(topic: string): Promise<number> {
  const offsets = await directAdmin.fetchTopicOffsets(topic);
  return offsets.reduce((sum, p) => sum + Number(p.high) - Number(p.low), 0);
}

const messages = (count: number, tag = "m") =>
  Array.from({ length: count }, (_, i) => ({ key: `${tag}-${i}`, value: `value-${tag}-${i}` }));

/** The error and its causes, as `Name: message` lines. */
function errorChain(error: unknown): string[] {
  const chain: string[] = [];
  let current: unknown = error;
  while (current instanceof Error && chain.length < 6) {
    chain.push(`${current.name}: ${current.message}`);
    current = (current as { cause?: unknown }).cause;
  }
  return chain;
}

async function failure(what: string, run: Promise<unknown>): Promise<string[]> {
  const error = await run.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, `${what} should fail`).toBeInstanceOf(Error);
  const chain = errorChain(error);
  observed.push(`${what}: ${chain.join(" <- ")}`);
  return chain;
}

describe("the fault proxy on a real broker", () => {
  it("forwards produce and fetch byte-exact when no fault applies", async () => {
    const topic = await newTopic(3);
    const before = { ...proxy.stats.requests };
    const kafka = viaProxy("clean", 3);
    const producer = await connected(createProducer(kafka));
    const sent = Array.from({ length: 300 }, (_, i) => ({
      key: randomBytes(16),
      // Up to 20 KB: fetch responses span many TCP chunks, small requests share them.
      value: i % 50 === 0 ? randomBytes(20_000) : randomBytes(1 + (i % 700)),
      headers: { binary: randomBytes(8), text: `header-${i}`, empty: Buffer.alloc(0) } as IHeaders,
    }));
    for (let i = 0; i < sent.length; i += 100) {
      await producer.send({ topic, acks: -1, messages: sent.slice(i, i + 100) });
    }
    const throughProxy = await readTopic(kafka, topic);
    const straight = await readTopic(direct, topic);
    expect(throughProxy).toHaveLength(sent.length);
    expect(straight).toHaveLength(sent.length);
    const byKey = new Map(throughProxy.map((r) => [r.key?.toString("hex"), r]));
    for (const record of sent) {
      const got = byKey.get(record.key.toString("hex"));
      expect(got, record.key.toString("hex")).toBeDefined();
      expect(got?.value?.equals(record.value)).toBe(true);
      for (const [name, value] of Object.entries(record.headers)) {
        expect(Buffer.compare(got?.headers[name] as Buffer, Buffer.from(value as Buffer | string))).toBe(0);
      }
    }
    expect(throughProxy.map((r) => `${r.partition}/${r.offset}/${r.value?.toString("hex")}`)).toEqual(
      straight.map((r) => `${r.partition}/${r.offset}/${r.value?.toString("hex")}`),
    );
    expect((proxy.stats.requests[PRODUCE] ?? 0) - (before[PRODUCE] ?? 0)).toBeGreaterThanOrEqual(3);
    expect((proxy.stats.requests[FETCH] ?? 0) - (before[FETCH] ?? 0)).toBeGreaterThanOrEqual(1);
    expect(proxy.stats.connections).toBeGreaterThan(0);
    const valueBytes = sent.reduce((sum, r) => sum + r.value.length, 0);
    expect(proxy.stats.bytesToBroker).toBeGreaterThan(valueBytes);
    expect(proxy.stats.bytesToClient).toBeGreaterThan(valueBytes);
  });

  it("drop-request: the send fails and the broker never writes the records", async () => {
    const topic = await newTopic();
    const producer = await plainProducer(viaProxy("victim-drop-request"));
    const fired = proxy.stats.faults["drop-request"];
    proxy.inject({ kind: "drop-request", apiKey: PRODUCE, clientId: "victim-drop-request" });
    await failure("drop-request, plain producer", producer.send({ topic, acks: -1, messages: messages(10) }));
    expect(proxy.stats.faults["drop-request"]).toBe(fired + 1);
    expect(await recordCount(topic)).toBe(0);
    // The fault fired once (times: 1): the same producer reconnects and its next send goes through.
    await producer.send({ topic, acks: -1, messages: messages(10, "again") });
    expect(await recordCount(topic)).toBe(10);
  });

  it("drop-response: the send fails but the broker has written the records", async () => {
    const topic = await newTopic();
    const producer = await plainProducer(viaProxy("victim-drop-response"));
    const fired = proxy.stats.faults["drop-response"];
    proxy.inject({ kind: "drop-response", apiKey: PRODUCE, clientId: /^victim-drop-resp/ });
    await failure("drop-response, plain producer", producer.send({ topic, acks: -1, messages: messages(10) }));
    expect(proxy.stats.faults["drop-response"]).toBe(fired + 1);
    expect(await recordCount(topic)).toBe(10);
  });

  it("drop-response: a retrying plain producer writes twice, an idempotent one once", async () => {
    const plainTopic = await newTopic();
    const plain = await plainProducer(viaProxy("retry-plain", 2), 2);
    const produces = () => proxy.stats.requests[PRODUCE] ?? 0;
    let before = produces();
    proxy.inject({ kind: "drop-response", apiKey: PRODUCE, clientId: "retry-plain" });
    await plain.send({ topic: plainTopic, acks: -1, messages: messages(10) });
    expect(produces() - before).toBe(2);
    expect(await recordCount(plainTopic)).toBe(20);

    const idempotentTopic = await newTopic();
    const idempotent = await connected(
      viaProxy("retry-idempotent", 2).producer({ idempotent: true, maxInFlightRequests: 1, retry: { retries: 2 } }),
    );
    const fired = proxy.stats.faults["drop-response"];
    before = produces();
    proxy.inject({ kind: "drop-response", apiKey: PRODUCE, clientId: "retry-idempotent" });
    await idempotent.send({ topic: idempotentTopic, acks: -1, messages: messages(10) });
    expect(proxy.stats.faults["drop-response"]).toBe(fired + 1);
    expect(produces() - before).toBe(2);
    // The retry carries the same producer id and sequence: the broker answers from its cache, writes nothing.
    expect(await recordCount(idempotentTopic)).toBe(10);
    observed.push("drop-response: plain producer with retries wrote the batch twice; idempotent producer once");
  });

  it("delay-response: a response later than requestTimeout fails the send with a timeout", async () => {
    const topic = await newTopic();
    const slow = new Kafka({
      clientId: "slow-broker-victim",
      brokers: [broker.proxiedBrokers],
      requestTimeout: 1000,
      retry: { retries: 0 },
      logLevel: logLevel.NOTHING,
    });
    const producer = await plainProducer(slow);
    proxy.inject({ kind: "delay-response", apiKey: PRODUCE, ms: 2500, clientId: "slow-broker-victim" });
    const started = Date.now();
    const chain = await failure(
      "delay-response 2500 ms, requestTimeout 1000 ms",
      producer.send({ topic, acks: -1, messages: messages(5) }),
    );
    const elapsed = Date.now() - started;
    expect(chain.join("\n")).toMatch(/KafkaJSRequestTimeoutError|timed out/);
    expect(elapsed).toBeGreaterThanOrEqual(900);
    expect(elapsed).toBeLessThan(2500);
    // The broker did apply it: only the answer was late.
    expect(await recordCount(topic)).toBe(5);
  });

  it("delay-response: a response held for less than the timeout arrives late, and the send succeeds", async () => {
    const topic = await newTopic();
    const producer = await plainProducer(viaProxy("patient"));
    proxy.inject({ kind: "delay-response", apiKey: PRODUCE, ms: 400, clientId: "patient" });
    const started = Date.now();
    await producer.send({ topic, acks: -1, messages: messages(5) });
    expect(Date.now() - started).toBeGreaterThanOrEqual(390);
    expect(await recordCount(topic)).toBe(5);
  });

  it("filters on clientId: a fault for 'victim' leaves 'bystander' alone", async () => {
    const topic = await newTopic();
    const bystander = await plainProducer(viaProxy("bystander"));
    const victim = await plainProducer(viaProxy("victim"));
    const fired = proxy.stats.faults["drop-request"];
    proxy.inject({ kind: "drop-request", apiKey: PRODUCE, clientId: "victim", times: Number.POSITIVE_INFINITY });
    for (let i = 0; i < 3; i++) await bystander.send({ topic, acks: -1, messages: messages(2, `bystander-${i}`) });
    expect(proxy.stats.faults["drop-request"]).toBe(fired);
    await failure(
      "drop-request for clientId victim",
      victim.send({ topic, acks: -1, messages: messages(2, "victim") }),
    );
    expect(proxy.stats.faults["drop-request"]).toBe(fired + 1);
    expect(await recordCount(topic)).toBe(6);
    // times: Infinity keeps firing; clear() ends it.
    await failure("drop-request, second time", victim.send({ topic, acks: -1, messages: messages(2, "victim") }));
    expect(proxy.stats.faults["drop-request"]).toBe(fired + 2);
    proxy.clear();
    await victim.send({ topic, acks: -1, messages: messages(2, "victim") });
    expect(await recordCount(topic)).toBe(8);
  });

  it("refuseConnections: a new client cannot connect until it is turned off", async () => {
    const refused = proxy.stats.refused;
    proxy.refuseConnections(true);
    await failure("refuseConnections, admin.connect", connected(viaProxy("refused").admin()));
    expect(proxy.stats.refused).toBeGreaterThan(refused);
    proxy.refuseConnections(false);
    const admin = await connected(viaProxy("accepted").admin());
    const topic = await newTopic();
    expect(await admin.listTopics()).toContain(topic);
  });

  it("close-after-bytes: the matching new connection is cut during its handshake", async () => {
    const fired = proxy.stats.faults["close-after-bytes"];
    proxy.inject({ kind: "close-after-bytes", bytes: 10, clientId: "cut-short" });
    // Another client's new connection does not match the filter.
    await connected(viaProxy("not-cut").admin());
    expect(proxy.stats.faults["close-after-bytes"]).toBe(fired);
    await failure("close-after-bytes 10, admin.connect", connected(viaProxy("cut-short").admin()));
    expect(proxy.stats.faults["close-after-bytes"]).toBe(fired + 1);
    await connected(viaProxy("cut-short").admin());
  });

  it("dropAll: live connections are cut and a retrying producer reconnects", async () => {
    const topic = await newTopic();
    const producer = await connected(createProducer(viaProxy("dropped-all", 3), 3));
    await producer.send({ topic, acks: -1, messages: messages(3, "before") });
    expect(proxy.openConnections).toBeGreaterThan(0);
    const connections = proxy.stats.connections;
    proxy.dropAll();
    expect(proxy.openConnections).toBe(0);
    await producer.send({ topic, acks: -1, messages: messages(3, "after") });
    expect(proxy.stats.connections).toBeGreaterThan(connections);
    expect(await recordCount(topic)).toBe(6);
  });
});

describe("the fault proxy's framing, on a fake broker", () => {
  /** Answers each request frame with `size, correlationId, the request's bytes`; keeps what it received. */
  async function fakeBroker(): Promise<{ server: Server; port: number; received: Buffer[] }> {
    const received: Buffer[] = [];
    const server = createServer((socket) => {
      let buffer = Buffer.alloc(0);
      socket.on("error", () => {});
      socket.on("data", (chunk: Buffer) => {
        buffer = Buffer.concat([buffer, chunk]);
        while (buffer.length >= 4 && buffer.length >= 4 + buffer.readInt32BE(0)) {
          const frame = buffer.subarray(0, 4 + buffer.readInt32BE(0));
          buffer = buffer.subarray(frame.length);
          received.push(Buffer.from(frame));
          const response = Buffer.alloc(8);
          response.writeInt32BE(4 + frame.length, 0);
          response.writeInt32BE(frame.readInt32BE(8), 4);
          socket.write(Buffer.concat([response, frame]));
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    return { server, port: address && typeof address === "object" ? address.port : 0, received };
  }

  function request(apiKey: number, correlationId: number, clientId: string, body: Buffer): Buffer {
    const id = Buffer.from(clientId);
    const header = Buffer.alloc(14);
    header.writeInt32BE(10 + id.length + body.length, 0);
    header.writeInt16BE(apiKey, 4);
    header.writeInt16BE(3, 6);
    header.writeInt32BE(correlationId, 8);
    header.writeInt16BE(id.length, 12);
    return Buffer.concat([header, id, body]);
  }

  it("forwards split and coalesced frames byte-exact, and holds later responses behind a delayed one", async () => {
    const fake = await fakeBroker();
    const local = new FaultProxy({ targetPort: fake.port });
    const port = await local.start();
    const socket = new Socket();
    try {
      await new Promise<void>((resolve) => socket.connect(port, "127.0.0.1", resolve));
      const frames = [
        request(3, 1, "framing", randomBytes(5)),
        request(1, 2, "framing", randomBytes(70_000)),
        request(0, 3, "framing", randomBytes(300)),
        request(8, 4, "", Buffer.alloc(0)),
      ];
      local.inject({ kind: "delay-response", apiKey: 1, ms: 300 });
      const responses: Buffer[] = [];
      let buffer = Buffer.alloc(0);
      const arrivals: number[] = [];
      const all = new Promise<void>((resolve) => {
        socket.on("data", (chunk: Buffer) => {
          buffer = Buffer.concat([buffer, chunk]);
          while (buffer.length >= 4 && buffer.length >= 4 + buffer.readInt32BE(0)) {
            responses.push(buffer.subarray(0, 4 + buffer.readInt32BE(0)));
            arrivals.push(Date.now());
            buffer = buffer.subarray(4 + buffer.readInt32BE(0));
            if (responses.length === frames.length) resolve();
          }
        });
      });
      const started = Date.now();
      // Two frames and a half in one write, then the rest one byte at a time.
      const stream = Buffer.concat(frames);
      const firstWrite = stream.length - (frames[2]?.length ?? 0) - (frames[3]?.length ?? 0) + 100;
      socket.setNoDelay(true);
      socket.write(stream.subarray(0, firstWrite));
      for (let i = firstWrite; i < stream.length; i++) {
        await new Promise((resolve) => socket.write(stream.subarray(i, i + 1), () => setImmediate(resolve)));
      }
      await all;
      expect(fake.received.map((f) => f.toString("hex"))).toEqual(frames.map((f) => f.toString("hex")));
      expect(responses.map((r) => r.readInt32BE(4))).toEqual([1, 2, 3, 4]);
      expect(responses.map((r) => r.subarray(8).toString("hex"))).toEqual(frames.map((f) => f.toString("hex")));
      // Response 2 was held 300 ms; 3 and 4 queued behind it, in order.
      expect((arrivals[1] ?? 0) - started).toBeGreaterThanOrEqual(290);
      expect(arrivals[3] ?? 0).toBeGreaterThanOrEqual(arrivals[1] ?? 0);
      expect(local.stats.requests).toEqual({ 0: 1, 1: 1, 3: 1, 8: 1 });
      expect(local.stats.responses).toBe(4);
      expect(local.stats.faults["delay-response"]).toBe(1);
      expect(local.stats.bytesToBroker).toBe(stream.length);
    } finally {
      socket.destroy();
      await local.stop();
      await new Promise((resolve) => fake.server.close(resolve));
    }
  });

  it("drop-request sends the broker half a frame; drop-response delivers the request whole and no answer", async () => {
    const fake = await fakeBroker();
    const local = new FaultProxy({ targetPort: fake.port });
    const port = await local.start();
    const exchange = async (frame: Buffer) => {
      const socket = new Socket();
      socket.on("error", () => {});
      let got = 0;
      socket.on("data", (chunk: Buffer) => {
        got += chunk.length;
      });
      const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
      socket.connect(port, "127.0.0.1", () => socket.write(frame));
      await closed;
      return got;
    };
    try {
      local.inject({ kind: "drop-request", apiKey: 0 });
      expect(await exchange(request(0, 7, "x", randomBytes(1000)))).toBe(0);
      expect(fake.received).toHaveLength(0);
      expect(local.stats.bytesToBroker).toBe(Math.floor((14 + 1 + 1000) / 2));

      local.inject({ kind: "drop-response", apiKey: 0 });
      const whole = request(0, 8, "x", randomBytes(1000));
      expect(await exchange(whole)).toBe(0);
      expect(fake.received.map((f) => f.toString("hex"))).toEqual([whole.toString("hex")]);
      expect(local.stats.faults).toMatchObject({ "drop-request": 1, "drop-response": 1 });
      expect(local.openConnections).toBe(0);
    } finally {
      await local.stop();
      await new Promise((resolve) => fake.server.close(resolve));
    }
  });
});
