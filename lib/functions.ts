/**
 * The project's Lambda functions as NodejsFunction, bundled locally by esbuild (no Docker) with the options of
 * lib/bundling.ts, so the asset CDK deploys is the bundle `npm run build` makes and the local harness runs.
 */
import { Duration, RemovalPolicy } from "aws-cdk-lib";
import type * as ec2 from "aws-cdk-lib/aws-ec2";
import * as iam from "aws-cdk-lib/aws-iam";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as nodejs from "aws-cdk-lib/aws-lambda-nodejs";
import * as logs from "aws-cdk-lib/aws-logs";
import type { Construct } from "constructs";
import { BUNDLES, type BundleName, bundleOptions, PROJECT_ROOT } from "./bundling.ts";
import { acknowledge } from "./nag.ts";

export interface PipelineFunctionProps {
  readonly bundle: Exclude<BundleName, "generator">;
  readonly description: string;
  readonly vpc: ec2.IVpc;
  readonly subnets: ec2.SubnetSelection;
  readonly securityGroup: ec2.ISecurityGroup;
  readonly environment: Record<string, string>;
  /** @default 1 minute */
  readonly timeout?: Duration;
  /** @default 1024 */
  readonly memorySize?: number;
  /** @default one month */
  readonly logRetention?: logs.RetentionDays;
}

/** What a Lambda function needs to write its logs: a stream in its own log group, and events to it. */
export const LOG_WRITE_ACTIONS = ["logs:CreateLogStream", "logs:PutLogEvents"];

/**
 * A Lambda execution role that may write logs only to `logGroups` (instead of AWSLambdaBasicExecutionRole, which
 * allows logs:CreateLogGroup/CreateLogStream/PutLogEvents on every log group: the log groups here exist before their
 * functions, so CreateLogGroup is never needed) and, with `vpc`, manage the network interfaces of a function in a VPC
 * (AWSLambdaVPCAccessExecutionRole, the AWS-maintained minimum Lambda checks for at CreateFunction).
 */
export function lambdaRole(
  scope: Construct,
  id: string,
  props: { readonly logGroups: readonly logs.ILogGroup[]; readonly vpc?: boolean },
): iam.Role {
  const role = new iam.Role(scope, id, {
    assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
    managedPolicies: props.vpc
      ? [iam.ManagedPolicy.fromAwsManagedPolicyName("service-role/AWSLambdaVPCAccessExecutionRole")]
      : [],
  });
  if (props.vpc) {
    acknowledge(
      role,
      "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]",
      "The AWS-maintained minimum for a Lambda function in a VPC: creating, describing and deleting its network interfaces (Lambda checks for it at CreateFunction); nothing else.",
    );
  }
  // A log group's Arn attribute ends in ":*", which covers its log streams.
  role.addToPolicy(
    new iam.PolicyStatement({ actions: LOG_WRITE_ACTIONS, resources: props.logGroups.map((g) => g.logGroupArn) }),
  );
  return role;
}

/** A pipeline function and its execution role (`${id}Role`), which may write only to the function's own log group. */
export interface PipelineFunction {
  readonly fn: nodejs.NodejsFunction;
  /**
   * Grant to this. The function itself holds `role.withoutPolicyUpdates()`, so that nothing (such as
   * ManagedKafkaEventSource, which would attach AWSLambdaMSKExecutionRole with describes on "*") adds to the role
   * behind our back: every permission is one this project grants on purpose.
   */
  readonly role: iam.Role;
  readonly logGroup: logs.LogGroup;
}

export function pipelineFunction(scope: Construct, id: string, props: PipelineFunctionProps): PipelineFunction {
  const options = bundleOptions(props.bundle);
  const logGroup = new logs.LogGroup(scope, `${id}Logs`, {
    retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
    removalPolicy: RemovalPolicy.DESTROY,
  });
  const role = lambdaRole(scope, `${id}Role`, { logGroups: [logGroup], vpc: true });
  const fn = new nodejs.NodejsFunction(scope, id, {
    entry: `${PROJECT_ROOT}/${BUNDLES[props.bundle]}`,
    handler: "handler",
    projectRoot: PROJECT_ROOT,
    depsLockFilePath: `${PROJECT_ROOT}/package-lock.json`,
    runtime: lambda.Runtime.NODEJS_22_X,
    architecture: lambda.Architecture.ARM_64,
    description: props.description,
    timeout: props.timeout ?? Duration.minutes(1),
    memorySize: props.memorySize ?? 1024,
    vpc: props.vpc,
    vpcSubnets: props.subnets,
    securityGroups: [props.securityGroup],
    logGroup,
    role: role.withoutPolicyUpdates(),
    environment: { NODE_OPTIONS: "--enable-source-maps", ...props.environment },
    bundling: {
      format: nodejs.OutputFormat.ESM,
      target: "node22",
      minify: options.minify,
      sourceMap: options.sourcemap === true,
      banner: (options.banner as { js: string }).js,
      externalModules: options.external,
      mainFields: ["module", "main"],
      forceDockerBundling: false,
    },
  });
  acknowledge(
    fn,
    "AwsSolutions-L1",
    "The runtime is pinned to nodejs22.x on purpose: the code is tested on Node.js 20 and 22, not on later majors.",
  );
  // The role's own policy (logs, and whatever is granted to the role later) before the function: the function holds
  // the role without policy updates, so CDK does not add this dependency itself. (The role is a GetAtt already.)
  const policy = role.node.tryFindChild("DefaultPolicy");
  if (policy) fn.node.addDependency(policy);
  return { fn, role, logGroup };
}
