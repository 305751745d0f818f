/**
 * cdk-nag (AwsSolutions pack, v3: a CDK policy-validation plugin) and the rules this stack acknowledges, each with
 * the specific reason it does not apply.
 */
import { type App, type Stack, Validations } from "aws-cdk-lib";
import { AwsSolutionsChecks } from "cdk-nag";

export const ACKNOWLEDGED_RULES: ReadonlyArray<{ id: string; reason: string }> = [
  {
    id: "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
    reason:
      "The AWS-maintained minimum for a Lambda function's log writes (processor, topic setup, Provider framework).",
  },
  {
    id: "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]",
    reason: "The AWS-maintained minimum for a Lambda function in a VPC (its network interfaces).",
  },
  {
    id: "AwsSolutions-IAM5[Resource::*]",
    reason:
      "Only actions without resource-level permissions: ec2:DescribeVpcs/DescribeSubnets/DescribeSecurityGroups for the MSK event source mapping's pollers and the key policy's own key. No kafka-cluster action has a wildcard (a test checks every statement).",
  },
  {
    id: "AwsSolutions-L1",
    reason:
      "The runtime is pinned to nodejs22.x on purpose: the code is tested on Node.js 20 and 22, not on later majors.",
  },
  {
    id: "AwsSolutions-ECS2",
    reason:
      "The generator's environment holds only non-secret settings (topic, rate, cluster ARN); it authenticates with its task role.",
  },
];

export function applyNagAcknowledgements(stack: Stack): void {
  for (const rule of ACKNOWLEDGED_RULES) Validations.of(stack).acknowledge(rule);
}

/** Runs the AwsSolutions pack on every stack of the app at synth time. */
export function addNagChecks(app: App): void {
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
}
