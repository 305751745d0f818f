/**
 * The data generator as an ECS Fargate service, from functions/generator/Dockerfile, writing only the source topic.
 */
import { RemovalPolicy } from "aws-cdk-lib";
import type * as ec2 from "aws-cdk-lib/aws-ec2";
import * as ecrAssets from "aws-cdk-lib/aws-ecr-assets";
import * as ecs from "aws-cdk-lib/aws-ecs";
import * as logs from "aws-cdk-lib/aws-logs";
import { Construct } from "constructs";
import { PROJECT_ROOT } from "./bundling.ts";
import { checkInteger, type MskCluster, PropsError } from "./msk.ts";
import { acknowledge } from "./nag.ts";

export interface GeneratorProps {
  /** Running tasks; 0 deploys the service stopped. @default 1 */
  readonly desiredCount?: number;
  /** Events per second per task. @default 2 (the original generator's rate) */
  readonly rate?: number;
  /** Share of deliberately bad records, 0..1. @default 0 */
  readonly invalidRatio?: number;
  /** @default 256 (0.25 vCPU) */
  readonly cpu?: number;
  /** @default 512 */
  readonly memoryMiB?: number;
}

interface GeneratorConstructProps extends GeneratorProps {
  readonly cluster: MskCluster;
  readonly topic: string;
  readonly vpc: ec2.IVpc;
  readonly subnets: ec2.SubnetSelection;
  readonly securityGroup: ec2.ISecurityGroup;
}

export class GeneratorService extends Construct {
  readonly service: ecs.FargateService;
  readonly ecsCluster: ecs.Cluster;
  readonly logGroup: logs.LogGroup;
  /** The generator's image (its repository is what the ECR endpoints let through). */
  readonly image: ecrAssets.DockerImageAsset;
  readonly desiredCount: number;

  constructor(scope: Construct, id: string, props: GeneratorConstructProps) {
    super(scope, id);
    this.desiredCount = checkInteger("generator.desiredCount", props.desiredCount ?? 1, 0, 10);
    const rate = props.rate ?? 2;
    if (!(rate > 0 && rate <= 100_000))
      throw new PropsError(`generator.rate must be a number from 0 (exclusive) to 100000, got ${rate}`);
    const invalidRatio = props.invalidRatio ?? 0;
    if (!(invalidRatio >= 0 && invalidRatio <= 1))
      throw new PropsError(`generator.invalidRatio must be from 0 to 1, got ${invalidRatio}`);

    this.ecsCluster = new ecs.Cluster(this, "Cluster", {
      vpc: props.vpc,
      containerInsightsV2: ecs.ContainerInsights.ENABLED,
    });
    const taskDefinition = new ecs.FargateTaskDefinition(this, "Task", {
      cpu: props.cpu ?? 256,
      memoryLimitMiB: props.memoryMiB ?? 512,
      runtimePlatform: {
        cpuArchitecture: ecs.CpuArchitecture.ARM64,
        operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
      },
    });
    this.logGroup = new logs.LogGroup(this, "Logs", {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.image = new ecrAssets.DockerImageAsset(this, "Image", {
      directory: PROJECT_ROOT,
      file: "functions/generator/Dockerfile",
      platform: ecrAssets.Platform.LINUX_ARM64,
    });
    taskDefinition.addContainer("generator", {
      image: ecs.ContainerImage.fromDockerImageAsset(this.image),
      logging: ecs.LogDrivers.awsLogs({ logGroup: this.logGroup, streamPrefix: "generator" }),
      environment: {
        KAFKA_AUTH: "iam",
        MSK_CLUSTER_ARN: props.cluster.clusterArn,
        SOURCE_TOPIC: props.topic,
        GENERATOR_RATE: String(rate),
        GENERATOR_INVALID_RATIO: String(invalidRatio),
      },
      stopTimeout: undefined,
    });
    acknowledge(
      taskDefinition,
      "AwsSolutions-ECS2",
      "The generator's environment holds only non-secret settings (topic, rate, cluster ARN); it authenticates with its task role.",
    );
    acknowledge(
      taskDefinition.obtainExecutionRole(),
      "AwsSolutions-IAM5[Resource::*]",
      "ECS's image pull needs ecr:GetAuthorizationToken, which has no resource-level permissions; the role's other actions name the asset repository and the generator's log group.",
    );
    props.cluster.grantConnect(taskDefinition.taskRole);
    props.cluster.grantWrite(taskDefinition.taskRole, [props.topic]);
    this.service = new ecs.FargateService(this, "Service", {
      cluster: this.ecsCluster,
      taskDefinition,
      desiredCount: this.desiredCount,
      vpcSubnets: props.subnets,
      securityGroups: [props.securityGroup],
      assignPublicIp: false,
      minHealthyPercent: 0,
      circuitBreaker: { rollback: true },
    });
  }
}
