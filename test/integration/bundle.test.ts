/**
 * The Lambda asset the CDK stack deploys (NodejsFunction, bundled with lib/bundling.ts's options), loaded from the
 * synthesized cloud assembly and run by the harness on a real broker: one build path from laptop to AWS.
 *
 * The deployed runtime is nodejs22.x. When NODE22 names a Node.js 22 binary (.ci/run installs the npm registry's
 * `node` package at major 22 and sets it), the asset also runs under it: `npm run harness` in a child process on that
 * binary, with the asset as its handler.
 */

import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { statSync } from "node:fs";
import { join } from "node:path";
import { Match, Template } from "aws-cdk-lib/assertions";
import { describe, expect, it } from "vitest";
import { GeneratorModel } from "../../functions/generator/model.ts";
import { REPO_ROOT } from "../../functions/local/embedded-kafka.ts";
import { loadHandler } from "../../functions/local/lambda-runtime.ts";
import { pipelineStack } from "../support/cdk.ts";
import {
  codecsOnTheWire,
  createTopicTrio,
  drain,
  groupLag,
  processorEnvironment,
  produce,
  readTopic,
  testKafka,
  waitFor,
} from "../support/kafka.ts";

const NODE22 = process.env.NODE22;
if (!NODE22) {
  console.warn(
    "bundle.test.ts: NODE22 is not set, so the asset is not run under Node.js 22 (the deployed nodejs22.x); " +
      ".ci/run sets it, or: npm install --no-save --prefix .cache/node22 node@22 && " +
      "NODE22=$PWD/.cache/node22/node_modules/node/bin/node npm test",
  );
}

let synthesized: string | undefined;
function processorAsset(): string {
  synthesized ??= synthesizeProcessorAsset();
  return synthesized;
}

function synthesizeProcessorAsset(): string {
  const { app, stack, outdir: assembly } = pipelineStack({}, { bundle: true });
  app.synth();
  const functions = Template.fromStack(stack).findResources("AWS::Lambda::Function", {
    Properties: { Description: Match.stringLikeRegexp("Validates and transforms") },
  });
  const code = (Object.values(functions)[0] as { Properties: { Code: { S3Key: string } } }).Properties.Code;
  return join(assembly, `asset.${code.S3Key.replace(/\.zip$/, "")}`, "index.mjs");
}

describe("the processor asset that CDK deploys", () => {
  it("is one minified file under 1 MB that processes a generated mix on the real broker", async () => {
    const bundle = processorAsset();
    expect(statSync(bundle).size).toBeLessThan(1024 * 1024);

    const { kafka, brokers } = testKafka("bundle-test");
    const topics = await createTopicTrio(kafka, 2);
    processorEnvironment(brokers, topics);
    const handler = await loadHandler(bundle);
    const model = new GeneratorModel({ seed: 21, invalidRatio: 0.2 });
    const records = Array.from({ length: 500 }, () => model.next());
    await produce(kafka, topics.source, records);

    await drain({
      topic: topics.source,
      batchSize: 100,
      batchWindowMs: 100,
      invoke: handler.invoke,
    });
    await handler.close();

    const valid = records.filter((r) => r.kind === "valid").length;
    expect((await readTopic(kafka, topics.processed)).length).toBe(valid);
    expect((await readTopic(kafka, topics.deadLetter)).length).toBe(500 - valid);
  });

  it.skipIf(!NODE22)(
    "runs under Node.js 22, as deployed: the harness on NODE22 with the asset as handler, zstd outputs (node:zlib's)",
    async () => {
      const bundle = processorAsset();
      const { kafka, brokers } = testKafka("bundle-node22-test");
      const topics = await createTopicTrio(kafka, 2);
      const model = new GeneratorModel({ seed: 22, invalidRatio: 0.2 });
      const records = Array.from({ length: 300 }, () => model.next());
      await produce(kafka, topics.source, records);

      const groupId = `node22-${randomUUID()}`;
      const child = spawn(
        NODE22 as string,
        [
          "--import",
          "tsx",
          "bin/harness.ts",
          ...["--brokers", brokers.join(","), "--topic", topics.source, "--group", groupId, "--handler", bundle],
          ...["--batch-size", "100", "--batch-window-ms", "100"],
        ],
        {
          cwd: REPO_ROOT,
          env: {
            ...process.env,
            KAFKA_BROKERS: brokers.join(","),
            SOURCE_TOPIC: topics.source,
            PROCESSED_TOPIC: topics.processed,
            DLQ_TOPIC: topics.deadLetter,
            // Node.js 22's own zstd, as in Lambda: the bundle leaves zstd's fallback packages out.
            OUTPUT_COMPRESSION: "zstd",
          },
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let output = "";
      child.stdout.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      child.stderr.on("data", (chunk: Buffer) => {
        output += chunk.toString();
      });
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
      try {
        await waitFor(
          `the Node.js 22 harness to drain ${topics.source}`,
          async () => child.exitCode === null && (await groupLag(kafka, groupId, topics.source)) === 0,
          90_000,
          250,
        ).catch((error: Error) => {
          throw new Error(`${error.message}; its output:\n${output}`);
        });
        child.kill("SIGTERM");
        expect(await exited, output).toBe(0);
      } finally {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      }

      // The harness names the runtime it runs on; the asset was invoked in that very process.
      expect(/running on Node\.js (v\S+)/.exec(output)?.[1], output).toMatch(/^v22\./);
      const valid = records.filter((r) => r.kind === "valid").length;
      const outputs = await codecsOnTheWire(async () => [
        (await readTopic(kafka, topics.processed)).length,
        (await readTopic(kafka, topics.deadLetter)).length,
      ]);
      expect(outputs.result).toEqual([valid, 300 - valid]);
      expect(outputs.codecs).toEqual(["zstd"]);
    },
  );
});
