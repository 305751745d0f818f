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
  /** @default a role CDK creates */
  readonly role?: iam.IRole;
}

/**
 * A Lambda execution role with only the two AWS basics (logs; ENIs in the VPC). Grant to `role`, and give the function
 * `role.withoutPolicyUpdates()`, so that nothing (such as ManagedKafkaEventSource, which would attach
 * AWSLambdaMSKExecutionRole with describes on "*") adds to it behind our back.
 */
export function lambdaVpcRole(scope: Construct, id: string): iam.Role {
  return new iam.Role(scope, id, {
    assumedBy: new iam.ServicePrincipal("lambda.amazonaws.com"),
    managedPolicies: ["service-role/AWSLambdaBasicExecutionRole", "service-role/AWSLambdaVPCAccessExecutionRole"].map(
      (name) => iam.ManagedPolicy.fromAwsManagedPolicyName(name),
    ),
  });
}

export function pipelineFunction(scope: Construct, id: string, props: PipelineFunctionProps): nodejs.NodejsFunction {
  const options = bundleOptions(props.bundle);
  const logGroup = new logs.LogGroup(scope, `${id}Logs`, {
    retention: props.logRetention ?? logs.RetentionDays.ONE_MONTH,
    removalPolicy: RemovalPolicy.DESTROY,
  });
  return new nodejs.NodejsFunction(scope, id, {
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
    role: props.role,
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
}
