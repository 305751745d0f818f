import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Duration } from "aws-cdk-lib";
import { Match } from "aws-cdk-lib/assertions";
import { PolicyStatement, Role, ServicePrincipal } from "aws-cdk-lib/aws-iam";
import { Queue } from "aws-cdk-lib/aws-sqs";
import { describe, expect, it, vi } from "vitest";
import { kafkaVersion, REPO_ROOT } from "../../functions/local/embedded-kafka.ts";
import { loadProcessorConfig } from "../../functions/shared/config.ts";
import { ESM_DEFAULTS } from "../../functions/shared/esm.ts";
import { producersAreIdempotent, topicConfigsJson } from "../../lib/msk.ts";
import { acknowledgementsOf } from "../../lib/nag.ts";
import { ESM_NETWORK_ACTIONS } from "../../lib/pipeline-stack.ts";
import { pipelineStack, pipelineTemplate } from "../support/cdk.ts";

type Statement = { Action: string | string[]; Resource: unknown; Effect: string };

function statements(template: ReturnType<typeof pipelineTemplate>, roleLogicalIdPrefix?: string): Statement[] {
  const policies = template.findResources("AWS::IAM::Policy");
  return Object.values(policies)
    .filter((policy) => {
      if (!roleLogicalIdPrefix) return true;
      const roles = (policy as { Properties: { Roles: { Ref: string }[] } }).Properties.Roles;
      return roles.some((role) => role.Ref.startsWith(roleLogicalIdPrefix));
    })
    .flatMap(
      (policy) =>
        (policy as { Properties: { PolicyDocument: { Statement: Statement[] } } }).Properties.PolicyDocument.Statement,
    );
}

/** The cluster's ARN (serverless or provisioned) as the template references it. */
function clusterArnOf(template: ReturnType<typeof pipelineTemplate>): unknown {
  const [id] = [
    ...Object.keys(template.findResources("AWS::MSK::ServerlessCluster")),
    ...Object.keys(template.findResources("AWS::MSK::Cluster")),
  ];
  return { "Fn::GetAtt": [id, "Arn"] };
}

const actionsOf = (statement: Statement) => (Array.isArray(statement.Action) ? statement.Action : [statement.Action]);
const resourcesOf = (statement: Statement) =>
  Array.isArray(statement.Resource) ? statement.Resource : [statement.Resource];

/** The topic or group names a kafka-cluster statement's resources end with. */
function resourceNames(statement: Statement, kind: "topic" | "group"): string[] {
  return resourcesOf(statement).map((resource) => {
    const text = JSON.stringify(resource);
    expect(text, "an exact topic/group ARN").toContain(`:${kind}/`);
    return /\/([^/"]+)"\]\]\}$/.exec(text)?.[1] ?? text;
  });
}

function grantsOf(template: ReturnType<typeof pipelineTemplate>, rolePrefix: string, action: string): string[] {
  return statements(template, rolePrefix)
    .filter((s) => actionsOf(s).includes(action))
    .flatMap((s) => resourceNames(s, action.endsWith("Group") ? "group" : "topic"));
}

/**
 * AWS::MSK::Topic's Configs as MSK reads it: base64 (here CloudFormation's Fn::Base64 of a literal, or a literal
 * base64 string) of a JSON object of strings (see topicConfigsJson in lib/msk.ts for the evidence).
 */
function decodeTopicConfigs(configs: unknown): Record<string, string> {
  const text =
    typeof configs === "string"
      ? Buffer.from(configs, "base64").toString("utf8")
      : (configs as { "Fn::Base64": unknown })["Fn::Base64"];
  expect(typeof text, `Configs must be base64 of a literal text, got ${JSON.stringify(configs)}`).toBe("string");
  const parsed = JSON.parse(text as string) as Record<string, unknown>;
  for (const [name, value] of Object.entries(parsed)) expect(typeof value, name).toBe("string");
  return parsed as Record<string, string>;
}

/** Each topic's configs as the template creates it: the custom resource's Configs, or AWS::MSK::Topic's. */
function topicConfigs(template: ReturnType<typeof pipelineTemplate>): Record<string, Record<string, string>> {
  const custom = Object.values(template.findResources("Custom::KafkaTopics")) as {
    Properties: { Topics: { Name: string; Configs: Record<string, string> }[] };
  }[];
  const topics = Object.values(template.findResources("AWS::MSK::Topic")) as {
    Properties: { TopicName: string; Configs: unknown };
  }[];
  const decode = (configs: unknown): Record<string, string> => decodeTopicConfigs(configs);
  return Object.fromEntries([
    ...custom.flatMap((resource) => resource.Properties.Topics.map((topic) => [topic.Name, topic.Configs])),
    ...topics.map((topic) => [topic.Properties.TopicName, decode(topic.Properties.Configs)]),
  ]);
}

/** The processor function's environment variables. */
function processorEnv(template: ReturnType<typeof pipelineTemplate>): Record<string, string> {
  const functions = Object.values(template.findResources("AWS::Lambda::Function")) as {
    Properties: { Environment?: { Variables?: Record<string, string> } };
  }[];
  const processors = functions.filter((fn) => fn.Properties.Environment?.Variables?.DLQ_TOPIC !== undefined);
  expect(processors).toHaveLength(1);
  return processors[0]?.Properties.Environment?.Variables as Record<string, string>;
}

const SIZE_LIMITS = {
  "user-login": "1048588",
  "processed-user-login": "1048588",
  "user-login-dlq": "2097152",
  "user-login-esm-failures": "2097152",
};

describe.each([
  ["serverless", {}],
  ["provisioned", { cluster: { type: "provisioned" as const, brokerCount: 2 } }],
])("max.message.bytes (%s)", (_name, props) => {
  const template = pipelineTemplate(props);
  const configs = topicConfigs(template);

  it("gives the source and processed topics 1048588 and the DLQ and ESM-failure topics 2097152", () => {
    expect(Object.keys(configs).sort()).toEqual(Object.keys(SIZE_LIMITS).sort());
    for (const [topic, bytes] of Object.entries(SIZE_LIMITS)) {
      expect(configs[topic]?.["max.message.bytes"], topic).toBe(bytes);
      expect(configs[topic]?.["retention.ms"], topic).toBe("604800000");
    }
  });

  it("configures the processor with the limits its destination topics are created with", () => {
    const env = processorEnv(template);
    expect(env.PROCESSED_MAX_MESSAGE_BYTES).toBe(configs["processed-user-login"]?.["max.message.bytes"]);
    expect(env.DLQ_MAX_MESSAGE_BYTES).toBe(configs["user-login-dlq"]?.["max.message.bytes"]);
    const { maxMessageBytes } = loadProcessorConfig({
      PROCESSED_MAX_MESSAGE_BYTES: env.PROCESSED_MAX_MESSAGE_BYTES,
      DLQ_MAX_MESSAGE_BYTES: env.DLQ_MAX_MESSAGE_BYTES,
    });
    expect(maxMessageBytes).toEqual({ processed: 1_048_588, deadLetter: 2_097_152 });
  });
});

describe("the pipeline stack (defaults)", () => {
  const template = pipelineTemplate();

  it("creates an MSK Serverless cluster with IAM client authentication in two private subnets", () => {
    template.hasResourceProperties("AWS::MSK::ServerlessCluster", {
      ClusterName: "user-login",
      ClientAuthentication: { Sasl: { Iam: { Enabled: true } } },
      VpcConfigs: [{ SubnetIds: Match.anyValue(), SecurityGroups: Match.anyValue() }],
    });
    const cluster = Object.values(template.findResources("AWS::MSK::ServerlessCluster"))[0] as {
      Properties: { VpcConfigs: { SubnetIds: unknown[] }[] };
    };
    expect(cluster.Properties.VpcConfigs[0]?.SubnetIds).toHaveLength(2);
    template.resourceCountIs("AWS::EC2::Subnet", 2);
    template.resourceCountIs("AWS::EC2::NatGateway", 0);
  });

  it("creates the four topics through the custom resource that reuses the Kafka connection module", () => {
    template.hasResourceProperties("Custom::KafkaTopics", {
      Topics: [
        { Name: "user-login", Partitions: 3, Configs: { "retention.ms": "604800000", "max.message.bytes": "1048588" } },
        {
          Name: "processed-user-login",
          Partitions: 3,
          Configs: { "retention.ms": "604800000", "max.message.bytes": "1048588" },
        },
        {
          Name: "user-login-dlq",
          Partitions: 3,
          Configs: { "retention.ms": "604800000", "max.message.bytes": "2097152" },
        },
        {
          Name: "user-login-esm-failures",
          Partitions: 3,
          Configs: { "retention.ms": "604800000", "max.message.bytes": "2097152" },
        },
      ],
    });
  });

  it("runs the processor on nodejs22.x arm64 in the VPC, with topics and PARTIAL_BATCH_RESPONSE as env", () => {
    template.hasResourceProperties("AWS::Lambda::Function", {
      Runtime: "nodejs22.x",
      Architectures: ["arm64"],
      Handler: "index.handler",
      Timeout: 120,
      VpcConfig: Match.objectLike({ SubnetIds: Match.anyValue() }),
      Environment: {
        Variables: Match.objectLike({
          KAFKA_AUTH: "iam",
          MSK_CLUSTER_ARN: clusterArnOf(template),
          SOURCE_TOPIC: "user-login",
          PROCESSED_TOPIC: "processed-user-login",
          DLQ_TOPIC: "user-login-dlq",
          PARTIAL_BATCH_RESPONSE: "true",
          OUTPUT_COMPRESSION: "none",
        }),
      },
    });
  });

  it("sets OUTPUT_COMPRESSION from processor.outputCompression", () => {
    const env = processorEnv(pipelineTemplate({ processor: { outputCompression: "zstd" } }));
    expect(env.OUTPUT_COMPRESSION).toBe("zstd");
  });

  it("gives the processor the cluster its event source mapping reads, so it never connects where an event says", () => {
    const [mapping] = Object.values(template.findResources("AWS::Lambda::EventSourceMapping")) as {
      Properties: { EventSourceArn: unknown };
    }[];
    expect(mapping?.Properties.EventSourceArn).toEqual(clusterArnOf(template));
    expect(processorEnv(template).MSK_CLUSTER_ARN).toEqual(mapping?.Properties.EventSourceArn);
    expect(processorEnv(template).KAFKA_BROKERS).toBeUndefined();
  });

  it("wires the MSK event source mapping with batching, pollers, retries, bisect, partial responses and a Kafka failure topic", () => {
    template.hasResourceProperties("AWS::Lambda::EventSourceMapping", {
      Topics: ["user-login"],
      StartingPosition: "TRIM_HORIZON",
      BatchSize: 100,
      MaximumBatchingWindowInSeconds: 1,
      AmazonManagedKafkaEventSourceConfig: { ConsumerGroupId: "user-login-processor" },
      ProvisionedPollerConfig: { MinimumPollers: 1, MaximumPollers: 3 },
      MaximumRetryAttempts: 10,
      MaximumRecordAgeInSeconds: 86400,
      BisectBatchOnFunctionError: true,
      FunctionResponseTypes: ["ReportBatchItemFailures"],
      DestinationConfig: { OnFailure: { Destination: "kafka://user-login-esm-failures" } },
      MetricsConfig: { Metrics: Match.arrayWith(["EventCount", "KafkaMetrics"]) },
    });
  });

  it("deploys the event source mapping with exactly the defaults of functions/shared/esm.ts (the harness's too)", () => {
    template.hasResourceProperties("AWS::Lambda::EventSourceMapping", {
      BatchSize: ESM_DEFAULTS.batchSize,
      MaximumBatchingWindowInSeconds: ESM_DEFAULTS.batchingWindowMs / 1000,
      MaximumRetryAttempts: ESM_DEFAULTS.retryAttempts,
      MaximumRecordAgeInSeconds: ESM_DEFAULTS.maxRecordAgeSeconds,
      BisectBatchOnFunctionError: ESM_DEFAULTS.bisectBatchOnError,
      FunctionResponseTypes: ESM_DEFAULTS.reportBatchItemFailures ? ["ReportBatchItemFailures"] : Match.absent(),
      DestinationConfig: { OnFailure: { Destination: `kafka://${ESM_DEFAULTS.onFailureTopic}` } },
    });
  });

  it("keeps infrastructure free of local tools: no file under lib/ imports from functions/local", () => {
    const lib = join(REPO_ROOT, "lib");
    const offenders = readdirSync(lib, { recursive: true, encoding: "utf8" })
      .filter((file) => file.endsWith(".ts"))
      .filter((file) => /from\s+["'][^"']*functions\/local\//.test(readFileSync(join(lib, file), "utf8")));
    expect(offenders).toEqual([]);
  });

  it("runs the generator as a Fargate service in private subnets, with rate, invalid ratio and logs", () => {
    template.hasResourceProperties("AWS::ECS::Service", {
      DesiredCount: 1,
      LaunchType: "FARGATE",
      NetworkConfiguration: { AwsvpcConfiguration: Match.objectLike({ AssignPublicIp: "DISABLED" }) },
    });
    const [task] = Object.values(template.findResources("AWS::ECS::TaskDefinition")) as {
      Properties: {
        ContainerDefinitions: {
          Environment: { Name: string; Value: unknown }[];
          LogConfiguration: { LogDriver: string };
        }[];
      };
    }[];
    const container = task?.Properties.ContainerDefinitions[0];
    const env = Object.fromEntries((container?.Environment ?? []).map((e) => [e.Name, e.Value]));
    expect(env).toMatchObject({
      GENERATOR_RATE: "2",
      GENERATOR_INVALID_RATIO: "0",
      SOURCE_TOPIC: "user-login",
      KAFKA_AUTH: "iam",
    });
    expect(env.MSK_CLUSTER_ARN).toBeDefined();
    expect(container?.LogConfiguration.LogDriver).toBe("awslogs");
    const retentions = Object.values(template.findResources("AWS::Logs::LogGroup")).map(
      (group) => (group as { Properties: { RetentionInDays?: number } }).Properties.RetentionInDays,
    );
    expect(retentions.every((days) => days === 30)).toBe(true);
  });

  it("has the eight alarms on an encrypted SNS topic, and a dashboard", () => {
    const alarms = Object.values(template.findResources("AWS::CloudWatch::Alarm")).map(
      (alarm) => (alarm as { Properties: { AlarmDescription: string } }).Properties.AlarmDescription,
    );
    expect(alarms).toHaveLength(8);
    for (const what of [
      /larger than its destination topic's max.message.bytes/,
      /failed invocations/,
      /throttled/,
      /p99 duration above 80%/,
      /Consumer lag/,
      /records went to user-login-dlq/,
      /parked/,
      /generator tasks/,
    ]) {
      expect(
        alarms.some((description) => what.test(description)),
        String(what),
      ).toBe(true);
    }
    template.hasResourceProperties("AWS::SNS::Topic", { KmsMasterKeyId: Match.anyValue() });
    template.resourceCountIs("AWS::CloudWatch::Dashboard", 1);
    template.hasResourceProperties("AWS::CloudWatch::Alarm", {
      Namespace: "UserLoginPipeline",
      MetricName: "UnwritableRecords",
      Threshold: 1,
      ComparisonOperator: "GreaterThanOrEqualToThreshold",
    });
    template.hasResourceProperties("AWS::CloudWatch::Alarm", {
      MetricName: "OffsetLag",
      Threshold: 10000,
      EvaluationPeriods: 5,
    });
  });

  it("outputs the cluster ARN, the bootstrap-broker command, the topic names and the dashboard URL", () => {
    for (const output of ["ClusterArn", "BootstrapBrokersCommand", "TopicNames", "DashboardUrl"])
      template.hasOutput(output, {});
  });
});

type Rule = { IpProtocol: string; FromPort?: number; ToPort?: number } & Record<string, unknown>;

/** Every egress rule of a security group (inline and AWS::EC2::SecurityGroupEgress), by its logical id prefix. */
function egressOf(template: ReturnType<typeof pipelineTemplate>, sgPrefix: string): Rule[] {
  const groups = template.findResources("AWS::EC2::SecurityGroup");
  const [id] = Object.keys(groups).filter((key) => key.startsWith(sgPrefix));
  const inline = ((groups[id as string] as { Properties: { SecurityGroupEgress?: Rule[] } }).Properties
    .SecurityGroupEgress ?? []) as Rule[];
  const separate = Object.values(template.findResources("AWS::EC2::SecurityGroupEgress"))
    .map((r) => (r as { Properties: Rule }).Properties)
    .filter((rule) => JSON.stringify(rule.GroupId) === JSON.stringify({ "Fn::GetAtt": [id, "GroupId"] }));
  return [...inline, ...separate].map(({ GroupId: _g, Description: _d, ...rule }) => rule as Rule);
}

const sgRef = (template: ReturnType<typeof pipelineTemplate>, prefix: string) => {
  const [id] = Object.keys(template.findResources("AWS::EC2::SecurityGroup")).filter((key) => key.startsWith(prefix));
  return { "Fn::GetAtt": [id, "GroupId"] };
};

type EndpointStatement = {
  Action: string | string[];
  Resource: unknown;
  Principal: unknown;
  Condition?: Record<string, Record<string, unknown>>;
};

/** "com.amazonaws.REGION.ecr.api" (or its Fn::Join with the region) -> "ecr.api". */
function serviceSuffix(serviceName: unknown): string {
  if (typeof serviceName === "string") return serviceName.split(".").slice(3).join(".");
  const parts = (serviceName as { "Fn::Join": [string, unknown[]] })["Fn::Join"][1];
  return String(parts[parts.length - 1]).replace(/^\./, "");
}

/** The stack's VPC endpoints by service suffix (kafka, ecr.api, ...), with their policies' statements. */
function endpointsOf(template: ReturnType<typeof pipelineTemplate>): Record<string, EndpointStatement[]> {
  return Object.fromEntries(
    Object.values(template.findResources("AWS::EC2::VPCEndpoint")).map((resource) => {
      const props = (
        resource as {
          Properties: { ServiceName: unknown; PolicyDocument?: { Statement: EndpointStatement[] } };
        }
      ).Properties;
      const name = serviceSuffix(props.ServiceName);
      return [name, props.PolicyDocument?.Statement ?? []];
    }),
  );
}

describe("network: least-privilege egress and endpoints", () => {
  const template = pipelineTemplate();

  it("has interface endpoints for Kafka, ECR and Logs and an S3 gateway, and no STS or Lambda endpoint (provisioned-mode ESM)", () => {
    expect(Object.keys(endpointsOf(template)).sort()).toEqual(["ecr.api", "ecr.dkr", "kafka", "logs", "s3"]);
    // The ESM is in provisioned mode (minimumPollers >= 1), for which AWS documents no STS or Lambda endpoint.
    template.hasResourceProperties("AWS::Lambda::EventSourceMapping", {
      ProvisionedPollerConfig: { MinimumPollers: Match.anyValue() },
    });
  });

  it("lets the Kafka clients out only to the brokers' IAM port, the endpoints' 443 and S3's prefix list on 443", () => {
    const [lookup] = Object.keys(template.findResources("Custom::AWS"));
    expect(egressOf(template, "ClientSecurityGroup")).toEqual(
      expect.arrayContaining([
        {
          IpProtocol: "tcp",
          FromPort: 9098,
          ToPort: 9098,
          DestinationSecurityGroupId: sgRef(template, "ClusterSecurityGroup"),
        },
        {
          IpProtocol: "tcp",
          FromPort: 443,
          ToPort: 443,
          DestinationSecurityGroupId: sgRef(template, "EndpointSecurityGroup"),
        },
        {
          IpProtocol: "tcp",
          FromPort: 443,
          ToPort: 443,
          DestinationPrefixListId: { "Fn::GetAtt": [lookup, "PrefixLists.0.PrefixListId"] },
        },
      ]),
    );
    expect(egressOf(template, "ClientSecurityGroup")).toHaveLength(3);
    // That prefix list is the region's S3 one, looked up at deploy time.
    const [custom] = Object.values(template.findResources("Custom::AWS")) as { Properties: { Create: string } }[];
    expect(JSON.parse(custom?.Properties.Create as string)).toMatchObject({
      service: "EC2",
      action: "describePrefixLists",
      parameters: { Filters: [{ Name: "prefix-list-name", Values: ["com.amazonaws.eu-west-1.s3"] }] },
    });
  });

  it("lets the ESM pollers (cluster security group) reach only the brokers, and nothing anywhere reach 0.0.0.0/0", () => {
    expect(egressOf(template, "ClusterSecurityGroup")).toEqual([
      {
        IpProtocol: "tcp",
        FromPort: 9098,
        ToPort: 9098,
        DestinationSecurityGroupId: sgRef(template, "ClusterSecurityGroup"),
      },
    ]);
    for (const group of Object.keys(template.findResources("AWS::EC2::SecurityGroup"))) {
      for (const rule of egressOf(template, group)) {
        expect(rule.IpProtocol, group).not.toBe("-1");
        expect(rule.CidrIp, group).not.toBe("0.0.0.0/0");
      }
    }
  });

  it("with an existing VPC (vpcId) allows the brokers' port and 443 only", () => {
    const t = pipelineTemplate({ vpcId: "vpc-0123456789abcdef0" });
    const rules = egressOf(t, "ClientSecurityGroup");
    expect(rules).toHaveLength(2);
    expect(rules).toEqual(
      expect.arrayContaining([
        {
          IpProtocol: "tcp",
          FromPort: 9098,
          ToPort: 9098,
          DestinationSecurityGroupId: sgRef(t, "ClusterSecurityGroup"),
        },
        { IpProtocol: "tcp", FromPort: 443, ToPort: 443, CidrIp: "0.0.0.0/0" },
      ]),
    );
    t.resourceCountIs("AWS::EC2::VPCEndpoint", 0);
  });

  it("scopes every endpoint policy to what the stack uses through it, and interface endpoints to this account", () => {
    const endpoints = endpointsOf(template);
    const account = { StringEquals: { "aws:PrincipalAccount": { Ref: "AWS::AccountId" } } };
    for (const [name, statements] of Object.entries(endpoints)) {
      expect(statements.length, `${name} has a policy (not the full-access default)`).toBeGreaterThan(0);
      for (const statement of statements) {
        const actions = Array.isArray(statement.Action) ? statement.Action : [statement.Action];
        for (const action of actions) expect(action, name).not.toMatch(/\*/);
        if (name !== "s3") expect(statement.Condition, name).toEqual(account);
      }
    }
    const only = (name: string) => (endpoints[name] ?? []).map((s) => [s.Action, s.Resource]);
    expect(only("kafka")).toEqual([["kafka:GetBootstrapBrokers", clusterArnOf(template)]]);
    const repository = expect.objectContaining({
      "Fn::Join": ["", expect.arrayContaining([expect.stringMatching(/:repository\/cdk-[a-z0-9]+-container-assets-/)])],
    });
    for (const ecr of ["ecr.api", "ecr.dkr"]) {
      expect(only(ecr)).toEqual([
        ["ecr:GetAuthorizationToken", "*"],
        [["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], repository],
      ]);
    }
    const [generatorLogs] = Object.keys(template.findResources("AWS::Logs::LogGroup")).filter((id) =>
      id.startsWith("GeneratorLogs"),
    );
    expect(only("logs")).toEqual([
      [["logs:CreateLogStream", "logs:PutLogEvents"], { "Fn::GetAtt": [generatorLogs, "Arn"] }],
    ]);
    // ECR's layers: presigned by ECR, so no account condition; ECR's layer bucket is the only resource.
    expect(only("s3")).toEqual([
      [
        "s3:GetObject",
        {
          "Fn::Join": [
            "",
            ["arn:", { Ref: "AWS::Partition" }, ":s3:::prod-", { Ref: "AWS::Region" }, "-starport-layer-bucket/*"],
          ],
        },
      ],
    ]);
  });
});

describe("least-privilege IAM", () => {
  const template = pipelineTemplate();

  it("never uses a wildcard action or resource on kafka-cluster actions", () => {
    const kafkaStatements = statements(template).filter((s) =>
      actionsOf(s).some((a) => a.startsWith("kafka-cluster:")),
    );
    expect(kafkaStatements.length).toBeGreaterThan(0);
    for (const statement of kafkaStatements) {
      for (const action of actionsOf(statement)) expect(action).not.toContain("*");
      for (const resource of resourcesOf(statement)) {
        expect(resource).not.toBe("*");
        expect(JSON.stringify(resource)).not.toMatch(/\/\*"|:\*"/);
      }
    }
  });

  it("lets the processor read only the source topic and its group, and write only the processed, DLQ and failure topics", () => {
    expect(grantsOf(template, "ProcessorRole", "kafka-cluster:ReadData")).toEqual(["user-login"]);
    expect(grantsOf(template, "ProcessorRole", "kafka-cluster:AlterGroup")).toEqual(["user-login-processor"]);
    expect(grantsOf(template, "ProcessorRole", "kafka-cluster:WriteData").sort()).toEqual(
      ["processed-user-login", "user-login-dlq", "user-login-esm-failures"].sort(),
    );
    const processorActions = statements(template, "ProcessorRole").flatMap(actionsOf);
    expect(processorActions).toEqual(expect.arrayContaining(["kafka-cluster:Connect", "kafka:DescribeClusterV2"]));
    expect(processorActions).not.toContain("kafka-cluster:CreateTopic");
  });

  /** The roles (logical id, hash stripped) with kafka-cluster:WriteDataIdempotently, and its resources. */
  const idempotentWriters = (t: ReturnType<typeof pipelineTemplate>) =>
    Object.values(t.findResources("AWS::IAM::Policy")).flatMap((policy) => {
      const { Roles, PolicyDocument } = (
        policy as { Properties: { Roles: { Ref: string }[]; PolicyDocument: { Statement: Statement[] } } }
      ).Properties;
      const granted = PolicyDocument.Statement.filter((st) =>
        actionsOf(st).includes("kafka-cluster:WriteDataIdempotently"),
      );
      return granted.length === 0
        ? []
        : Roles.map((role) => [role.Ref.replace(/[0-9A-F]{8}$/, ""), granted.flatMap(resourcesOf)] as const);
    });

  it("grants kafka-cluster:WriteDataIdempotently to no role: the project's producers are not idempotent", () => {
    expect(producersAreIdempotent()).toBe(false);
    expect(idempotentWriters(template)).toEqual([]);
  });

  it.each([
    ["serverless", {}],
    ["provisioned", { cluster: { type: "provisioned" as const, brokerCount: 2 } }],
  ])(
    "grants it on the cluster ARN to every producing role once createProducer is idempotent (%s)",
    async (_n, props) => {
      // The same stack code, with createProducer building an idempotent producer.
      vi.resetModules();
      vi.doMock("../../functions/shared/kafka.ts", async (original) => ({
        ...(await original<typeof import("../../functions/shared/kafka.ts")>()),
        createProducer: () => ({ isIdempotent: () => true }),
      }));
      try {
        const cdk = await import("../support/cdk.ts");
        const t = cdk.pipelineTemplate(props);
        // The processor's and the generator's producers; the topic setup only creates topics.
        expect(idempotentWriters(t).sort()).toEqual([
          ["GeneratorTaskTaskRole", [clusterArnOf(t)]],
          ["ProcessorRole", [clusterArnOf(t)]],
        ]);
      } finally {
        vi.doUnmock("../../functions/shared/kafka.ts");
        vi.resetModules();
      }
    },
  );

  it("lets the generator write only the source topic", () => {
    expect(grantsOf(template, "GeneratorTaskTaskRole", "kafka-cluster:WriteData")).toEqual(["user-login"]);
    expect(statements(template, "GeneratorTaskTaskRole").flatMap(actionsOf)).not.toContain("kafka-cluster:ReadData");
  });

  it("lets each Lambda function write logs only to its own log group (no AWSLambdaBasicExecutionRole)", () => {
    expect(JSON.stringify(template.toJSON())).not.toContain("AWSLambdaBasicExecutionRole");
    const functions = Object.values(template.findResources("AWS::Lambda::Function")) as {
      Properties: { Role: { "Fn::GetAtt": [string, string] }; LoggingConfig?: { LogGroup: { Ref: string } } };
    }[];
    expect(functions.length).toBeGreaterThanOrEqual(4); // processor, topic setup, Provider framework, prefix-list lookup
    for (const fn of functions) {
      const role = fn.Properties.Role["Fn::GetAtt"][0];
      const group = fn.Properties.LoggingConfig?.LogGroup.Ref;
      expect(group, `${role}'s function has its own log group`).toBeDefined();
      const logs = statements(template, role).filter((st) => actionsOf(st).some((a) => a.startsWith("logs:")));
      expect(
        logs.map((st) => [actionsOf(st), resourcesOf(st)]),
        role,
      ).toEqual([[["logs:CreateLogStream", "logs:PutLogEvents"], [{ "Fn::GetAtt": [group, "Arn"] }]]]);
    }
    // And nothing anywhere writes logs to "*".
    for (const st of statements(template).filter((x) => actionsOf(x).some((a) => a.startsWith("logs:")))) {
      expect(resourcesOf(st)).not.toContain("*");
    }
  });

  it("grants only the kafka: and ec2: actions a code path uses: the ESM's documented set on the processor, GetBootstrapBrokers elsewhere", () => {
    const control = (role: string) =>
      statements(template, role)
        .flatMap(actionsOf)
        .filter((a) => a.startsWith("kafka:") || a.startsWith("ec2:"))
        .sort();
    expect(control("ProcessorRole")).toEqual(
      ["kafka:DescribeClusterV2", "kafka:GetBootstrapBrokers", ...ESM_NETWORK_ACTIONS].sort(),
    );
    expect(control("GeneratorTaskTaskRole")).toEqual(["kafka:GetBootstrapBrokers"]);
    expect(control("TopicsSetupFunctionRole")).toEqual(["kafka:GetBootstrapBrokers"]);
    // kafka:DescribeCluster (v1) and kafka-cluster:DescribeCluster: no code path needs them.
    const all = statements(template).flatMap(actionsOf);
    expect(all).not.toContain("kafka:DescribeCluster");
    expect(all).not.toContain("kafka-cluster:DescribeCluster");
    // Every kafka: action names the cluster.
    for (const st of statements(template).filter((x) => actionsOf(x).some((a) => a.startsWith("kafka:")))) {
      expect(resourcesOf(st)).toEqual([clusterArnOf(template)]);
    }
  });

  it("attaches no AWS managed MSK policy with describes on every cluster", () => {
    expect(JSON.stringify(template.toJSON())).not.toContain("AWSLambdaMSKExecutionRole");
  });
});

describe("a provisioned cluster", () => {
  const template = pipelineTemplate({ cluster: { type: "provisioned", brokerCount: 2 } });

  it("uses the embedded broker's Kafka major, TLS in transit, enhanced monitoring and broker logs", () => {
    template.hasResourceProperties("AWS::MSK::Cluster", {
      KafkaVersion: Match.stringLikeRegexp(`^${kafkaVersion().split(".")[0]}\\.`),
      NumberOfBrokerNodes: 2,
      ClientAuthentication: { Sasl: { Iam: { Enabled: true } }, Unauthenticated: { Enabled: false } },
      EncryptionInfo: { EncryptionInTransit: { ClientBroker: "TLS", InCluster: true } },
      EnhancedMonitoring: "PER_TOPIC_PER_BROKER",
      BrokerNodeGroupInfo: Match.objectLike({ InstanceType: "kafka.m7g.large" }),
    });
  });

  it("creates topics with AWS::MSK::Topic, with retention, max.message.bytes and min.insync.replicas", () => {
    template.resourceCountIs("AWS::MSK::Topic", 4);
    template.resourceCountIs("Custom::KafkaTopics", 0);
    template.hasResourceProperties("AWS::MSK::Topic", {
      TopicName: "user-login",
      PartitionCount: 3,
      ReplicationFactor: 2,
    });
    expect(topicConfigs(template)["user-login-dlq"]).toEqual({
      "retention.ms": "604800000",
      "max.message.bytes": "2097152",
      "min.insync.replicas": "1",
    });
  });

  it("encodes AWS::MSK::Topic Configs as base64 of a JSON object of strings, as MSK's CreateTopic API takes them", () => {
    const [topic] = Object.values(template.findResources("AWS::MSK::Topic")) as {
      Properties: { Configs: { "Fn::Base64": string } };
    }[];
    const text = topic?.Properties.Configs["Fn::Base64"] as string;
    expect(text).toBe('{"retention.ms":"604800000","max.message.bytes":"1048588","min.insync.replicas":"1"}');
    const wire = Buffer.from(text, "utf8").toString("base64");
    expect(decodeTopicConfigs(wire)).toEqual({
      "retention.ms": "604800000",
      "max.message.bytes": "1048588",
      "min.insync.replicas": "1",
    });
    expect(topicConfigsJson({ "cleanup.policy": "delete" })).toBe('{"cleanup.policy":"delete"}');
    expect(() => topicConfigsJson({ "a=b": "1" })).toThrow(/is not a Kafka config name/);
  });

  it.each([
    [2, {}, 2, "1"],
    [4, {}, 3, "2"],
    [6, {}, 3, "2"],
    [4, { replicationFactor: 4 }, 4, "3"],
    [4, { replicationFactor: 2 }, 2, "1"],
    [6, { minInSyncReplicas: 1 }, 3, "1"],
  ])(
    "with %i brokers and %j: replication factor %i, min.insync.replicas %s (at most RF - 1)",
    (brokerCount, topics, rf, minIsr) => {
      const t = pipelineTemplate({ cluster: { type: "provisioned", brokerCount }, topics });
      const resources = Object.values(t.findResources("AWS::MSK::Topic")) as {
        Properties: { TopicName: string; ReplicationFactor: number };
      }[];
      expect(resources).toHaveLength(4);
      const configs = topicConfigs(t);
      for (const topic of resources) {
        expect(topic.Properties.ReplicationFactor, topic.Properties.TopicName).toBe(rf);
        const isr = Number(configs[topic.Properties.TopicName]?.["min.insync.replicas"]);
        expect(isr, topic.Properties.TopicName).toBe(Number(minIsr));
        // acks=all survives one broker down: at least one replica more than the writes need.
        expect(isr).toBeLessThanOrEqual(rf - 1);
      }
    },
  );
});

describe("invalid props fail in the constructor with a clear message", () => {
  it.each([
    [{ processor: { batchSize: 0 } }, /processor.batchSize must be a whole number from 1 to 10000, got 0/],
    [{ processor: { batchSize: 20_000 } }, /processor.batchSize must be a whole number from 1 to 10000, got 20000/],
    [
      { processor: { batchingWindow: Duration.minutes(6) } },
      /processor.batchingWindow \(seconds\) must be .* 0 to 300/,
    ],
    [
      { processor: { minPollers: 4, maxPollers: 2 } },
      /processor.maxPollers \(2\) must be at least processor.minPollers \(4\)/,
    ],
    [
      { processor: { maxRecordAge: Duration.seconds(10) } },
      /processor.maxRecordAge \(seconds\) must be a whole number from 60 to 604800/,
    ],
    [{ cluster: { type: "provisioned" } }, /cluster.brokerCount is required for a provisioned cluster/],
    [{ cluster: { type: "provisioned", brokerCount: 3 } }, /cluster.brokerCount must be a multiple of the 2 subnets/],
    [
      { cluster: { type: "provisioned", brokerCount: 2, kafkaVersion: "3.9.x" } },
      /cluster.kafkaVersion must be a Kafka 4.x version/,
    ],
    [{ cluster: { brokerType: "kafka.m7g.large" } }, /cluster.brokerType applies to provisioned clusters only/],
    [{ topics: { minInSyncReplicas: 2 } }, /topics.minInSyncReplicas cannot be set on MSK Serverless/],
    [{ topics: { replicationFactor: 3 } }, /topics.replicationFactor cannot be set on MSK Serverless/],
    [
      { cluster: { type: "provisioned", brokerCount: 2 }, topics: { minInSyncReplicas: 2 } },
      /topics.minInSyncReplicas must be a whole number from 1 to topics.replicationFactor - 1 \(1\), got 2: with 2 of 2 replicas required, acks=all writes fail while one broker is down/,
    ],
    [
      { cluster: { type: "provisioned", brokerCount: 4 }, topics: { minInSyncReplicas: 3 } },
      /topics.minInSyncReplicas must be a whole number from 1 to topics.replicationFactor - 1 \(2\), got 3/,
    ],
    [
      { cluster: { type: "provisioned", brokerCount: 4 }, topics: { minInSyncReplicas: 0 } },
      /topics.minInSyncReplicas must be a whole number from 1 to/,
    ],
    [
      { cluster: { type: "provisioned", brokerCount: 2 }, topics: { replicationFactor: 3 } },
      /topics.replicationFactor must be a whole number from 2 to cluster.brokerCount \(2\), got 3/,
    ],
    [
      { cluster: { type: "provisioned", brokerCount: 2 }, topics: { replicationFactor: 1 } },
      /topics.replicationFactor must be a whole number from 2 to cluster.brokerCount \(2\), got 1/,
    ],
    [
      { cluster: { type: "provisioned", brokerCount: 4 }, topics: { replicationFactor: 2.5 } },
      /topics.replicationFactor must be a whole number/,
    ],
    [{ topics: { source: "bad topic" } }, /topics.source "bad topic" is not a valid Kafka topic name/],
    [{ generator: { desiredCount: -1 } }, /generator.desiredCount must be a whole number from 0 to 10/],
    [{ generator: { invalidRatio: 2 } }, /generator.invalidRatio must be from 0 to 1, got 2/],
    [{ alarms: { dlqShareThreshold: 0 } }, /alarms.dlqShareThreshold must be in \(0, 1\]/],
    [
      { processor: { timeout: Duration.seconds(30) } },
      /processor.timeout \(seconds\) must be a whole number from 60 to 900, got 30/,
    ],
    [
      { processor: { outputCompression: "brotli" } },
      /processor.outputCompression must be one of none, gzip, snappy, lz4, zstd, got "brotli"/,
    ],
  ] as const)("%j", (props, message) => {
    expect(() => pipelineTemplate(props as never)).toThrow(message);
  });

  it("accepts a generator with desiredCount 0 (and then needs no running-task alarm)", () => {
    const template = pipelineTemplate({ generator: { desiredCount: 0 } });
    template.hasResourceProperties("AWS::ECS::Service", { DesiredCount: 0 });
    template.resourceCountIs("AWS::CloudWatch::Alarm", 7);
  });
});

/** What the cdk-nag policy-validation plugin reported in the cloud assembly. */
function nagReport(outdir: string): { conclusions: string[]; violations: { ruleName: string }[] } {
  const report = JSON.parse(readFileSync(join(outdir, "validation-report.json"), "utf8")) as {
    pluginReports: { conclusion: string; violations: { ruleName: string }[] }[];
  };
  return {
    conclusions: report.pluginReports.map((r) => r.conclusion),
    violations: report.pluginReports.flatMap((r) => r.violations),
  };
}

describe("cdk-nag (AwsSolutions)", () => {
  it.each([
    ["serverless", {}],
    ["provisioned", { cluster: { type: "provisioned" as const, brokerCount: 2 } }],
  ])("reports no violations on the %s stack, and every acknowledgement gives a specific reason", (_name, props) => {
    const { app, stack, outdir } = pipelineStack(props, { nag: true });
    expect(() => app.synth()).not.toThrow();
    const report = nagReport(outdir);
    expect(report.violations).toEqual([]);
    expect(report.conclusions).not.toContain("failure");
    const acks = acknowledgementsOf(stack);
    expect(acks.length).toBeGreaterThan(0);
    for (const ack of acks) {
      expect(ack.reason.length, ack.id).toBeGreaterThan(40);
      // On one resource, never the stack; a finding (Rule[Finding]) where the rule reports several.
      expect(ack.path.startsWith(`${stack.node.path}/`), ack.path).toBe(true);
      if (/IAM[45]/.test(ack.id)) expect(ack.id, ack.path).toMatch(/\[.+\]$/);
    }
  });

  it("acknowledges findings on the resources they concern, not stack-wide", () => {
    const { stack } = pipelineStack({}, { nag: true });
    const where = (id: string) =>
      acknowledgementsOf(stack)
        .filter((ack) => ack.id === id)
        .map((ack) => ack.path.replace(`${stack.node.path}/`, ""))
        .sort();
    expect(where("AwsSolutions-IAM5[Resource::*]")).toEqual(
      ["Generator/Task/ExecutionRole", "ProcessorRole", "S3PrefixListLookup"].sort(),
    );
    expect(where("AwsSolutions-L1")).toEqual(["Processor", "Topics/SetupFunction"]);
    expect(where("AwsSolutions-ECS2")).toEqual(["Generator/Task"]);
    expect(
      where(
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]",
      ),
    ).toEqual(["ProcessorRole", "Topics/SetupFunctionRole"]);
  });

  it("still fails synthesis on an acknowledged finding anywhere else (a wildcard resource on another role)", () => {
    const { app, stack, outdir } = pipelineStack({}, { nag: true });
    const role = new Role(stack, "SomeOtherRole", { assumedBy: new ServicePrincipal("lambda.amazonaws.com") });
    role.addToPolicy(new PolicyStatement({ actions: ["ec2:DescribeVpcs"], resources: ["*"] }));
    expect(() => app.synth()).toThrow(/AwsSolutions-IAM5/);
    expect(nagReport(outdir).violations.map((v) => v.ruleName)).toEqual(["AwsSolutions-IAM5[Resource::*]"]);
  });

  it("fails synthesis when a resource breaks a rule (the check can fail)", () => {
    const { app, stack, outdir } = pipelineStack({}, { nag: true });
    new Queue(stack, "QueueWithoutDlqOrTls");
    expect(() => app.synth()).toThrow(/AwsSolutions-SQS3/);
    expect(nagReport(outdir).violations.map((v) => v.ruleName)).toEqual(
      expect.arrayContaining(["AwsSolutions-SQS3", "AwsSolutions-SQS4"]),
    );
  });
});

describe("cfn-lint", () => {
  it.each([
    ["serverless", {}],
    ["provisioned", { cluster: { type: "provisioned" as const, brokerCount: 2 } }],
  ])("finds no errors in the synthesized %s template", (_name, props) => {
    const version = spawnSync("cfn-lint", ["--version"], { encoding: "utf8" });
    expect(version.error, "cfn-lint is not installed: pip install cfn-lint (.ci/run does)").toBeUndefined();
    const { outdir, template } = pipelineStack(props);
    const file = join(outdir, "template.json");
    writeFileSync(file, JSON.stringify(template().toJSON()));
    const result = spawnSync("cfn-lint", ["--format", "parseable", "--non-zero-exit-code", "error", "--", file], {
      encoding: "utf8",
    });
    const errors = result.stdout.split("\n").filter((line) => /:E\d{4}:/.test(line));
    expect(errors).toEqual([]);
    expect(result.status, result.stdout + result.stderr).toBe(0);
  });
});
