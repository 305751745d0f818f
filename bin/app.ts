/**
 * The CDK app: `npx cdk synth` / `npx cdk deploy`. Settings come from CDK context (`-c key=value` or cdk.json):
 *   vpcId, clusterType (serverless|provisioned), brokerCount, batchSize, generatorDesiredCount, generatorRate,
 *   generatorInvalidRatio, alarmEmail.
 */
import { App, Tags } from "aws-cdk-lib";
import { addNagChecks } from "../lib/nag.ts";
import { UserLoginPipelineStack } from "../lib/pipeline-stack.ts";

const app = new App();
const context = (name: string): string | undefined => {
  const value = app.node.tryGetContext(name);
  return value === undefined || value === "" ? undefined : String(value);
};
const number = (name: string): number | undefined => {
  const value = context(name);
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (!Number.isFinite(parsed))
    throw new Error(`context ${name} must be a number, got "${value}" (cdk.json or -c ${name}=...)`);
  return parsed;
};
const clusterType = context("clusterType");
if (clusterType !== undefined && clusterType !== "serverless" && clusterType !== "provisioned") {
  throw new Error(`context clusterType must be "serverless" or "provisioned", got "${clusterType}"`);
}

const stack = new UserLoginPipelineStack(app, "UserLoginPipeline", {
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
  description:
    "user-login-pipeline: MSK, a Lambda stream processor with a DLQ, a Fargate generator, alarms and a dashboard",
  vpcId: context("vpcId"),
  cluster: clusterType === "provisioned" ? { type: "provisioned", brokerCount: number("brokerCount") } : undefined,
  processor: { batchSize: number("batchSize") },
  generator: {
    desiredCount: number("generatorDesiredCount"),
    rate: number("generatorRate"),
    invalidRatio: number("generatorInvalidRatio"),
  },
  alarms: { email: context("alarmEmail") },
});
// AWS::CloudWatch::Dashboard takes no tags (cfn-lint E3002).
Tags.of(stack).add("project", "user-login-pipeline", { excludeResourceTypes: ["AWS::CloudWatch::Dashboard"] });
addNagChecks(app);
