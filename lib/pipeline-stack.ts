/**
 * The user-login pipeline on AWS: network, MSK (IAM auth), topics, the processor Lambda and its MSK event source
 * mapping, the generator on ECS Fargate, alarms and a dashboard.
 */
import { Aws, CfnOutput, Duration, RemovalPolicy, Stack, type StackProps } from "aws-cdk-lib";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import * as iam from "aws-cdk-lib/aws-iam";
import * as lambda from "aws-cdk-lib/aws-lambda";
import * as sources from "aws-cdk-lib/aws-lambda-event-sources";
import * as logs from "aws-cdk-lib/aws-logs";
import type { Construct } from "constructs";
import { OUTPUT_COMPRESSIONS, type OutputCompression } from "../functions/shared/config.ts";
import {
  ESM_DEFAULTS,
  MAX_BATCH_SIZE,
  MAX_BATCH_WINDOW_MS,
  MAX_FUNCTION_TIMEOUT_SECONDS,
  MIN_PROCESSOR_TIMEOUT_SECONDS,
} from "../functions/shared/esm.ts";
import { sizeConfigs } from "../functions/shared/topic-settings.ts";
import { pipelineFunction } from "./functions.ts";
import { type GeneratorProps, GeneratorService } from "./generator.ts";
import { type AlarmProps, PipelineMonitoring } from "./monitoring.ts";
import {
  checkInteger,
  MskCluster,
  type MskClusterProps,
  PipelineTopics,
  PropsError,
  resolveTopics,
  type TopicProps,
} from "./msk.ts";
import { acknowledge } from "./nag.ts";
import {
  type EndpointScope,
  INTERFACE_ENDPOINTS,
  type InterfaceEndpointName,
  MSK_IAM_PORT,
  s3PrefixListId,
  scopeEndpointPolicies,
} from "./network.ts";

/** The network-interface actions an MSK event source mapping needs (with-msk-permissions.html, "VPC permissions"). */
export const ESM_NETWORK_ACTIONS = [
  "ec2:CreateNetworkInterface",
  "ec2:DescribeNetworkInterfaces",
  "ec2:DescribeVpcs",
  "ec2:DeleteNetworkInterface",
  "ec2:DescribeSubnets",
  "ec2:DescribeSecurityGroups",
] as const;

export interface ProcessorProps {
  /** @default "TRIM_HORIZON" */
  readonly startingPosition?: "TRIM_HORIZON" | "LATEST";
  /** Records per invocation, 1..10000. @default 100 */
  readonly batchSize?: number;
  /** Longest wait to fill a batch, 0..300 s. @default 1 second */
  readonly batchingWindow?: Duration;
  /** @default "user-login-processor" */
  readonly consumerGroupId?: string;
  /** Provisioned pollers (provisioned mode: partial batch responses and Kafka failure destinations need it). @default 1 */
  readonly minPollers?: number;
  /** @default 3 */
  readonly maxPollers?: number;
  /** Retries of a failed batch before its records are parked in the failure topic, 0..10000. @default 10 */
  readonly retryAttempts?: number;
  /** Records older than this are parked unprocessed; 60 s .. 7 days. @default 1 day */
  readonly maxRecordAge?: Duration;
  /** @default true */
  readonly bisectBatchOnError?: boolean;
  /** Kafka partial batch responses (and PARTIAL_BATCH_RESPONSE=true in the function). @default true */
  readonly reportBatchItemFailures?: boolean;
  /** @default 1024 */
  readonly memorySize?: number;
  /** @default 2 minutes */
  readonly timeout?: Duration;
  /**
   * The codec of the processor's produce requests to the processed and dead-letter topics (OUTPUT_COMPRESSION):
   * one of "none", "gzip", "snappy", "lz4", "zstd". @default 'none'
   */
  readonly outputCompression?: OutputCompression;
}

export interface UserLoginPipelineStackProps extends StackProps {
  /** Use this existing VPC (needs its private subnets in 2+ AZs; synth then needs AWS credentials once). @default a new VPC */
  readonly vpcId?: string;
  /** @default "user-login" */
  readonly clusterName?: string;
  readonly cluster?: MskClusterProps;
  readonly topics?: TopicProps;
  readonly processor?: ProcessorProps;
  readonly generator?: GeneratorProps;
  readonly alarms?: AlarmProps;
}

export class UserLoginPipelineStack extends Stack {
  readonly cluster: MskCluster;
  readonly processor: lambda.Function;

  constructor(scope: Construct, id: string, props: UserLoginPipelineStackProps = {}) {
    super(scope, id, props);
    const p = props.processor ?? {};
    const batchSize = checkInteger("processor.batchSize", p.batchSize ?? ESM_DEFAULTS.batchSize, 1, MAX_BATCH_SIZE);
    const windowSeconds = (p.batchingWindow ?? Duration.millis(ESM_DEFAULTS.batchingWindowMs)).toSeconds();
    checkInteger("processor.batchingWindow (seconds)", windowSeconds, 0, MAX_BATCH_WINDOW_MS / 1000);
    const minPollers = checkInteger("processor.minPollers", p.minPollers ?? 1, 1, 200);
    const maxPollers = checkInteger("processor.maxPollers", p.maxPollers ?? 3, 1, 2000);
    if (maxPollers < minPollers)
      throw new PropsError(
        `processor.maxPollers (${maxPollers}) must be at least processor.minPollers (${minPollers})`,
      );
    const retryAttempts = checkInteger(
      "processor.retryAttempts",
      p.retryAttempts ?? ESM_DEFAULTS.retryAttempts,
      0,
      10_000,
    );
    const maxRecordAge = checkInteger(
      "processor.maxRecordAge (seconds)",
      (p.maxRecordAge ?? Duration.seconds(ESM_DEFAULTS.maxRecordAgeSeconds)).toSeconds(),
      60,
      604_800,
    );
    const groupId = p.consumerGroupId ?? "user-login-processor";
    if (!/^[a-zA-Z0-9._-]{1,200}$/.test(groupId))
      throw new PropsError(`processor.consumerGroupId "${groupId}" is not a valid group id`);
    const timeout = p.timeout ?? Duration.seconds(ESM_DEFAULTS.functionTimeoutSeconds);
    // The processor starts no produce request in the last SEND_RESERVE_MS (35 s) of an invocation: below a minute it
    // would have too little time to write a batch, and every record would end on the failure topic.
    checkInteger(
      "processor.timeout (seconds)",
      timeout.toSeconds(),
      MIN_PROCESSOR_TIMEOUT_SECONDS,
      MAX_FUNCTION_TIMEOUT_SECONDS,
    );
    const outputCompression = p.outputCompression ?? "none";
    if (!(OUTPUT_COMPRESSIONS as readonly string[]).includes(outputCompression)) {
      throw new PropsError(
        `processor.outputCompression must be one of ${OUTPUT_COMPRESSIONS.join(", ")}, got "${outputCompression}"`,
      );
    }
    const topics = resolveTopics(props.topics);

    // Network: private subnets in two AZs with interface endpoints (no NAT gateway, no route to the internet).
    const vpc = props.vpcId
      ? ec2.Vpc.fromLookup(this, "Vpc", { vpcId: props.vpcId })
      : new ec2.Vpc(this, "Vpc", {
          maxAzs: 2,
          natGateways: 0,
          subnetConfiguration: [{ name: "private", subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 22 }],
          flowLogs: {
            rejected: {
              destination: ec2.FlowLogDestination.toCloudWatchLogs(
                new logs.LogGroup(this, "VpcFlowLogs", {
                  retention: logs.RetentionDays.ONE_MONTH,
                  removalPolicy: RemovalPolicy.DESTROY,
                }),
              ),
              trafficType: ec2.FlowLogTrafficType.REJECT,
            },
          },
        });
    const subnets: ec2.SubnetSelection = props.vpcId
      ? { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, onePerAz: true }
      : { subnetType: ec2.SubnetType.PRIVATE_ISOLATED };
    const clusterSg = new ec2.SecurityGroup(this, "ClusterSecurityGroup", {
      vpc,
      description: "MSK brokers",
      allowAllOutbound: false,
    });
    // Outbound only where the clients go: the brokers' IAM port, the AWS APIs' 443 (the interface endpoints, and S3
    // for the generator's image layers). DNS to the VPC resolver and the link-local metadata and credential endpoints
    // are not subject to security groups.
    /** Scopes the endpoint policies once the resources they name exist (only when the stack makes the VPC). */
    let scopeEndpoints: ((scope: EndpointScope) => void) | undefined;
    const clientSg = new ec2.SecurityGroup(this, "ClientSecurityGroup", {
      vpc,
      description: "Kafka clients: processor, generator, topic setup",
      allowAllOutbound: false,
    });
    clusterSg.addIngressRule(clientSg, ec2.Port.tcp(MSK_IAM_PORT), "IAM-authenticated Kafka from Kafka clients");
    clientSg.addEgressRule(clusterSg, ec2.Port.tcp(MSK_IAM_PORT), "IAM-authenticated Kafka to the brokers");
    // The event source mapping's pollers use the cluster's security group; in provisioned mode they need only the
    // brokers (no STS or Lambda endpoint: lib/network.ts INTERFACE_ENDPOINTS).
    clusterSg.addIngressRule(clusterSg, ec2.Port.tcp(MSK_IAM_PORT), "IAM-authenticated Kafka from the ESM pollers");
    clusterSg.addEgressRule(clusterSg, ec2.Port.tcp(MSK_IAM_PORT), "ESM pollers to the brokers");
    if (props.vpcId) {
      // Your VPC reaches AWS APIs its own way (NAT or your endpoints, addresses unknown here): 443 only.
      clientSg.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), "AWS APIs through the VPC's own route");
    } else {
      const endpointSg = new ec2.SecurityGroup(this, "EndpointSecurityGroup", {
        vpc,
        description: "VPC interface endpoints",
        allowAllOutbound: false,
      });
      endpointSg.addIngressRule(clientSg, ec2.Port.tcp(443), "AWS APIs from Kafka clients");
      clientSg.addEgressRule(endpointSg, ec2.Port.tcp(443), "AWS APIs through the interface endpoints");
      const endpoints = Object.fromEntries(
        Object.entries(INTERFACE_ENDPOINTS).map(([name, service]) => [
          name,
          vpc.addInterfaceEndpoint(name, {
            service,
            subnets,
            securityGroups: [endpointSg],
            privateDnsEnabled: true,
            open: false,
          }),
        ]),
      ) as Record<InterfaceEndpointName, ec2.InterfaceVpcEndpoint>;
      const s3 = vpc.addGatewayEndpoint("S3", { service: ec2.GatewayVpcEndpointAwsService.S3, subnets: [subnets] });
      const lookupLogs = new logs.LogGroup(this, "S3PrefixListLookupLogs", {
        retention: logs.RetentionDays.ONE_MONTH,
        removalPolicy: RemovalPolicy.DESTROY,
      });
      clientSg.addEgressRule(
        ec2.Peer.prefixList(s3PrefixListId(this, "S3PrefixListLookup", lookupLogs)),
        ec2.Port.tcp(443),
        "S3 (the generator's image layers) through the gateway endpoint",
      );
      scopeEndpoints = (scope) => scopeEndpointPolicies(endpoints, s3, scope);
    }

    this.cluster = new MskCluster(this, "Msk", {
      ...props.cluster,
      clusterName: props.clusterName ?? "user-login",
      vpc,
      subnets,
      securityGroup: clusterSg,
    });
    const topicResources = new PipelineTopics(this, "Topics", {
      ...props.topics,
      cluster: this.cluster,
      names: topics,
      vpc,
      subnets,
      securityGroup: clientSg,
    });

    const reportBatchItemFailures = p.reportBatchItemFailures ?? ESM_DEFAULTS.reportBatchItemFailures;
    const { fn, role } = pipelineFunction(this, "Processor", {
      bundle: "processor",
      description: "Validates and transforms user-login records; dead-letters the rest",
      vpc,
      subnets,
      securityGroup: clientSg,
      timeout,
      memorySize: checkInteger("processor.memorySize", p.memorySize ?? 1024, 128, 10_240),
      environment: {
        KAFKA_AUTH: "iam",
        // The producer's brokers come from this cluster (GetBootstrapBrokers), never from an event's bootstrapServers,
        // and an event from any other eventSourceArn is refused (functions/processor/processor.ts checkEventSource).
        MSK_CLUSTER_ARN: this.cluster.clusterArn,
        SOURCE_TOPIC: topics.source,
        PROCESSED_TOPIC: topics.processed,
        DLQ_TOPIC: topics.deadLetter,
        // The limits the processor sizes its produce requests by: the ones PipelineTopics creates the topics with.
        PROCESSED_MAX_MESSAGE_BYTES: sizeConfigs("processed")["max.message.bytes"] as string,
        DLQ_MAX_MESSAGE_BYTES: sizeConfigs("deadLetter")["max.message.bytes"] as string,
        PARTIAL_BATCH_RESPONSE: String(reportBatchItemFailures),
        OUTPUT_COMPRESSION: outputCompression,
        LOG_LEVEL: "INFO",
      },
    });
    this.processor = fn;
    this.cluster.grantConnect(role);
    this.cluster.grantRead(role, topics.source, groupId);
    this.cluster.grantWrite(role, [topics.processed, topics.deadLetter, topics.esmFailures]);
    // What the MSK event source mapping itself needs from the function's execution role, exactly the "Required
    // permissions" of the AWS Lambda Developer Guide, "Configuring Lambda permissions for Amazon MSK event source
    // mappings" (with-msk-permissions.html; the same actions as AWSLambdaMSKExecutionRole, less its logs, which the
    // mapping does not write, and less kafka:DescribeCluster: "you only need one of kafka:DescribeCluster or
    // kafka:DescribeClusterV2 ... for serverless Amazon MSK clusters, you must use kafka:DescribeClusterV2"):
    // kafka:DescribeClusterV2 and kafka:GetBootstrapBrokers on the cluster (GetBootstrapBrokers is in grantConnect,
    // which the function's own MSK_CLUSTER_ARN lookup needs too), and the network-interface actions for the pollers'
    // interfaces in the cluster's subnets, which have no resource-level scoping in this form. Its Kafka data-plane
    // actions (IAM auth) are grantConnect and grantRead; its on-failure writes to the failure topic, grantWrite.
    role.addToPolicy(
      new iam.PolicyStatement({ actions: ["kafka:DescribeClusterV2"], resources: [this.cluster.clusterArn] }),
    );
    role.addToPolicy(
      new iam.PolicyStatement({
        actions: [...ESM_NETWORK_ACTIONS],
        resources: ["*"],
      }),
    );
    acknowledge(
      role,
      "AwsSolutions-IAM5[Resource::*]",
      "Only the MSK event source mapping's network-interface actions (ec2:CreateNetworkInterface, DescribeNetworkInterfaces, DescribeVpcs, DeleteNetworkInterface, DescribeSubnets, DescribeSecurityGroups), the required set of the Lambda Developer Guide's with-msk-permissions.html; the Describe actions have no resource-level permissions. Every kafka and kafka-cluster action of this role names its cluster, topic or group ARN (a test checks).",
    );
    const source = new sources.ManagedKafkaEventSource({
      clusterArn: this.cluster.clusterArn,
      topic: topics.source,
      consumerGroupId: groupId,
      startingPosition:
        p.startingPosition === "LATEST" ? lambda.StartingPosition.LATEST : lambda.StartingPosition.TRIM_HORIZON,
      batchSize,
      maxBatchingWindow: Duration.seconds(windowSeconds),
      // Always provisioned mode (minPollers >= 1): the network (no STS or Lambda endpoint, lib/network.ts) relies on it.
      provisionedPollerConfig: { minimumPollers: minPollers, maximumPollers: maxPollers },
      retryAttempts,
      maxRecordAge: Duration.seconds(maxRecordAge),
      bisectBatchOnError: p.bisectBatchOnError ?? ESM_DEFAULTS.bisectBatchOnError,
      reportBatchItemFailures,
      onFailure: new sources.KafkaDlq(topics.esmFailures),
      metricsConfig: {
        metrics: [lambda.MetricType.EVENT_COUNT, lambda.MetricType.ERROR_COUNT, lambda.MetricType.KAFKA_METRICS],
      },
    });
    fn.addEventSource(source);
    // Records must not flow before the topics exist.
    fn.node.addDependency(topicResources);

    const generator = new GeneratorService(this, "Generator", {
      ...props.generator,
      cluster: this.cluster,
      topic: topics.source,
      vpc,
      subnets,
      securityGroup: clientSg,
    });
    generator.node.addDependency(topicResources);
    scopeEndpoints?.({
      clusterArn: this.cluster.clusterArn,
      repositoryArn: generator.image.repository.repositoryArn,
      generatorLogGroup: generator.logGroup,
    });

    const monitoring = new PipelineMonitoring(this, "Monitoring", {
      ...props.alarms,
      fn,
      timeout,
      eventSourceMappingId: source.eventSourceMappingId,
      cluster: this.cluster,
      topics,
      generator,
    });

    new CfnOutput(this, "ClusterArn", { value: this.cluster.clusterArn });
    new CfnOutput(this, "BootstrapBrokersCommand", {
      value: `aws kafka get-bootstrap-brokers --region ${Aws.REGION} --cluster-arn ${this.cluster.clusterArn}`,
    });
    new CfnOutput(this, "TopicNames", { value: Object.values(topics).join(",") });
    new CfnOutput(this, "ProcessorFunction", { value: fn.functionName });
    new CfnOutput(this, "AlarmTopicArn", { value: monitoring.alarmTopic.topicArn });
    new CfnOutput(this, "DashboardUrl", {
      value: `https://${Aws.REGION}.console.aws.amazon.com/cloudwatch/home?region=${Aws.REGION}#dashboards:name=${monitoring.dashboard.dashboardName}`,
    });
  }
}
