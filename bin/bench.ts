/**
 * npm run bench [-- --quick] [--brokers B]
 * Where the time goes: the processing core against its floor, the handler with a real producer against producing the
 * same records without it, the whole pipeline against a plain topic-to-topic copy with the same client, cold start and
 * memory of the bundled handler, kafkajs against @platformatic/kafka on the same produce workload, each compression
 * codec (bytes per record on the wire, CPU per record to compress and decompress), and a cost model from those figures.
 * Prints a table and writes bench/results.json.
 *
 * Every in-process figure is measured **warm** (after a warm-up pass of the same work, as a Lambda container is after
 * its first invocations); **cold** figures come from fresh processes (the first event after the import). Figures are
 * medians of several runs with their min..max; the machine is noisy, so ratios measured side by side matter most.
 */
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { Producer as PlatformaticProducer, ProduceAcks } from "@platformatic/kafka";
import { build } from "esbuild";
import { CompressionTypes, type IHeaders, type Kafka, Partitioners, type Producer, type TopicMessages } from "kafkajs";
import type { MskEvent, MskRecord } from "../functions/core/msk.ts";
import { type OutputRecord, processEvent } from "../functions/core/process.ts";
import { GeneratorModel } from "../functions/generator/model.ts";
import { EmbeddedKafka } from "../functions/local/embedded-kafka.ts";
import { type FunctionEnvironment, MskEventSourceHarness } from "../functions/local/harness.ts";
import { workerEnvironment } from "../functions/local/worker-environment.ts";
import { containerSender, createHandler } from "../functions/processor/processor.ts";
import { nextRequest } from "../functions/processor/sender.ts";
import { CODECS } from "../functions/shared/codecs.ts";
import { loadProcessorConfig, parseBrokers } from "../functions/shared/config.ts";
import { createKafka, createProducer } from "../functions/shared/kafka.ts";
import { setLogLevel } from "../functions/shared/log.ts";
import { sizeConfigs } from "../functions/shared/topic-settings.ts";
import { ensureTopics, groupLag } from "../functions/shared/topics.ts";
import { bundleOptions, PROJECT_ROOT } from "../lib/bundling.ts";
import { parseFlags, runMain } from "./cli.ts";

const USAGE = `usage: npm run bench [-- --quick] [--brokers B]
  --quick      fewer records and runs (a smoke run, about a minute)
  --brokers B  use this broker instead of starting the embedded one`;

interface Figure {
  median: number;
  min: number;
  max: number;
  runs: number;
}

function figure(values: number[]): Figure {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    median: sorted[Math.floor(sorted.length / 2)] as number,
    min: sorted[0] as number,
    max: sorted[sorted.length - 1] as number,
    runs: values.length,
  };
}

const fmt = (f: Figure, digits = 0) =>
  `${f.median.toFixed(digits)} (${f.min.toFixed(digits)}..${f.max.toFixed(digits)}, n=${f.runs})`;

/** 10,000-record MSK events of generated traffic, as Lambda would deliver them (base64, headers). */
function mskEvents(records: number, perEvent: number, invalidRatio: number, seed: number, padTo = 0): MskEvent[] {
  const model = new GeneratorModel({ seed, invalidRatio });
  const events: MskEvent[] = [];
  for (let offset = 0; offset < records; offset += perEvent) {
    const grouped: Record<string, MskRecord[]> = {};
    for (let i = 0; i < Math.min(perEvent, records - offset); i++) {
      const record = model.next();
      let value = record.value;
      if (padTo > 0 && typeof value === "string")
        value = value.replace(/}$/, `, "pad": "${"x".repeat(Math.max(0, padTo - value.length))}"}`);
      const partition = i % 3;
      const list = grouped[`user-login-${partition}`] ?? [];
      list.push({
        topic: "user-login",
        partition,
        offset: offset + i,
        timestamp: Date.now(),
        timestampType: "CREATE_TIME",
        key: Buffer.from(record.key).toString("base64"),
        value: value === null ? null : Buffer.from(value).toString("base64"),
        headers: [{ "trace-id": [...Buffer.from(`t-${offset + i}`)] }],
      });
      grouped[`user-login-${partition}`] = list;
    }
    events.push({
      eventSource: "aws:kafka",
      eventSourceArn: "arn:aws:kafka:bench",
      bootstrapServers: "",
      records: grouped,
    });
  }
  return events;
}

const OPTIONS = {
  topics: { processed: "processed-user-login", deadLetter: "user-login-dlq" },
  processedAt: new Date().toISOString(),
};

const recordCount = (events: readonly MskEvent[]) =>
  events.reduce((n, e) => n + Object.values(e.records).reduce((m, l) => m + l.length, 0), 0);

/**
 * The floor under the core, on the same events: only what no implementation can skip per record (base64 decode,
 * UTF-8 decode, JSON.parse of the value, JSON.stringify of a result); no validation, headers or transform.
 */
function floorPass(events: readonly MskEvent[]): number {
  const decoder = new TextDecoder("utf-8", { fatal: false });
  let sink = 0;
  for (const event of events) {
    for (const group in event.records) {
      for (const record of event.records[group] as MskRecord[]) {
        if (!record.value) continue;
        const text = decoder.decode(Buffer.from(record.value, "base64"));
        try {
          sink += JSON.stringify(JSON.parse(text)).length;
        } catch {
          sink += 1;
        }
      }
    }
  }
  return sink;
}

/**
 * The core and its floor, warm: one pass of each over all events first (the warm-up), then `runs` runs, core and floor
 * taking turns within each run so that they see the same machine. The ratio is per run pair. The 20%-invalid events
 * come after, with a warm-up of their own: each figure is warmed up on its own work (the error paths of a poisoned
 * stream make V8 reoptimize the core for them, which is not what a container of normal traffic runs).
 */
function benchCoreWarm(events: MskEvent[], poisoned: MskEvent[], runs: number) {
  const records = recordCount(events);
  for (const event of events) processEvent(event, OPTIONS);
  let sink = floorPass(events);
  const core: number[] = [];
  const floor: number[] = [];
  const invalid: number[] = [];
  for (let run = 0; run < runs; run++) {
    let started = process.hrtime.bigint();
    for (const event of events) processEvent(event, OPTIONS);
    core.push((records * 1e9) / Number(process.hrtime.bigint() - started));
    started = process.hrtime.bigint();
    sink += floorPass(events);
    floor.push((records * 1e9) / Number(process.hrtime.bigint() - started));
  }
  for (const event of poisoned) processEvent(event, OPTIONS);
  for (let run = 0; run < runs; run++) {
    const started = process.hrtime.bigint();
    for (const event of poisoned) processEvent(event, OPTIONS);
    invalid.push((recordCount(poisoned) * 1e9) / Number(process.hrtime.bigint() - started));
  }
  if (sink < 0) console.log(sink);
  const rate = figure(core);
  const floorRate = figure(floor);
  return {
    recordsPerSecond: rate,
    nsPerRecord: figure(core.map((r) => 1e9 / r)),
    floorRecordsPerSecond: floorRate,
    ratioToFloor: rate.median / floorRate.median,
    ratioToFloorPerRun: figure(core.map((c, i) => c / (floor[i] as number))),
    invalid20RecordsPerSecond: figure(invalid),
  };
}

/** kafkajs's own record and record batch encoders: the bytes its producer sends (no public API for them). */
const kafkajsInternals = createRequire(import.meta.url);
type Encoder = { buffer: Buffer; size(): number };
const encodeRecord = kafkajsInternals("kafkajs/src/protocol/recordBatch/record/v0/index.js") as (record: {
  offsetDelta: number;
  key: Buffer | string | null;
  value: Buffer | string | null;
  headers: IHeaders;
}) => Encoder;
const { RecordBatch } = kafkajsInternals("kafkajs/src/protocol/recordBatch/v0/index.js") as {
  RecordBatch: (batch: { compression: number; records: Encoder[]; lastOffsetDelta: number }) => Promise<Encoder>;
};
const EncoderClass = kafkajsInternals("kafkajs/src/protocol/encoder.js") as new () => {
  writeEncoderArray(records: Encoder[]): Encoder;
};

/** Records per batch: a 100-record invocation (the stack's batch size) over the processed topic's 3 partitions. */
const RECORDS_PER_BATCH = 34;

interface CodecFigures {
  implementation: string;
  bytesPerRecord: number;
  ratioToNone: number;
  compressCpuUsPerRecord: Figure;
  decompressCpuUsPerRecord: Figure;
}

/**
 * Each codec on the same record batches of processed-user-login outputs, as kafkajs encodes them: the whole batch's
 * bytes on the wire per record (RecordBatch, its 61-byte header included), and the process's CPU time (user +
 * system, so zlib's thread pool counts too) per record to compress the batch's records and to decompress them. The
 * codecs take turns within each run, so they see the same machine.
 */
async function benchCodecs(
  outputs: readonly OutputRecord[],
  sources: readonly MskRecord[],
  runs: number,
  rounds: number,
) {
  // The source records as the event source mapping fetches them (uncompressed, as the generator writes them).
  let sourceBytes = 0;
  let sourceCount = 0;
  for (let start = 0; start + RECORDS_PER_BATCH <= sources.length; start += RECORDS_PER_BATCH) {
    const records = sources.slice(start, start + RECORDS_PER_BATCH).map((record, offsetDelta) =>
      encodeRecord({
        offsetDelta,
        key: record.key ? Buffer.from(record.key, "base64") : null,
        value: record.value ? Buffer.from(record.value, "base64") : null,
        headers: Object.fromEntries(
          (record.headers ?? []).flatMap((h) => Object.entries(h).map(([k, v]) => [k, Buffer.from(v ?? [])])),
        ),
      }),
    );
    sourceBytes += (
      await RecordBatch({ compression: CompressionTypes.None, records, lastOffsetDelta: records.length - 1 })
    ).size();
    sourceCount += records.length;
  }
  const batches: Encoder[][] = [];
  const processed = outputs.filter((output) => output.kind === "processed");
  for (let start = 0; start + RECORDS_PER_BATCH <= processed.length; start += RECORDS_PER_BATCH) {
    batches.push(
      processed.slice(start, start + RECORDS_PER_BATCH).map((output, offsetDelta) =>
        encodeRecord({
          offsetDelta,
          key: output.key,
          value: output.value,
          headers: Object.fromEntries(
            Object.entries(output.headers).map(([name, value]) => [
              name,
              Array.isArray(value) ? value.map((v) => v ?? Buffer.alloc(0)) : (value ?? Buffer.alloc(0)),
            ]),
          ) as IHeaders,
        }),
      ),
    );
  }
  const records = batches.length * RECORDS_PER_BATCH;
  const raw = batches.map((batch) => new EncoderClass().writeEncoderArray(batch).buffer);
  const wireBytes = async (compression: number) => {
    let bytes = 0;
    for (const batch of batches)
      bytes += (await RecordBatch({ compression, records: batch, lastOffsetDelta: batch.length - 1 })).size();
    return bytes / records;
  };
  const noneBytes = await wireBytes(CompressionTypes.None);
  const codecs = Object.entries(CODECS);
  const compressed = new Map<string, Buffer[]>();
  for (const [name, codec] of codecs) compressed.set(name, await Promise.all(raw.map((r) => codec.compress(r))));
  const cpuUs = async (work: () => Promise<unknown>) => {
    const before = process.cpuUsage();
    for (let round = 0; round < rounds; round++) await work();
    const used = process.cpuUsage(before);
    return (used.user + used.system) / (rounds * records);
  };
  const compressUs = new Map<string, number[]>(codecs.map(([name]) => [name, []]));
  const decompressUs = new Map<string, number[]>(codecs.map(([name]) => [name, []]));
  for (let run = 0; run < runs + 1; run++) {
    for (const [name, codec] of codecs) {
      const c = await cpuUs(async () => {
        for (const r of raw) await codec.compress(r);
      });
      const inputs = compressed.get(name) as Buffer[];
      const d = await cpuUs(async () => {
        for (const input of inputs) await codec.decompress(input);
      });
      if (run === 0) continue; // warm-up
      compressUs.get(name)?.push(c);
      decompressUs.get(name)?.push(d);
    }
  }
  const result: Record<string, unknown> = {
    recordsPerBatch: RECORDS_PER_BATCH,
    batches: batches.length,
    none: { bytesPerRecord: noneBytes },
    source: { bytesPerRecord: sourceBytes / sourceCount },
  };
  for (const [name, codec] of codecs) {
    const bytesPerRecord = await wireBytes(codec.type);
    result[name] = {
      implementation: codec.implementation,
      bytesPerRecord,
      ratioToNone: bytesPerRecord / noneBytes,
      compressCpuUsPerRecord: figure(compressUs.get(name) as number[]),
      decompressCpuUsPerRecord: figure(decompressUs.get(name) as number[]),
    } satisfies CodecFigures;
  }
  return result as {
    recordsPerBatch: number;
    batches: number;
    none: { bytesPerRecord: number };
    source: { bytesPerRecord: number };
  } & Record<string, CodecFigures>;
}

async function produceAll(kafka: Kafka, topic: string, events: MskEvent[]): Promise<number> {
  const producer = createProducer(kafka);
  await producer.connect();
  let count = 0;
  for (const event of events) {
    const messages = Object.values(event.records)
      .flat()
      .map((r) => ({
        key: r.key ? Buffer.from(r.key, "base64") : null,
        value: r.value ? Buffer.from(r.value, "base64") : null,
      }));
    for (let i = 0; i < messages.length; i += 5000)
      await producer.send({ topic, acks: -1, messages: messages.slice(i, i + 5000) });
    count += messages.length;
  }
  await producer.disconnect();
  return count;
}

async function lagZero(kafka: Kafka, groupId: string, topic: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await groupLag(kafka, groupId, topic)) === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`group ${groupId} did not catch up on ${topic} in time`);
}

interface RunFigures {
  recordsPerSecond: number;
  /** This process's CPU time (every thread) per record. */
  processCpuMicrosPerRecord: number;
  /** This process's CPU time over the run's wall time (1 = one core busy). */
  processCpuShare: number;
  /** The embedded broker's CPU time over the run's wall time. */
  brokerCpuShare?: number;
}

/** The embedded broker's CPU time so far in ms (Linux /proc, user + system, 100 ticks/s); undefined on --brokers. */
function brokerCpu(broker: EmbeddedKafka | undefined): (() => number) | undefined {
  const pid = broker?.pid;
  if (pid === undefined) return undefined;
  return () => {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
    return (Number(fields[11]) + Number(fields[12])) * 10;
  };
}

/** Runs `run` (which returns records/s for `count` records) and measures the CPU it and the broker spent. */
async function measuredRun(
  count: number,
  brokerCpuMs: (() => number) | undefined,
  run: () => Promise<number>,
): Promise<RunFigures> {
  const broker = brokerCpuMs?.();
  let recordsPerSecond = 0;
  const { ms, cpuUs } = await measured(async () => {
    recordsPerSecond = await run();
  });
  return {
    recordsPerSecond,
    processCpuMicrosPerRecord: cpuUs / count,
    processCpuShare: cpuUs / 1000 / ms,
    ...(brokerCpuMs && broker !== undefined ? { brokerCpuShare: (brokerCpuMs() - broker) / ms } : {}),
  };
}

/** A processed topic and a DLQ for one run (or for the warm environments' runs). */
async function benchTopics(kafka: Kafka): Promise<{ processed: string; deadLetter: string }> {
  const id = randomUUID().slice(0, 8);
  const topics = { processed: `bench-processed-${id}`, deadLetter: `bench-dlq-${id}` };
  await ensureTopics(kafka, [
    { topic: topics.processed, numPartitions: 3, configs: sizeConfigs("processed") },
    { topic: topics.deadLetter, numPartitions: 1, configs: sizeConfigs("deadLetter") },
  ]);
  return topics;
}

/**
 * Execution environments kept warm from one run to the next, as Lambda keeps them between invocations: the harness's
 * close returns an environment here; `close` ends them all.
 */
function warmEnvironments(make: () => FunctionEnvironment) {
  const idle: FunctionEnvironment[] = [];
  const all: FunctionEnvironment[] = [];
  return {
    newEnvironment: (): FunctionEnvironment => {
      let environment = idle.pop();
      if (!environment) {
        environment = make();
        all.push(environment);
      }
      const kept = environment;
      return { ...kept, close: async () => void idle.push(kept) };
    },
    close: () => Promise.all(all.map((environment) => environment.close())),
  };
}

/** The pipeline (harness + handler) draining `source`, in records/s. */
async function pipelineRun(
  kafka: Kafka,
  brokers: string[],
  source: string,
  count: number,
  /** Worker environments (their processor writes to their own topics), as `npm run harness -- --concurrency N`. */
  environments?: { concurrency: number; newEnvironment: () => FunctionEnvironment },
): Promise<number> {
  const id = randomUUID().slice(0, 8);
  const { processed, deadLetter } = await benchTopics(kafka);
  const config = loadProcessorConfig({
    KAFKA_BROKERS: brokers.join(","),
    SOURCE_TOPIC: source,
    PROCESSED_TOPIC: processed,
    DLQ_TOPIC: deadLetter,
  });
  const container = containerSender(config);
  const handler = createHandler({ config, getSender: container.getSender });
  const groupId = `bench-pipeline-${id}`;
  const harness = new MskEventSourceHarness({
    kafka,
    bootstrapServers: brokers.join(","),
    topic: source,
    groupId,
    batchSize: 10_000,
    batchWindowMs: 100,
    // Throughput only: nothing fails here, so no on-failure topic to create.
    onFailureTopic: null,
    ...(environments ?? { invoke: (e: MskEvent) => handler(e, {} as never) }),
  });
  const started = performance.now();
  await harness.start();
  await lagZero(kafka, groupId, source, 600_000);
  const seconds = (performance.now() - started) / 1000;
  await harness.stop();
  await container.close();
  return count / seconds;
}

/** The baseline: the same client copies `source` to another topic, no processing, same batch shapes. */
async function copyRun(kafka: Kafka, source: string, count: number): Promise<number> {
  const id = randomUUID().slice(0, 8);
  const target = `bench-copy-${id}`;
  await ensureTopics(kafka, [{ topic: target, numPartitions: 3 }]);
  const producer = createProducer(kafka);
  await producer.connect();
  const groupId = `bench-copy-${id}`;
  const consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 100, maxBytesPerPartition: 1024 * 1024 });
  await consumer.connect();
  await consumer.subscribe({ topic: source, fromBeginning: true });
  const started = performance.now();
  await consumer.run({
    autoCommit: false,
    partitionsConsumedConcurrently: 64,
    eachBatch: async ({ batch, resolveOffset, commitOffsetsIfNecessary }) => {
      await producer.sendBatch({
        acks: -1,
        topicMessages: [
          { topic: target, messages: batch.messages.map((m) => ({ key: m.key, value: m.value, headers: m.headers })) },
        ],
      });
      resolveOffset(batch.lastOffset());
      await commitOffsetsIfNecessary({
        topics: [
          {
            topic: batch.topic,
            partitions: [{ partition: batch.partition, offset: String(Number(batch.lastOffset()) + 1) }],
          },
        ],
      });
    },
  });
  await lagZero(kafka, groupId, source, 600_000);
  const seconds = (performance.now() - started) / 1000;
  await consumer.disconnect();
  await producer.disconnect();
  return count / seconds;
}

/** The same produce workload through kafkajs (as the handler sends) and @platformatic/kafka, in records/s. */
async function clientRuns(kafka: Kafka, brokers: string[], outputs: OutputRecord[], runs: number) {
  const topic = `bench-clients-${randomUUID().slice(0, 8)}`;
  await ensureTopics(kafka, [{ topic, numPartitions: 3 }]);
  const chunks: OutputRecord[][] = [];
  let chunk: OutputRecord[] = [];
  let bytes = 0;
  for (const output of outputs) {
    const size = output.bytes;
    if (chunk.length > 0 && bytes + size > 1024 * 1024) {
      chunks.push(chunk);
      chunk = [];
      bytes = 0;
    }
    chunk.push(output);
    bytes += size;
  }
  if (chunk.length) chunks.push(chunk);
  const kafkajs = createProducer(kafka);
  await kafkajs.connect();
  const platformatic = new PlatformaticProducer({
    clientId: "bench-platformatic",
    bootstrapBrokers: brokers,
    idempotent: true,
    acks: ProduceAcks.ALL,
  });
  const toBuffer = (v: Buffer | string | null) => (v === null ? undefined : typeof v === "string" ? Buffer.from(v) : v);
  const result = { kafkajs: [] as number[], platformatic: [] as number[] };
  for (let run = 0; run < runs; run++) {
    let started = performance.now();
    for (const c of chunks) {
      await kafkajs.send({
        topic,
        acks: -1,
        messages: c.map((o) => ({ key: o.key, value: o.value, headers: o.headers as IHeaders })),
      });
    }
    result.kafkajs.push(outputs.length / ((performance.now() - started) / 1000));
    started = performance.now();
    for (const c of chunks) {
      await platformatic.send({
        messages: c.map((o) => ({
          topic,
          key: toBuffer(o.key),
          value: toBuffer(o.value),
          headers: new Map(
            Object.entries(o.headers).map(([k, v]) => [
              Buffer.from(k),
              toBuffer(Array.isArray(v) ? (v[0] ?? null) : v) as Buffer,
            ]),
          ),
        })),
      });
    }
    result.platformatic.push(outputs.length / ((performance.now() - started) / 1000));
  }
  await kafkajs.disconnect();
  await platformatic.close();
  return { kafkajs: figure(result.kafkajs), platformatic: figure(result.platformatic) };
}

/** The produce requests the handler's sender makes of these outputs (nextRequest, messages grouped per topic). */
function requestsOf(outputs: readonly OutputRecord[], limits: Parameters<typeof nextRequest>[2]): TopicMessages[][] {
  const requests: TopicMessages[][] = [];
  for (let i = 0; i < outputs.length; ) {
    const request = nextRequest(outputs, i, limits);
    const byTopic = new Map<string, TopicMessages>();
    for (const k of request.indices) {
      const output = outputs[k] as OutputRecord;
      let entry = byTopic.get(output.topic);
      if (!entry) {
        entry = { topic: output.topic, messages: [] };
        byTopic.set(output.topic, entry);
      }
      entry.messages.push({ key: output.key, value: output.value, headers: output.headers as IHeaders });
    }
    requests.push([...byTopic.values()]);
    i = request.end;
  }
  return requests;
}

interface Measured {
  ms: number;
  cpuUs: number;
}

async function measured(work: () => Promise<unknown>): Promise<Measured> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  await work();
  const ms = performance.now() - started;
  const used = process.cpuUsage(cpu);
  return { ms, cpuUs: used.user + used.system };
}

/**
 * The real handler (middy, the container's producer: acks=all, one request in flight) on `events`, against producing
 * the same output records with the same client and settings in the same requests, no handler (built beforehand). Warm:
 * one pass of each first; then they take turns within each run. CPU is the process's user + system time.
 */
async function benchHandlerWarm(
  kafka: Kafka,
  brokers: string[],
  events: MskEvent[],
  runs: number,
  compareDefaultPartitioner = false,
) {
  const id = randomUUID().slice(0, 8);
  const topics = { processed: `h-processed-${id}`, deadLetter: `h-dlq-${id}` };
  await ensureTopics(kafka, [
    { topic: topics.processed, numPartitions: 3, configs: sizeConfigs("processed") },
    { topic: topics.deadLetter, numPartitions: 1, configs: sizeConfigs("deadLetter") },
  ]);
  const config = loadProcessorConfig({
    KAFKA_BROKERS: brokers.join(","),
    PROCESSED_TOPIC: topics.processed,
    DLQ_TOPIC: topics.deadLetter,
  });
  const container = containerSender(config);
  const handler = createHandler({ config, getSender: container.getSender });
  const context = { functionName: "bench", awsRequestId: "bench", getRemainingTimeInMillis: () => 900_000 };
  const limits = {
    requestBytes: config.produceChunkBytes,
    maxMessageBytes: {
      [topics.processed]: config.maxMessageBytes.processed,
      [topics.deadLetter]: config.maxMessageBytes.deadLetter,
    },
  };
  const requests = events.map((event) =>
    requestsOf(
      processEvent(event, {
        topics,
        processedAt: new Date().toISOString(),
        maxProcessedBytes: limits.maxMessageBytes[topics.processed],
      }),
      limits,
    ),
  );
  const producer = createProducer(kafka);
  await producer.connect();
  // The produce path before this project partitioned itself: createProducer's settings with kafkajs's own
  // DefaultPartitioner (same partitions, see functions/shared/partitioner.ts).
  const before = kafka.producer({
    idempotent: false,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner,
    retry: { retries: 0 },
  });
  if (compareDefaultPartitioner) await before.connect();
  const runHandler = async () => {
    for (const event of events) await handler(event, context as never);
  };
  const produceWith = (client: Producer) => async () => {
    for (const eventRequests of requests)
      for (const topicMessages of eventRequests)
        await client.sendBatch({ acks: -1, topicMessages, compression: CompressionTypes.None });
  };
  const runProduce = produceWith(producer);
  const runBefore = produceWith(before);
  await runHandler();
  await runProduce();
  if (compareDefaultPartitioner) await runBefore();
  const handled: Measured[] = [];
  const produced: Measured[] = [];
  const producedBefore: Measured[] = [];
  for (let run = 0; run < runs; run++) {
    handled.push(await measured(runHandler));
    produced.push(await measured(runProduce));
    if (compareDefaultPartitioner) producedBefore.push(await measured(runBefore));
  }
  await producer.disconnect();
  if (compareDefaultPartitioner) await before.disconnect();
  await container.close();
  const records = recordCount(events);
  const rate = figure(handled.map((m) => (records * 1000) / m.ms));
  const produceRate = figure(produced.map((m) => (records * 1000) / m.ms));
  return {
    recordsPerEvent: records / events.length,
    events: events.length,
    requestsPerEvent: requests.reduce((n, r) => n + r.length, 0) / events.length,
    recordsPerSecond: rate,
    produceRecordsPerSecond: produceRate,
    ratioToProduce: rate.median / produceRate.median,
    ratioToProducePerRun: figure(handled.map((m, i) => (produced[i] as Measured).ms / m.ms)),
    cpuMicrosPerRecord: figure(handled.map((m) => m.cpuUs / records)),
    produceCpuMicrosPerRecord: figure(produced.map((m) => m.cpuUs / records)),
    /** Producing's CPU time over the handler's, per run pair: the ratio that other processes on the machine move least. */
    cpuRatioToProduce: figure(handled.map((m, i) => (produced[i] as Measured).cpuUs / m.cpuUs)),
    msPerInvocation: figure(handled.map((m) => m.ms / events.length)),
    cpuMsPerInvocation: figure(handled.map((m) => m.cpuUs / 1000 / events.length)),
    produceWithKafkajsPartitioner: compareDefaultPartitioner
      ? {
          recordsPerSecond: figure(producedBefore.map((m) => (records * 1000) / m.ms)),
          cpuMicrosPerRecord: figure(producedBefore.map((m) => m.cpuUs / records)),
        }
      : undefined,
  };
}

/**
 * List prices used by the cost model (us-east-1, as known on `date`; check the AWS pricing pages before relying on
 * them): Lambda arm64 duration and requests, MSK Serverless data in and out (the stack's default cluster type).
 */
const PRICES = {
  date: "2026-11-26",
  region: "us-east-1",
  lambdaArm64PerGbSecond: 0.0000133334,
  lambdaPerMillionRequests: 0.2,
  mskServerlessDataInPerGb: 0.1,
  mskServerlessDataOutPerGb: 0.05,
  memoryMb: 1024,
  /** Lambda gives a function CPU in proportion to memory: one full vCPU at 1,769 MB. */
  vcpuAt1024Mb: 1024 / 1769,
} as const;

type HandlerFigures = Awaited<ReturnType<typeof benchHandlerWarm>>;

/**
 * Per million records: Lambda GB-seconds and dollars (duration + requests) for each batch size, from the warm handler
 * figures measured here, and MSK data in/out with each output codec. The duration on Lambda is estimated as the CPU
 * time stretched to the function's CPU share at 1,024 MB, plus the time spent waiting here beyond the CPU time (the
 * broker's acknowledgements); measured on 2 cores with the broker on the same machine, so an estimate, not a bill.
 */
function costModel(bySize: Record<string, HandlerFigures>, codecs: Awaited<ReturnType<typeof benchCodecs>>) {
  const lambda: Record<string, unknown> = {};
  for (const [size, h] of Object.entries(bySize)) {
    const invocations = 1e6 / h.recordsPerEvent;
    const wallMs = h.msPerInvocation.median;
    const cpuMs = h.cpuMsPerInvocation.median;
    const lambdaMs = cpuMs / PRICES.vcpuAt1024Mb + Math.max(0, wallMs - cpuMs);
    const gbSeconds = (invocations * lambdaMs * PRICES.memoryMb) / 1024 / 1000;
    const duration = gbSeconds * PRICES.lambdaArm64PerGbSecond;
    const requests = (invocations * PRICES.lambdaPerMillionRequests) / 1e6;
    lambda[size] = {
      invocations,
      measuredMsPerInvocation: wallMs,
      cpuMsPerInvocation: cpuMs,
      estimatedLambdaMsPerInvocation: lambdaMs,
      gbSeconds,
      durationDollars: duration,
      requestDollars: requests,
      totalDollars: duration + requests,
    };
  }
  const gb = (bytesPerRecord: number) => (bytesPerRecord * 1e6) / 1e9;
  const msk: Record<string, unknown> = {};
  const sourceOutGb = gb(codecs.source.bytesPerRecord);
  for (const name of ["none", ...Object.keys(CODECS)]) {
    const bytes = name === "none" ? codecs.none.bytesPerRecord : (codecs[name] as CodecFigures).bytesPerRecord;
    msk[name] = {
      outputBytesPerRecord: bytes,
      dataInGb: gb(bytes),
      dataInDollars: gb(bytes) * PRICES.mskServerlessDataInPerGb,
      sourceReadGb: sourceOutGb,
      dataOutDollars: sourceOutGb * PRICES.mskServerlessDataOutPerGb,
      totalDollars: gb(bytes) * PRICES.mskServerlessDataInPerGb + sourceOutGb * PRICES.mskServerlessDataOutPerGb,
    };
  }
  return { prices: PRICES, perMillionRecords: { lambda, msk } };
}

function childRun(bundle: string, eventFile: string, env: Record<string, string>) {
  const result = spawnSync(process.execPath, [join(PROJECT_ROOT, "bench", "child.mjs"), bundle, eventFile], {
    encoding: "utf8",
    env: { ...process.env, LOG_LEVEL: "ERROR", ...env },
  });
  if (result.status !== 0) throw new Error(`bench child failed: ${result.stderr}`);
  return JSON.parse(result.stdout.trim().split("\n").pop() as string) as {
    importMs: number;
    firstEventMs: number;
    eventMs: number;
    eventCpuMs: number;
    written: number;
    maxRssMb: number;
  };
}

/** The core (or its floor) on its first event in a fresh process: cold. */
function coldCoreRun(coreModule: string, eventFile: string, mode: "core" | "floor") {
  const result = spawnSync(
    process.execPath,
    [join(PROJECT_ROOT, "bench", "cold-core.mjs"), coreModule, eventFile, mode],
    {
      encoding: "utf8",
    },
  );
  if (result.status !== 0) throw new Error(`bench cold-core child failed: ${result.stderr}`);
  return JSON.parse(result.stdout.trim().split("\n").pop() as string) as { records: number; ms: number };
}

runMain(async () => {
  const flags = parseFlags(process.argv.slice(2), { quick: { type: "boolean" }, brokers: { type: "string" } }, USAGE);
  if (flags.help) return void console.log(USAGE);
  setLogLevel("ERROR");
  const quick = flags.quick === true;
  const runs = quick ? 3 : 5;
  const coreRecords = quick ? 50_000 : 200_000;
  const e2eRecords = quick ? 50_000 : 500_000;
  const handlerRecords = quick ? 10_000 : 20_000;
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
    quick,
  };
  const line = (label: string, value: string) => console.log(`${label.padEnd(60)} ${value}`);

  console.log(
    `user-login-pipeline benchmark (${quick ? "quick" : "full"}; ${cpus().length} cores, Node ${process.version})\n`,
  );
  const dir = mkdtempSync(join(tmpdir(), "bench-"));
  const realistic = mskEvents(coreRecords, 10_000, 0, 1);
  const poisoned = mskEvents(coreRecords, 10_000, 0.2, 2);
  const firstEventFile = join(dir, "first.json");
  writeFileSync(firstEventFile, JSON.stringify(realistic[0]));

  // Core, cold: the first 10,000-record event in a fresh process (the core bundled as the Lambda bundle is), and the
  // floor likewise, each in processes of their own.
  const coreBundle = { ...bundleOptions("processor", dir) };
  coreBundle.entryPoints = [join(PROJECT_ROOT, "functions", "core", "process.ts")];
  coreBundle.outfile = join(dir, "core", "index.mjs");
  await build(coreBundle);
  const coldCore: number[] = [];
  const coldFloor: number[] = [];
  for (let run = 0; run < runs; run++) {
    const c = coldCoreRun(coreBundle.outfile, firstEventFile, "core");
    coldCore.push((c.records * 1000) / c.ms);
    const f = coldCoreRun(coreBundle.outfile, firstEventFile, "floor");
    coldFloor.push((f.records * 1000) / f.ms);
  }
  const coreWarm = benchCoreWarm(realistic, poisoned, runs);
  const coreCold = {
    recordsPerSecond: figure(coldCore),
    floorRecordsPerSecond: figure(coldFloor),
    ratioToFloor: figure(coldCore).median / figure(coldFloor).median,
  };
  results.core = { records: coreRecords, warm: coreWarm, cold: coreCold };
  line(`core warm, ${coreRecords} records, 5% no device_type: rec/s`, fmt(coreWarm.recordsPerSecond));
  line("  ns/record", fmt(coreWarm.nsPerRecord));
  line("  20% invalid: rec/s", fmt(coreWarm.invalid20RecordsPerSecond));
  line("  floor (base64 + UTF-8 + JSON.parse + JSON.stringify): rec/s", fmt(coreWarm.floorRecordsPerSecond));
  line(
    "  ratio core / floor (medians; per run)",
    `${coreWarm.ratioToFloor.toFixed(2)}; ${fmt(coreWarm.ratioToFloorPerRun, 2)}`,
  );
  line("core cold, first 10,000-record event in a fresh process: rec/s", fmt(coreCold.recordsPerSecond));
  line("  floor cold rec/s", fmt(coreCold.floorRecordsPerSecond));
  line("  ratio core / floor (medians)", coreCold.ratioToFloor.toFixed(2));

  // Codecs, on processed outputs of the realistic events.
  const codecEvents = realistic.slice(0, quick ? 1 : 2);
  const codecOutputs = codecEvents.flatMap((event) => processEvent(event, OPTIONS));
  const codecSources = codecEvents.flatMap((event) => Object.values(event.records).flat());
  const codecs = await benchCodecs(codecOutputs, codecSources, runs, quick ? 2 : 5);
  results.codecs = codecs;
  line(
    `codecs, ${codecs.batches} batches of ${codecs.recordsPerBatch} processed outputs: bytes/record`,
    `none ${codecs.none.bytesPerRecord.toFixed(1)} (source records: ${codecs.source.bytesPerRecord.toFixed(1)})`,
  );
  for (const name of Object.keys(CODECS)) {
    const codec = codecs[name] as CodecFigures;
    line(
      `  ${name} (${codec.implementation})`,
      `${codec.bytesPerRecord.toFixed(1)} B/record (${(codec.ratioToNone * 100).toFixed(0)}%), CPU µs/record ` +
        `compress ${fmt(codec.compressCpuUsPerRecord, 2)}, decompress ${fmt(codec.decompressCpuUsPerRecord, 2)}`,
    );
  }

  let broker: EmbeddedKafka | undefined;
  let brokers: string[];
  if (flags.brokers || process.env.KAFKA_BROKERS)
    brokers = parseBrokers((flags.brokers ?? process.env.KAFKA_BROKERS) as string);
  else {
    broker = new EmbeddedKafka({ heap: "2g" });
    brokers = [await broker.start()];
  }
  try {
    const kafka = createKafka({ brokers, clientId: "bench" });

    // Handler, warm, against producing the same records; at the batch sizes of the cost model.
    const bySize: Record<string, HandlerFigures> = {};
    for (const size of [10_000, 1_000, 100]) {
      const events = mskEvents(handlerRecords, size, 0, 6 + size);
      const figures = await benchHandlerWarm(kafka, brokers, events, runs, size === 10_000);
      bySize[String(size)] = figures;
      line(`handler warm, ${size}-record events: rec/s`, fmt(figures.recordsPerSecond));
      line("  produce the same records, no handler: rec/s", fmt(figures.produceRecordsPerSecond));
      line(
        "  ratio handler / produce (medians; per run)",
        `${figures.ratioToProduce.toFixed(2)}; ${fmt(figures.ratioToProducePerRun, 2)}`,
      );
      line(
        "  CPU µs/record: handler; produce only",
        `${fmt(figures.cpuMicrosPerRecord, 1)}; ${fmt(figures.produceCpuMicrosPerRecord, 1)}`,
      );
      line("  CPU ratio produce / handler (per run pair)", fmt(figures.cpuRatioToProduce, 2));
      line(
        "  ms per invocation; produce requests per invocation",
        `${fmt(figures.msPerInvocation, 1)}; ${figures.requestsPerEvent}`,
      );
      if (figures.produceWithKafkajsPartitioner) {
        const k = figures.produceWithKafkajsPartitioner;
        line(
          "  produce with kafkajs's DefaultPartitioner (before): rec/s; CPU µs/record",
          `${fmt(k.recordsPerSecond)}; ${fmt(k.cpuMicrosPerRecord, 1)}`,
        );
      }
    }

    // Cold start and memory of the bundled handler, each in a fresh process.
    const options = bundleOptions("processor", dir);
    await build(options);
    const bundle = options.outfile as string;
    const bundleKb = statSync(bundle).size / 1024;
    const one = mskEvents(1, 1, 0, 4)[0] as MskEvent;
    writeFileSync(join(dir, "one.json"), JSON.stringify(one));
    await ensureTopics(kafka, [
      { topic: "processed-user-login", numPartitions: 3, configs: sizeConfigs("processed") },
      { topic: "user-login-dlq", configs: sizeConfigs("deadLetter") },
    ]);
    const env = { KAFKA_BROKERS: brokers.join(",") };
    const cold = Array.from({ length: quick ? 5 : 10 }, () => childRun(bundle, join(dir, "one.json"), env));
    const coldBig = Array.from({ length: runs }, () => childRun(bundle, firstEventFile, env));
    const handlerCold = {
      recordsPerEvent: 10_000,
      firstEventMs: figure(coldBig.map((c) => c.firstEventMs)),
      eventMs: figure(coldBig.map((c) => c.eventMs)),
      recordsPerSecond: figure(coldBig.map((c) => 10_000_000 / c.eventMs)),
      cpuMicrosPerRecord: figure(coldBig.map((c) => (c.eventCpuMs * 1000) / 10_000)),
    };
    results.handler = { warm: bySize["10000"], cold: handlerCold, byBatchSize: bySize };
    line("handler cold, first 10,000-record event in a fresh process: rec/s", fmt(handlerCold.recordsPerSecond));
    line("  CPU µs/record", fmt(handlerCold.cpuMicrosPerRecord, 1));
    results.coldStart = {
      bundleKb,
      importMs: figure(cold.map((c) => c.importMs)),
      firstEventMs: figure(cold.map((c) => c.firstEventMs)),
    };
    line("bundle (minified ESM) KB", bundleKb.toFixed(0));
    line("cold start: import ms", fmt(figure(cold.map((c) => c.importMs)), 1));
    line("cold start: import + first 1-record event ms", fmt(figure(cold.map((c) => c.firstEventMs)), 1));
    const big = mskEvents(10_000, 10_000, 0.05, 5, 430)[0] as MskEvent;
    const bigFile = join(dir, "big.json");
    writeFileSync(bigFile, JSON.stringify(big));
    const eventMb = statSync(bigFile).size / 2 ** 20;
    const memory = Array.from({ length: 3 }, () => childRun(bundle, bigFile, env));
    results.memory = { eventMb, maxRssMb: figure(memory.map((m) => m.maxRssMb)) };
    line(
      `memory: peak RSS, 10,000-record ${eventMb.toFixed(1)} MB event (MB)`,
      fmt(figure(memory.map((m) => m.maxRssMb)), 0),
    );

    // End to end against the copy baseline, interleaved; the first round of each is a warm-up, reported apart. The
    // pipeline as `npm run harness` runs it by default (one invocation at a time, in this process) and with
    // --concurrency 3 (three worker environments running the Lambda bundle), with each run's CPU: this process's
    // (harness, consumer, environments) and, on the embedded broker, the broker's.
    const source = `bench-source-${randomUUID().slice(0, 8)}`;
    await ensureTopics(kafka, [{ topic: source, numPartitions: 3, configs: sizeConfigs("source") }]);
    const count = await produceAll(kafka, source, mskEvents(e2eRecords, 10_000, 0, 3));
    const brokerCpuMs = brokerCpu(broker);
    const workerTopics = await benchTopics(kafka);
    const environments = warmEnvironments(() =>
      workerEnvironment({
        modulePath: bundle,
        env: {
          ...process.env,
          KAFKA_BROKERS: brokers.join(","),
          SOURCE_TOPIC: source,
          PROCESSED_TOPIC: workerTopics.processed,
          DLQ_TOPIC: workerTopics.deadLetter,
        },
      }),
    );
    const rounds: Record<"copy" | "pipeline" | "concurrent", RunFigures[]> = { copy: [], pipeline: [], concurrent: [] };
    for (let run = 0; run < (quick ? 2 : 4); run++) {
      rounds.copy.push(await measuredRun(count, brokerCpuMs, () => copyRun(kafka, source, count)));
      rounds.pipeline.push(await measuredRun(count, brokerCpuMs, () => pipelineRun(kafka, brokers, source, count)));
      rounds.concurrent.push(
        await measuredRun(count, brokerCpuMs, () =>
          pipelineRun(kafka, brokers, source, count, { concurrency: 3, newEnvironment: environments.newEnvironment }),
        ),
      );
    }
    await environments.close();
    const warm = (figures: RunFigures[]) => figures.slice(1);
    const rate = (figures: RunFigures[]) => figure(warm(figures).map((f) => f.recordsPerSecond));
    const ratioOf = (figures: RunFigures[]) =>
      figure(warm(figures).map((f, i) => f.recordsPerSecond / (warm(rounds.copy)[i] as RunFigures).recordsPerSecond));
    const cpuOf = (figures: RunFigures[]) => ({
      processCpuMicrosPerRecord: figure(warm(figures).map((f) => f.processCpuMicrosPerRecord)),
      processCpuShare: figure(warm(figures).map((f) => f.processCpuShare)),
      ...(brokerCpuMs ? { brokerCpuShare: figure(warm(figures).map((f) => f.brokerCpuShare as number)) } : {}),
    });
    results.endToEnd = {
      records: count,
      batchSize: 10_000,
      pipeline: rate(rounds.pipeline),
      copyBaseline: rate(rounds.copy),
      ratio: ratioOf(rounds.pipeline),
      concurrency3: {
        pipeline: rate(rounds.concurrent),
        ratio: ratioOf(rounds.concurrent),
        ...cpuOf(rounds.concurrent),
      },
      cpu: { pipeline: cpuOf(rounds.pipeline), copyBaseline: cpuOf(rounds.copy) },
      firstRound: {
        pipeline: rounds.pipeline[0]?.recordsPerSecond,
        concurrency3: rounds.concurrent[0]?.recordsPerSecond,
        copyBaseline: rounds.copy[0]?.recordsPerSecond,
      },
    };
    line(`end to end, ${count} records, --batch-size 10000: pipeline rec/s`, fmt(rate(rounds.pipeline)));
    line("  copy baseline (same client, no processing) rec/s", fmt(rate(rounds.copy)));
    line("  ratio pipeline / baseline (per run pair)", fmt(ratioOf(rounds.pipeline), 2));
    line("  --concurrency 3 (worker environments, the bundle) rec/s", fmt(rate(rounds.concurrent)));
    line("  ratio --concurrency 3 / baseline (per run pair)", fmt(ratioOf(rounds.concurrent), 2));
    for (const [name, figures] of Object.entries(rounds)) {
      const cpu = cpuOf(figures);
      line(
        `  ${name}: CPU µs/record of this process; its CPU share; the broker's`,
        `${fmt(cpu.processCpuMicrosPerRecord, 1)}; ${fmt(cpu.processCpuShare, 2)}; ` +
          (cpu.brokerCpuShare ? fmt(cpu.brokerCpuShare, 2) : "n/a (--brokers)"),
      );
    }
    line(
      "  first round (warm-up): pipeline, --concurrency 3, baseline rec/s",
      [rounds.pipeline, rounds.concurrent, rounds.copy].map((f) => f[0]?.recordsPerSecond.toFixed(0)).join(", "),
    );

    // Clients on the same produce workload.
    const outputs = realistic.slice(0, quick ? 3 : 10).flatMap((event) => processEvent(event, OPTIONS));
    const clients = await clientRuns(kafka, brokers, outputs, runs);
    results.clients = {
      records: outputs.length,
      ...clients,
      ratio: clients.platformatic.median / clients.kafkajs.median,
    };
    line(`produce ${outputs.length} outputs: kafkajs rec/s`, fmt(clients.kafkajs));
    line("  @platformatic/kafka rec/s", fmt(clients.platformatic));
    line("  ratio platformatic / kafkajs (medians)", (clients.platformatic.median / clients.kafkajs.median).toFixed(2));

    const cost = costModel(bySize, codecs);
    results.costModel = cost;
    for (const [size, figures] of Object.entries(cost.perMillionRecords.lambda)) {
      const f = figures as { gbSeconds: number; durationDollars: number; requestDollars: number; totalDollars: number };
      line(
        `cost per million records, batch ${size}: Lambda GB-s, $ duration + $ requests`,
        `${f.gbSeconds.toFixed(1)} GB-s, $${f.durationDollars.toFixed(4)} + $${f.requestDollars.toFixed(4)} = $${f.totalDollars.toFixed(4)}`,
      );
    }
    for (const [name, figures] of Object.entries(cost.perMillionRecords.msk)) {
      const f = figures as { dataInDollars: number; dataOutDollars: number; totalDollars: number };
      line(
        `  MSK Serverless data, output ${name}: $ in + $ out`,
        `$${f.dataInDollars.toFixed(4)} + $${f.dataOutDollars.toFixed(4)} = $${f.totalDollars.toFixed(4)}`,
      );
    }
  } finally {
    await broker?.destroy();
  }
  writeFileSync(join(PROJECT_ROOT, "bench", "results.json"), `${JSON.stringify(results, null, 2)}\n`);
  console.log("\nwritten to bench/results.json");
});
