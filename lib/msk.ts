/**
 * The MSK cluster (serverless or provisioned, IAM client authentication) and the pipeline's topics.
 */
import {
  Arn,
  ArnFormat,
  type CfnElement,
  CustomResource,
  Duration,
  Fn,
  RemovalPolicy,
  Stack,
  Validations,
} from "aws-cdk-lib";
import type * as ec2 from "aws-cdk-lib/aws-ec2";
import * as iam from "aws-cdk-lib/aws-iam";
import * as logs from "aws-cdk-lib/aws-logs";
import * as msk from "aws-cdk-lib/aws-msk";
import * as cr from "aws-cdk-lib/custom-resources";
import { Construct } from "constructs";
import { Kafka, logLevel } from "kafkajs";
import { createProducer } from "../functions/shared/kafka.ts";
import { kafkaVersion } from "../functions/shared/kafka-version.ts";
import { DEFAULT_TOPICS, ESM_FAILURE_TOPIC, sizeConfigs } from "../functions/shared/topic-settings.ts";
import { lambdaRole, pipelineFunction } from "./functions.ts";

export type ClusterType = "serverless" | "provisioned";

/** Whether the project's producers (createProducer: processor, generator) are idempotent. Builds one; connects nothing. */
export function producersAreIdempotent(): boolean {
  return createProducer(new Kafka({ brokers: ["127.0.0.1:9"], logLevel: logLevel.NOTHING })).isIdempotent();
}

export interface MskClusterProps {
  /** @default "serverless" (IAM only, nothing to size) */
  readonly type?: ClusterType;
  /** Provisioned only. @default "kafka.m7g.large" */
  readonly brokerType?: string;
  /** Provisioned only: a multiple of the number of subnets (AZs). Required for provisioned. */
  readonly brokerCount?: number;
  /** Provisioned only: EBS GiB per broker. @default 100 */
  readonly storageGiB?: number;
  /** Provisioned only; its major must match the embedded broker's. @default "4.1.x.kraft" */
  readonly kafkaVersion?: string;
}

export interface TopicProps {
  /** @default "user-login" */
  readonly source?: string;
  /** @default "processed-user-login" */
  readonly processed?: string;
  /** @default "user-login-dlq" */
  readonly deadLetter?: string;
  /** Where the event source mapping parks records that exhausted their retries. @default "user-login-esm-failures" */
  readonly esmFailures?: string;
  /** Partitions of each topic. @default 3 */
  readonly partitions?: number;
  /** @default 168 (7 days) */
  readonly retentionHours?: number;
  /**
   * Provisioned only (MSK Serverless fixes it at 3): 2 .. cluster.brokerCount.
   * @default min(3, cluster.brokerCount)
   */
  readonly replicationFactor?: number;
  /**
   * Provisioned only (MSK Serverless fixes it at 2): 1 .. replicationFactor - 1, so that acks=all writes go on while
   * one broker is down (every broker patch restarts each broker in turn).
   * @default max(1, replicationFactor - 1)
   */
  readonly minInSyncReplicas?: number;
}

export class PropsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PropsError";
  }
}

export function checkInteger(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new PropsError(`${name} must be a whole number from ${min} to ${max}, got ${value}`);
  }
  return value;
}

interface MskClusterConstructProps extends MskClusterProps {
  readonly vpc: ec2.IVpc;
  readonly subnets: ec2.SubnetSelection;
  readonly securityGroup: ec2.ISecurityGroup;
  readonly clusterName: string;
}

/** An MSK cluster with IAM client authentication, reachable from `securityGroup` on 9098. */
export class MskCluster extends Construct {
  readonly clusterArn: string;
  readonly clusterName: string;
  readonly type: ClusterType;
  readonly brokerCount: number | undefined;

  constructor(scope: Construct, id: string, props: MskClusterConstructProps) {
    super(scope, id);
    this.type = props.type ?? "serverless";
    this.clusterName = props.clusterName;
    const subnetIds = props.vpc.selectSubnets(props.subnets).subnetIds;
    if (this.type === "serverless") {
      for (const name of ["brokerType", "brokerCount", "storageGiB", "kafkaVersion"] as const) {
        if (props[name] !== undefined) {
          throw new PropsError(
            `cluster.${name} applies to provisioned clusters only: remove it or set cluster.type to "provisioned"`,
          );
        }
      }
      const cluster = new msk.CfnServerlessCluster(this, "Serverless", {
        clusterName: props.clusterName,
        clientAuthentication: { sasl: { iam: { enabled: true } } },
        vpcConfigs: [{ subnetIds, securityGroups: [props.securityGroup.securityGroupId] }],
      });
      this.clusterArn = cluster.attrArn;
      return;
    }
    if (props.brokerCount === undefined) {
      throw new PropsError(
        "cluster.brokerCount is required for a provisioned cluster (a multiple of the AZ count, e.g. 2 or 3)",
      );
    }
    this.brokerCount = checkInteger("cluster.brokerCount", props.brokerCount, 1, 30);
    if (this.brokerCount % subnetIds.length !== 0) {
      throw new PropsError(
        `cluster.brokerCount must be a multiple of the ${subnetIds.length} subnets (AZs), got ${this.brokerCount}`,
      );
    }
    const version = props.kafkaVersion ?? "4.1.x.kraft";
    const major = kafkaVersion().split(".")[0];
    if (version.split(".")[0] !== major) {
      throw new PropsError(
        `cluster.kafkaVersion must be a Kafka ${major}.x version like the embedded broker's (${kafkaVersion()}), got "${version}"`,
      );
    }
    const brokerLogs = new logs.LogGroup(this, "BrokerLogs", {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const cluster = new msk.CfnCluster(this, "Provisioned", {
      clusterName: props.clusterName,
      kafkaVersion: version,
      numberOfBrokerNodes: this.brokerCount,
      brokerNodeGroupInfo: {
        instanceType: props.brokerType ?? "kafka.m7g.large",
        clientSubnets: subnetIds,
        securityGroups: [props.securityGroup.securityGroupId],
        storageInfo: {
          ebsStorageInfo: { volumeSize: checkInteger("cluster.storageGiB", props.storageGiB ?? 100, 1, 16384) },
        },
      },
      clientAuthentication: { sasl: { iam: { enabled: true } }, unauthenticated: { enabled: false } },
      encryptionInfo: { encryptionInTransit: { clientBroker: "TLS", inCluster: true } },
      enhancedMonitoring: "PER_TOPIC_PER_BROKER",
      loggingInfo: { brokerLogs: { cloudWatchLogs: { enabled: true, logGroup: brokerLogs.logGroupName } } },
    });
    this.clusterArn = cluster.attrArn;
  }

  /** arn:aws:kafka:REGION:ACCOUNT:RESOURCE/CLUSTER_NAME/CLUSTER_UUID/NAME, for topics and groups. */
  resourceArn(resource: "topic" | "group", name: string): string {
    const clusterUuid = Fn.select(2, Fn.split("/", this.clusterArn));
    return Arn.format(
      {
        service: "kafka",
        resource,
        resourceName: `${this.clusterName}/${clusterUuid}/${name}`,
        arnFormat: ArnFormat.SLASH_RESOURCE_NAME,
      },
      Stack.of(this),
    );
  }

  /**
   * Lets `grantee` connect to the cluster (kafka-cluster:Connect) and look its bootstrap brokers up
   * (kafka:GetBootstrapBrokers: every component here resolves its brokers from MSK_CLUSTER_ARN). Nothing else: no
   * kafka-cluster:DescribeCluster (no client here sends a request that needs DESCRIBE on the cluster: kafkajs's
   * Metadata requests need DescribeTopic only) and no kafka:DescribeCluster/DescribeClusterV2 (no code calls them;
   * the event source mapping's DescribeClusterV2 is granted where the mapping is, lib/pipeline-stack.ts).
   */
  grantConnect(grantee: iam.IGrantable): void {
    iam.Grant.addToPrincipal({ grantee, actions: ["kafka-cluster:Connect"], resourceArns: [this.clusterArn] });
    iam.Grant.addToPrincipal({ grantee, actions: ["kafka:GetBootstrapBrokers"], resourceArns: [this.clusterArn] });
  }

  /**
   * Lets `grantee` produce to `topics` with the project's producer (createProducer in functions/shared/kafka.ts).
   *
   * If that producer is idempotent, the role also needs kafka-cluster:WriteDataIdempotently on the *cluster* ARN: for
   * Kafka 2.8 and later MSK's IAM access control does not let WriteData on a topic imply idempotent writes (only
   * WriteData on every topic does) and maps an idempotent producer's InitProducerId to the cluster's IDEMPOTENT_WRITE
   * ACL. Amazon MSK Developer Guide, "Create authorization policies for the IAM role"
   * (docs.aws.amazon.com/msk/latest/developerguide/create-iam-access-control-policies.html) and "Semantics of IAM
   * authorization policy actions and resources" (kafka-actions.html: WriteDataIdempotently is a cluster action).
   * Without it InitProducerId fails with "Cluster authorization failed". The producers are not idempotent today (see
   * README, "Failure semantics"), so the grant follows what createProducer builds instead of being written down:
   * make it idempotent again and every producing role gets it.
   */
  grantWrite(grantee: iam.IGrantable, topics: readonly string[], idempotent = producersAreIdempotent()): void {
    if (idempotent) {
      iam.Grant.addToPrincipal({
        grantee,
        actions: ["kafka-cluster:WriteDataIdempotently"],
        resourceArns: [this.clusterArn],
      });
    }
    iam.Grant.addToPrincipal({
      grantee,
      actions: ["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"],
      resourceArns: topics.map((topic) => this.resourceArn("topic", topic)),
    });
  }

  /** Lets `grantee` consume `topic` in consumer group `groupId` (what the MSK event source mapping needs). */
  grantRead(grantee: iam.IGrantable, topic: string, groupId: string): void {
    iam.Grant.addToPrincipal({
      grantee,
      actions: ["kafka-cluster:DescribeClusterDynamicConfiguration"],
      resourceArns: [this.clusterArn],
    });
    iam.Grant.addToPrincipal({
      grantee,
      actions: ["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"],
      resourceArns: [this.resourceArn("topic", topic)],
    });
    iam.Grant.addToPrincipal({
      grantee,
      actions: ["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"],
      resourceArns: [this.resourceArn("group", groupId)],
    });
  }
}

export interface ResolvedTopics {
  readonly source: string;
  readonly processed: string;
  readonly deadLetter: string;
  readonly esmFailures: string;
}

/** Each topic's role, for its size configs (functions/shared/topic-settings.ts). */
const TOPIC_ROLES = {
  source: "source",
  processed: "processed",
  deadLetter: "deadLetter",
  esmFailures: "esmFailure",
} as const satisfies Record<keyof ResolvedTopics, Parameters<typeof sizeConfigs>[0]>;

export function resolveTopics(props: TopicProps = {}): ResolvedTopics {
  const topics = {
    source: props.source ?? DEFAULT_TOPICS.source,
    processed: props.processed ?? DEFAULT_TOPICS.processed,
    deadLetter: props.deadLetter ?? DEFAULT_TOPICS.deadLetter,
    esmFailures: props.esmFailures ?? ESM_FAILURE_TOPIC,
  };
  for (const [key, name] of Object.entries(topics)) {
    if (!/^[a-zA-Z0-9._-]{1,249}$/.test(name))
      throw new PropsError(`topics.${key} "${name}" is not a valid Kafka topic name`);
  }
  if (new Set(Object.values(topics)).size !== 4) throw new PropsError("topics: the four topic names must differ");
  return topics;
}

/**
 * Topic configs as AWS::MSK::Topic's `Configs` wants them before base64: a JSON object of strings,
 * `{"retention.ms":"604800000",...}`.
 *
 * The CloudFormation reference (AWS::MSK::Topic) says only "Topic configurations encoded as a Base64 string", the
 * wording of the MSK CreateTopic/DescribeTopic API's `configs` field that the resource passes on. Two public sources
 * disagree on what is inside: the MSK Developer Guide's "Describe a topic using the AWS CLI" example decodes to Java
 * properties lines ("compression.type=producer\nretention.ms=604800000"), while the Terraform AWS provider's
 * `aws_msk_topic` (hashicorp/terraform-provider-aws, internal/service/kafka/topic.go) sends base64 of a JSON object to
 * CreateTopic and UpdateTopic and JSON-decodes the `configs` DescribeTopic returns, with acceptance tests
 * (TestAccKafkaTopic_configs) that run against MSK. Executable evidence wins: JSON. Only a deployment settles it;
 * README says so. Names that are not Kafka config names are refused.
 */
export function topicConfigsJson(configs: Readonly<Record<string, string>>): string {
  for (const name of Object.keys(configs)) {
    if (!/^[a-z0-9._-]+$/i.test(name))
      throw new PropsError(`topic config name "${name}" is not a Kafka config name (letters, digits, ".", "_", "-")`);
  }
  return JSON.stringify(configs);
}

/**
 * Replication factor and min.insync.replicas of the topics on a provisioned cluster. AWS's advice (Amazon MSK
 * Developer Guide, "Best practices for version upgrades", version-upgrades-best-practices.html, and "Best practices for
 * Standard brokers", bestpractices.html): RF at least 2 on two AZs and 3 on three, and minISR at most RF - 1, "so that
 * the partition replica set can tolerate one replica being offline". With minISR = RF an acks=all produce fails with
 * NOT_ENOUGH_REPLICAS whenever one replica's broker is down, and MSK patches brokers one at a time.
 */
export function replicationSettings(
  props: Pick<TopicProps, "replicationFactor" | "minInSyncReplicas">,
  brokerCount: number,
): { replication: number; minIsr: number } {
  const replication = props.replicationFactor ?? Math.min(3, brokerCount);
  if (!Number.isInteger(replication) || replication < 2 || replication > brokerCount) {
    throw new PropsError(
      `topics.replicationFactor must be a whole number from 2 to cluster.brokerCount (${brokerCount}), got ${replication}`,
    );
  }
  const minIsr = props.minInSyncReplicas ?? Math.max(1, replication - 1);
  if (!Number.isInteger(minIsr) || minIsr < 1 || minIsr > replication - 1) {
    throw new PropsError(
      `topics.minInSyncReplicas must be a whole number from 1 to topics.replicationFactor - 1 (${replication - 1}), ` +
        `got ${minIsr}: with ${minIsr} of ${replication} replicas required, acks=all writes fail while one broker is ` +
        "down (every broker patch)",
    );
  }
  return { replication, minIsr };
}

interface TopicsConstructProps extends TopicProps {
  readonly cluster: MskCluster;
  readonly names: ResolvedTopics;
  readonly vpc: ec2.IVpc;
  readonly subnets: ec2.SubnetSelection;
  readonly securityGroup: ec2.ISecurityGroup;
}

/**
 * The four topics: AWS::MSK::Topic on provisioned clusters; on MSK Serverless (where it does not apply) a custom
 * resource whose function reuses the project's Kafka connection module. Each gets its role's `max.message.bytes`
 * (sizeConfigs): the dead-letter and ESM-failure topics twice the source's, since a dead letter is a source record
 * plus headers (MSK Serverless allows up to 8 MiB).
 */
export class PipelineTopics extends Construct {
  readonly partitions: number;

  constructor(scope: Construct, id: string, props: TopicsConstructProps) {
    super(scope, id);
    this.partitions = checkInteger("topics.partitions", props.partitions ?? 3, 1, 1000);
    const retentionMs = String(
      checkInteger("topics.retentionHours", props.retentionHours ?? 168, 1, 87_600) * 3_600_000,
    );
    // Source, processed, DLQ, ESM failures: the order gives the provisioned topics their logical ids.
    const topics = (Object.keys(TOPIC_ROLES) as (keyof ResolvedTopics)[]).map((key) => ({
      name: props.names[key],
      configs: { "retention.ms": retentionMs, ...sizeConfigs(TOPIC_ROLES[key]) },
    }));
    const names = topics.map((topic) => topic.name);
    if (props.cluster.type === "provisioned") {
      const { replication, minIsr } = replicationSettings(props, props.cluster.brokerCount as number);
      topics.forEach((topic, i) => {
        new msk.CfnTopic(this, `Topic${i}`, {
          clusterArn: props.cluster.clusterArn,
          topicName: topic.name,
          partitionCount: this.partitions,
          replicationFactor: replication,
          configs: Fn.base64(topicConfigsJson({ ...topic.configs, "min.insync.replicas": String(minIsr) })),
        });
      });
      return;
    }
    if (props.minInSyncReplicas !== undefined) {
      throw new PropsError(
        "topics.minInSyncReplicas cannot be set on MSK Serverless (it is fixed at 2): remove it or use a provisioned cluster",
      );
    }
    if (props.replicationFactor !== undefined) {
      throw new PropsError(
        "topics.replicationFactor cannot be set on MSK Serverless (it is fixed at 3): remove it or use a provisioned cluster",
      );
    }
    const { fn, role } = pipelineFunction(this, "SetupFunction", {
      bundle: "topic-setup",
      description: "Creates the user-login pipeline's Kafka topics on MSK Serverless",
      vpc: props.vpc,
      subnets: props.subnets,
      securityGroup: props.securityGroup,
      timeout: Duration.minutes(2),
      memorySize: 256,
      environment: { MSK_CLUSTER_ARN: props.cluster.clusterArn, KAFKA_AUTH: "iam" },
    });
    props.cluster.grantConnect(role);
    iam.Grant.addToPrincipal({
      grantee: role,
      actions: ["kafka-cluster:CreateTopic", "kafka-cluster:DescribeTopic", "kafka-cluster:AlterTopic"],
      resourceArns: names.map((name) => props.cluster.resourceArn("topic", name)),
    });
    // The Provider framework's own function (outside the VPC: it only invokes the setup function) gets a role that
    // may write only to its log group; the framework adds lambda:InvokeFunction on the setup function to it.
    const providerLogs = new logs.LogGroup(this, "ProviderLogs", {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const providerRole = lambdaRole(this, "ProviderRole", { logGroups: [providerLogs] });
    const provider = new cr.Provider(this, "Provider", {
      onEventHandler: fn,
      logGroup: providerLogs,
      frameworkOnEventRole: providerRole,
    });
    const fnLogicalId = Stack.of(this).getLogicalId(fn.node.defaultChild as CfnElement);
    Validations.of(providerRole).acknowledge({
      id: `AwsSolutions-IAM5[Resource::<${fnLogicalId}.Arn>:*]`,
      reason:
        "The CDK Provider framework may invoke any version of its own onEvent function (<function arn>:*), nothing else.",
    });
    new CustomResource(this, "Topics", {
      serviceToken: provider.serviceToken,
      resourceType: "Custom::KafkaTopics",
      properties: {
        Topics: topics.map((topic) => ({
          Name: topic.name,
          Partitions: this.partitions,
          Configs: topic.configs,
        })),
      },
    });
  }
}
