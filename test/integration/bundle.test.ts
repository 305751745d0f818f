/**
 * The Lambda asset the CDK stack deploys (NodejsFunction, bundled with lib/bundling.ts's options), loaded from the
 * synthesized cloud assembly and run by the harness on a real broker: one build path from laptop to AWS.
 */
import { statSync } from "node:fs";
import { join } from "node:path";
import { Match, Template } from "aws-cdk-lib/assertions";
import { describe, expect, it } from "vitest";
import { GeneratorModel } from "../../functions/generator/model.ts";
import { loadHandler } from "../../functions/local/lambda-runtime.ts";
import { pipelineStack } from "../support/cdk.ts";
import { createTopicTrio, drain, processorEnvironment, produce, readTopic, testKafka } from "../support/kafka.ts";

function processorAsset(): string {
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
});
