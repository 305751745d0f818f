/**
 * npm run bench [-- --quick] [--brokers B]
 * Where the time goes: the processing core, the handler with a real producer, the whole pipeline against a plain
 * topic-to-topic copy with the same client, cold start and memory of the bundled handler, and kafkajs against
 * @platformatic/kafka on the same produce workload, and each compression codec (bytes per record on the wire, CPU per
 * record to compress and decompress). Prints a table and writes bench/results.json.
 * Figures are medians of several runs with their min..max; the machine is noisy, so ratios matter most.
 */
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { Producer as PlatformaticProducer, ProduceAcks } from "@platformatic/kafka";
import { build } from "esbuild";
import { CompressionTypes, type IHeaders, type Kafka } from "kafkajs";
import type { MskEvent, MskRecord } from "../functions/core/msk.ts";
import { type OutputRecord, processEvent } from "../functions/core/process.ts";
import { GeneratorModel } from "../functions/generator/model.ts";
import { EmbeddedKafka } from "../functions/local/embedded-kafka.ts";
import { MskEventSourceHarness } from "../functions/local/harness.ts";
import { containerSender, createHandler, processMskEvent } from "../functions/processor/processor.ts";
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

function benchCore(events: MskEvent[], runs: number): { recordsPerSecond: Figure; nsPerRecord: Figure } {
  const records = events.reduce((n, e) => n + Object.values(e.records).reduce((m, l) => m + l.length, 0), 0);
  for (const event of events.slice(0, 2)) processEvent(event, OPTIONS); // warm-up
  const rates: number[] = [];
  for (let run = 0; run < runs; run++) {
    const started = process.hrtime.bigint();
    for (const event of events) processEvent(event, OPTIONS);
    const ns = Number(process.hrtime.bigint() - started);
    rates.push((records * 1e9) / ns);
  }
  const rate = figure(rates);
  return { recordsPerSecond: rate, nsPerRecord: figure(rates.map((r) => 1e9 / r)) };
}

/**
 * The floor under the core, on the same events: only what no implementation can skip per record (base64 decode,
 * UTF-8 decode, JSON.parse of the value, JSON.stringify of a result); no validation, headers or transform.
 */
function benchFloor(events: MskEvent[], runs: number): Figure {
  const decoder = new TextDecoder("utf-8", { fatal: false });
  const records = events.flatMap((event) => Object.values(event.records).flat());
  const rates: number[] = [];
  let sink = 0;
  for (let run = 0; run < runs + 1; run++) {
    const started = process.hrtime.bigint();
    for (const record of records) {
      if (!record.value) continue;
      const text = decoder.decode(Buffer.from(record.value, "base64"));
      try {
        sink += JSON.stringify(JSON.parse(text)).length;
      } catch {
        sink += 1;
      }
    }
    if (run > 0) rates.push((records.length * 1e9) / Number(process.hrtime.bigint() - started));
  }
  if (sink < 0) console.log(sink);
  return figure(rates);
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
async function benchCodecs(outputs: readonly OutputRecord[], runs: number, rounds: number) {
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
  return result as { recordsPerBatch: number; batches: number; none: { bytesPerRecord: number } } & Record<
    string,
    CodecFigures
  >;
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

/** The pipeline (harness + handler) draining `source`, in records/s. */
async function pipelineRun(kafka: Kafka, brokers: string[], source: string, count: number): Promise<number> {
  const id = randomUUID().slice(0, 8);
  const processed = `bench-processed-${id}`;
  const dlq = `bench-dlq-${id}`;
  await ensureTopics(kafka, [
    { topic: processed, numPartitions: 3, configs: sizeConfigs("processed") },
    { topic: dlq, numPartitions: 1, configs: sizeConfigs("deadLetter") },
  ]);
  const config = loadProcessorConfig({
    KAFKA_BROKERS: brokers.join(","),
    SOURCE_TOPIC: source,
    PROCESSED_TOPIC: processed,
    DLQ_TOPIC: dlq,
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
    invoke: (e) => handler(e, {} as never),
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

function childRun(bundle: string, eventFile: string, env: Record<string, string>) {
  const result = spawnSync(process.execPath, [join(PROJECT_ROOT, "bench", "child.mjs"), bundle, eventFile], {
    encoding: "utf8",
    env: { ...process.env, LOG_LEVEL: "ERROR", ...env },
  });
  if (result.status !== 0) throw new Error(`bench child failed: ${result.stderr}`);
  return JSON.parse(result.stdout.trim().split("\n").pop() as string) as {
    importMs: number;
    firstEventMs: number;
    written: number;
    maxRssMb: number;
  };
}

runMain(async () => {
  const flags = parseFlags(process.argv.slice(2), { quick: { type: "boolean" }, brokers: { type: "string" } }, USAGE);
  if (flags.help) return void console.log(USAGE);
  setLogLevel("ERROR");
  const quick = flags.quick === true;
  const runs = quick ? 3 : 5;
  const coreRecords = quick ? 50_000 : 200_000;
  const e2eRecords = quick ? 50_000 : 500_000;
  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model, node: process.version },
    quick,
  };
  const line = (label: string, value: string) => console.log(`${label.padEnd(52)} ${value}`);

  console.log(
    `user-login-pipeline benchmark (${quick ? "quick" : "full"}; ${cpus().length} cores, Node ${process.version})\n`,
  );
  const realistic = mskEvents(coreRecords, 10_000, 0, 1);
  const poisoned = mskEvents(coreRecords, 10_000, 0.2, 2);
  const core = benchCore(realistic, runs);
  const floor = benchFloor(realistic, runs);
  const corePoison = benchCore(poisoned, runs);
  results.core = {
    realistic: core,
    invalid20: corePoison,
    floor,
    ratioToFloor: core.recordsPerSecond.median / floor.median,
  };
  line(`core, ${coreRecords} records, 5% no device_type: rec/s`, fmt(core.recordsPerSecond));
  line("core, same: ns/record", fmt(core.nsPerRecord));
  line("core, 20% invalid: rec/s", fmt(corePoison.recordsPerSecond));
  line("floor (base64 + UTF-8 + JSON.parse + JSON.stringify only): rec/s", fmt(floor));
  line("  ratio core / floor (medians)", (core.recordsPerSecond.median / floor.median).toFixed(2));

  // Codecs, on processed outputs of the realistic events.
  const codecOutputs = realistic.slice(0, quick ? 1 : 2).flatMap((event) => processEvent(event, OPTIONS));
  const codecs = await benchCodecs(codecOutputs, runs, quick ? 2 : 5);
  results.codecs = codecs;
  line(
    `codecs, ${codecs.batches} batches of ${codecs.recordsPerBatch} processed outputs: bytes/record`,
    `none ${codecs.none.bytesPerRecord.toFixed(1)}`,
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

    // Handler: one 10,000-record event, real producer.
    const id = randomUUID().slice(0, 8);
    await ensureTopics(kafka, [
      { topic: `h-processed-${id}`, numPartitions: 3, configs: sizeConfigs("processed") },
      { topic: `h-dlq-${id}`, numPartitions: 1, configs: sizeConfigs("deadLetter") },
    ]);
    const config = loadProcessorConfig({
      KAFKA_BROKERS: brokers.join(","),
      PROCESSED_TOPIC: `h-processed-${id}`,
      DLQ_TOPIC: `h-dlq-${id}`,
    });
    const container = containerSender(config);
    const handlerEvent = realistic[0] as MskEvent;
    await processMskEvent(handlerEvent, { config, getSender: container.getSender });
    const total: number[] = [];
    const processing: number[] = [];
    for (let run = 0; run < runs; run++) {
      let started = performance.now();
      processEvent(handlerEvent, OPTIONS);
      processing.push(performance.now() - started);
      started = performance.now();
      await processMskEvent(handlerEvent, { config, getSender: container.getSender });
      total.push(performance.now() - started);
    }
    await container.close();
    const handler = {
      totalMs: figure(total),
      processMs: figure(processing),
      produceMs: figure(total.map((t, i) => t - (processing[i] as number))),
    };
    results.handler = handler;
    line("handler, 10,000-record event: ms per batch", fmt(handler.totalMs, 1));
    line("  decode/validate/transform ms", fmt(handler.processMs, 1));
    line("  produce ms (acks=all, embedded broker)", fmt(handler.produceMs, 1));

    // End to end against the copy baseline, interleaved.
    const source = `bench-source-${randomUUID().slice(0, 8)}`;
    await ensureTopics(kafka, [{ topic: source, numPartitions: 3, configs: sizeConfigs("source") }]);
    const count = await produceAll(kafka, source, mskEvents(e2eRecords, 10_000, 0, 3));
    const pipeline: number[] = [];
    const baseline: number[] = [];
    for (let run = 0; run < (quick ? 1 : 3); run++) {
      baseline.push(await copyRun(kafka, source, count));
      pipeline.push(await pipelineRun(kafka, brokers, source, count));
    }
    const ratio = figure(pipeline.map((p, i) => p / (baseline[i] as number)));
    results.endToEnd = { records: count, pipeline: figure(pipeline), copyBaseline: figure(baseline), ratio };
    line(`end to end, ${count} records: pipeline rec/s`, fmt(figure(pipeline)));
    line("  copy baseline (same client, no processing) rec/s", fmt(figure(baseline)));
    line("  ratio pipeline / baseline", fmt(ratio, 2));

    // Cold start and memory of the bundled handler, each in a fresh process.
    const dir = mkdtempSync(join(tmpdir(), "bench-"));
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
  } finally {
    await broker?.destroy();
  }
  writeFileSync(join(PROJECT_ROOT, "bench", "results.json"), `${JSON.stringify(results, null, 2)}\n`);
  console.log("\nwritten to bench/results.json");
});
