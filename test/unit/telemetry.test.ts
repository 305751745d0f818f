import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { Metrics } from "@aws-lambda-powertools/metrics";
import { describe, expect, it } from "vitest";
import { type OutputRecord, processEvent } from "../../functions/core/process.ts";
import { REPO_ROOT } from "../../functions/local/embedded-kafka.ts";
import { lambdaContext } from "../../functions/local/lambda-runtime.ts";
import { createHandler } from "../../functions/processor/processor.ts";
import { OutputTooLargeError } from "../../functions/processor/sender.ts";
import { loadProcessorConfig } from "../../functions/shared/config.ts";
import { ERROR_CODE_DIMENSION, METRIC, METRICS_NAMESPACE, METRICS_SERVICE } from "../../functions/shared/metrics.ts";
import { pipelineTemplate } from "../support/cdk.ts";
import { EVENTS_DIR, loadEvent } from "../support/msk.ts";

interface Emf {
  _aws: { CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string }[] }[] };
  [key: string]: unknown;
}

/** Everything the handler writes to stdout and stderr while it handles `event`. */
async function runCapturing(event: unknown, metrics?: Metrics): Promise<{ stdout: string; stderr: string }> {
  const captured = { stdout: "", stderr: "" };
  const originals = { stdout: process.stdout.write, stderr: process.stderr.write };
  process.stdout.write = ((chunk: string | Uint8Array) => {
    captured.stdout += chunk.toString();
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    captured.stderr += chunk.toString();
    return true;
  }) as typeof process.stderr.write;
  try {
    const sent: OutputRecord[] = [];
    const handler = createHandler({
      config: loadProcessorConfig({}),
      getSender: async () => ({
        async send(outputs) {
          sent.push(...outputs);
          return { written: outputs.length };
        },
      }),
      metrics,
    });
    await handler(event, lambdaContext());
  } finally {
    process.stdout.write = originals.stdout;
    process.stderr.write = originals.stderr;
  }
  return captured;
}

/** The first dead letter the core makes of an event. */
const deadLetterOf = (event: ReturnType<typeof loadEvent>): OutputRecord =>
  processEvent(event, {
    topics: { processed: "p", deadLetter: "d" },
    processedAt: "2026-11-26T00:00:00.000Z",
  }).find((o) => o.kind === "dead-letter") as OutputRecord;

const emfDocuments = (text: string): Emf[] =>
  text
    .split("\n")
    .filter((line) => line.includes('"_aws"'))
    .map((line) => JSON.parse(line) as Emf);

describe("the processor's CloudWatch metrics (EMF)", () => {
  it("publishes records in, processed, dead-lettered by code, produce failures, duration and end-to-end age per batch", async () => {
    const metrics = new Metrics({ namespace: METRICS_NAMESPACE, serviceName: METRICS_SERVICE });
    const { stdout } = await runCapturing(loadEvent("mixed-batch.json"), metrics);
    const documents = emfDocuments(stdout);
    const main = documents.find((d) => d[METRIC.recordsIn] !== undefined) as Emf;
    expect(main._aws.CloudWatchMetrics[0]?.Namespace).toBe(METRICS_NAMESPACE);
    expect(main.service).toBe(METRICS_SERVICE);
    expect(main[METRIC.recordsIn]).toBe(10);
    expect(main[METRIC.processed]).toBe(2);
    expect(main[METRIC.deadLettered]).toBe(8);
    expect(main[METRIC.produceFailures]).toBe(0);
    expect(typeof main[METRIC.batchDuration]).toBe("number");
    expect((main[METRIC.endToEndAge] as number[]).length).toBe(10);
    const byCode = Object.fromEntries(
      documents.filter((d) => d[ERROR_CODE_DIMENSION]).map((d) => [d[ERROR_CODE_DIMENSION], d[METRIC.deadLettered]]),
    );
    expect(byCode).toEqual({ SCHEMA_VIOLATION: 4, INVALID_JSON: 2, EMPTY_VALUE: 2 });
  });

  it("emits every metric the CDK alarms and dashboard read, under the same namespace (one source of truth)", async () => {
    const metrics = new Metrics({ namespace: METRICS_NAMESPACE, serviceName: METRICS_SERVICE });
    const emitted = new Set(
      emfDocuments((await runCapturing(loadEvent("mixed-batch.json"), metrics)).stdout).flatMap((d) =>
        d._aws.CloudWatchMetrics.flatMap((m) => m.Metrics.map((metric) => metric.Name)),
      ),
    );
    const template = JSON.stringify(pipelineTemplate().toJSON());
    const read = [
      ...template.matchAll(
        /\\"namespace\\":\\"([^\\"]+)\\",\\"metricName\\":\\"([^\\"]+)\\"|"Namespace":"([^"]+)","MetricName":"([^"]+)"/g,
      ),
    ]
      .map((m) => ({ namespace: m[1] ?? m[3], name: m[2] ?? m[4] }))
      .filter((m) => m.namespace === METRICS_NAMESPACE);
    const dashboardNames = [
      ...template.matchAll(new RegExp(`\\\\"${METRICS_NAMESPACE}\\\\",\\\\"([A-Za-z]+)\\\\"`, "g")),
    ].map((m) => m[1]);
    const names = new Set([...read.map((m) => m.name), ...dashboardNames]);
    expect(names.size).toBeGreaterThan(0);
    for (const name of names) expect(emitted, `${name} is read by CDK but never emitted`).toContain(name);
  });
});

describe("the processor's logs", () => {
  it("carry the batch's correlation (ESM ARN, size, offsets per partition) and no IP address or device id", () => {
    const event = loadEvent("mixed-batch.json");
    // A process of its own, at DEBUG: the invoke CLI runs the same middy handler; stderr holds only logs.
    const result = spawnSync(
      join(REPO_ROOT, "node_modules", ".bin", "tsx"),
      [join(REPO_ROOT, "bin", "invoke.ts"), "--event", join(EVENTS_DIR, "mixed-batch.json"), "--dry-run"],
      { encoding: "utf8", env: { ...process.env, LOG_LEVEL: "DEBUG" } },
    );
    expect(result.status, result.stderr).toBe(0);
    const logs = result.stderr;
    const done = logs.split("\n").find((line) => line.includes('"batch done"')) as string;
    expect(JSON.parse(done)).toMatchObject({
      level: "INFO",
      eventSourceArn: event.eventSourceArn,
      in: 10,
      offsets: { "user-login-0": [0, 4], "user-login-1": [10, 14] },
      function_name: "user-login-processor",
    });
    const personal = new Set<string>();
    for (const record of Object.values(event.records).flat()) {
      const text = record.value ? Buffer.from(record.value, "base64").toString() : "";
      for (const match of text.matchAll(/"(ip|device_id|user_id)":\s*"([^"]+)"/g)) personal.add(match[2] as string);
    }
    expect(personal.size).toBeGreaterThan(3);
    for (const value of personal) {
      expect(result.stdout, "the dry-run output does carry it").toContain(value);
      expect(logs).not.toContain(value);
    }
  });
});

/** What `work` writes to stdout (where EMF goes). */
async function stdoutOf(work: () => Promise<void>): Promise<string> {
  let stdout = "";
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string | Uint8Array) => {
    stdout += chunk.toString();
    return true;
  }) as typeof process.stdout.write;
  try {
    await work();
  } finally {
    process.stdout.write = write;
  }
  return stdout;
}

describe("metrics of a failed batch", () => {
  it("counts the records it could not write as ProduceFailures, also when the invocation then fails", async () => {
    const metrics = new Metrics({ namespace: METRICS_NAMESPACE, serviceName: METRICS_SERVICE });
    const stdout = await stdoutOf(async () => {
      const handler = createHandler({
        config: loadProcessorConfig({}),
        getSender: async () => ({ send: async () => ({ written: 4, error: new Error("broker gone") }) }),
        metrics,
      });
      await expect(handler(loadEvent("mixed-batch.json"), lambdaContext())).rejects.toThrow(/wrote 4 of 10 records/);
    });
    const main = emfDocuments(stdout).find((d) => d[METRIC.recordsIn] !== undefined) as Emf;
    expect(main[METRIC.produceFailures]).toBe(6);
  });

  it.each([
    ["the sender's own size check", () => new OutputTooLargeError(deadLetterOf(loadEvent("mixed-batch.json")), 1024)],
    [
      "the broker (kafkajs MESSAGE_TOO_LARGE inside retries exceeded)",
      () => Object.assign(new Error("retries exceeded"), { originalError: { type: "MESSAGE_TOO_LARGE" } }),
    ],
  ])("says UnwritableRecords=1 when a record is over its topic's limit, found by %s", async (_by, error) => {
    const metrics = new Metrics({ namespace: METRICS_NAMESPACE, serviceName: METRICS_SERVICE });
    const stdout = await stdoutOf(async () => {
      const handler = createHandler({
        config: loadProcessorConfig({ PARTIAL_BATCH_RESPONSE: "true" }),
        getSender: async () => ({ send: async () => ({ written: 3, error: error() }) }),
        metrics,
      });
      const response = await handler(loadEvent("mixed-batch.json"), lambdaContext());
      expect(response.batchItemFailures.length).toBeGreaterThan(0);
    });
    const main = emfDocuments(stdout).find((d) => d[METRIC.recordsIn] !== undefined) as Emf;
    expect(main[METRIC.unwritable]).toBe(1);
    expect(main[METRIC.produceFailures]).toBe(7);
  });
});
