/**
 * The bundled handler, built with the options CDK deploys (lib/bundling.ts), run by the harness on a real broker.
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { build } from "esbuild";
import { afterAll, describe, expect, it } from "vitest";
import { GeneratorModel } from "../../functions/generator/model.ts";
import { MskEventSourceHarness } from "../../functions/local/harness.ts";
import { loadHandler } from "../../functions/local/lambda-runtime.ts";
import { createProducer } from "../../functions/shared/kafka.ts";
import { bundleOptions } from "../../lib/bundling.ts";
import { createTopicTrio, groupLag, readTopic, testKafka, waitFor } from "../support/kafka.ts";

const outdir = mkdtempSync(join(tmpdir(), "bundle-test-"));
afterAll(() => rmSync(outdir, { recursive: true, force: true }));

describe("the bundled processor handler", () => {
  it("is one minified file under 1 MB that processes a generated mix on the real broker", async () => {
    const options = bundleOptions("processor", outdir);
    await build(options);
    const bundle = options.outfile as string;
    expect(statSync(bundle).size).toBeLessThan(1024 * 1024);

    const { kafka, brokers } = testKafka("bundle-test");
    const topics = await createTopicTrio(kafka, 2);
    Object.assign(process.env, {
      KAFKA_BROKERS: brokers.join(","),
      SOURCE_TOPIC: topics.source,
      PROCESSED_TOPIC: topics.processed,
      DLQ_TOPIC: topics.deadLetter,
    });
    const handler = await loadHandler(bundle);
    const model = new GeneratorModel({ seed: 21, invalidRatio: 0.2 });
    const records = Array.from({ length: 500 }, () => model.next());
    const producer = createProducer(kafka);
    await producer.connect();
    await producer.send({
      topic: topics.source,
      acks: -1,
      messages: records.map((r) => ({ key: r.key, value: r.value })),
    });
    await producer.disconnect();

    const groupId = `group-${randomUUID()}`;
    const harness = new MskEventSourceHarness({
      kafka,
      bootstrapServers: brokers.join(","),
      topic: topics.source,
      groupId,
      batchSize: 100,
      batchWindowMs: 100,
      invoke: handler.invoke,
    });
    await harness.start();
    await waitFor("all offsets committed", async () => (await groupLag(kafka, groupId, topics.source)) === 0);
    await harness.stop();
    await handler.close();

    const valid = records.filter((r) => r.kind === "valid").length;
    expect((await readTopic(kafka, topics.processed)).length).toBe(valid);
    expect((await readTopic(kafka, topics.deadLetter)).length).toBe(500 - valid);
  });
});
