/**
 * The IAM-to-ACL mapping (functions/local/iam-acl.ts): against the MSK Developer Guide's action table and ARN
 * semantics, and against the stack's real synthesized template.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { App } from "aws-cdk-lib";
import { Template } from "aws-cdk-lib/assertions";
import { describe, expect, it } from "vitest";
import {
  aclLabel,
  type CfnTemplate,
  clusterArn,
  expandAction,
  grantLabel,
  IamAclError,
  LOCAL_CLUSTER_UUID,
  type LocalCluster,
  MSK_ACTIONS,
  operatorPolicy,
  parseMskArn,
  policyGrants,
  principalGrants,
  stackComponents,
  statementGrants,
  templateCluster,
  templateRoleGrants,
} from "../../functions/local/iam-acl.ts";
import { UserLoginPipelineStack } from "../../lib/pipeline-stack.ts";
import { ENV, pipelineTemplate } from "../support/cdk.ts";

/**
 * The guide's table (docs.aws.amazon.com/msk/latest/developerguide/kafka-actions.html), row by row: action,
 * "equivalent to Apache Kafka's <OPERATION> <RESOURCE> ACL", the ARN type it takes. Connect has no ACL equivalent.
 */
const GUIDE: readonly [action: string, operation: string, resourceType: string, arn: string][] = [
  ["Connect", "-", "-", "cluster"],
  ["DescribeCluster", "DESCRIBE", "CLUSTER", "cluster"],
  ["AlterCluster", "ALTER", "CLUSTER", "cluster"],
  ["DescribeClusterDynamicConfiguration", "DESCRIBE_CONFIGS", "CLUSTER", "cluster"],
  ["AlterClusterDynamicConfiguration", "ALTER_CONFIGS", "CLUSTER", "cluster"],
  ["WriteDataIdempotently", "IDEMPOTENT_WRITE", "CLUSTER", "cluster"],
  ["CreateTopic", "CREATE", "TOPIC", "topic"],
  ["DescribeTopic", "DESCRIBE", "TOPIC", "topic"],
  ["AlterTopic", "ALTER", "TOPIC", "topic"],
  ["DeleteTopic", "DELETE", "TOPIC", "topic"],
  ["DescribeTopicDynamicConfiguration", "DESCRIBE_CONFIGS", "TOPIC", "topic"],
  ["AlterTopicDynamicConfiguration", "ALTER_CONFIGS", "TOPIC", "topic"],
  ["ReadData", "READ", "TOPIC", "topic"],
  ["WriteData", "WRITE", "TOPIC", "topic"],
  ["DescribeGroup", "DESCRIBE", "GROUP", "group"],
  ["AlterGroup", "READ", "GROUP", "group"],
  ["DeleteGroup", "DELETE", "GROUP", "group"],
  ["DescribeTransactionalId", "DESCRIBE", "TRANSACTIONAL_ID", "transactional-id"],
  ["AlterTransactionalId", "WRITE", "TRANSACTIONAL_ID", "transactional-id"],
];

const LOCAL: LocalCluster = {
  partition: "aws",
  region: "eu-west-1",
  account: "123456789012",
  name: "user-login",
  uuid: "abcd1234-0123-abcd-5678-1234abcd-1",
};
const PREFIX = "arn:aws:kafka:eu-west-1:123456789012";

describe("the action table", () => {
  it("has exactly the guide's actions, each mapped to the ACL the guide says it is equivalent to", () => {
    expect(Object.keys(MSK_ACTIONS).sort()).toEqual(GUIDE.map(([a]) => `kafka-cluster:${a}`).sort());
    for (const [action, operation, resourceType, arn] of GUIDE) {
      const mapping = MSK_ACTIONS[`kafka-cluster:${action}`];
      expect(mapping?.resource, action).toBe(arn);
      if (operation === "-") expect(mapping?.acl, action).toBe("authenticate");
      else expect(mapping?.acl, action).toEqual({ operation, resourceType });
    }
  });

  it("expands wildcards as the guide's examples do, ignores other services, refuses unknown actions", () => {
    // "kafka-cluster:*Topic stands for CreateTopic, DescribeTopic, AlterTopic and DeleteTopic", not the dynamic ones.
    expect(expandAction("kafka-cluster:*Topic").sort()).toEqual(
      ["AlterTopic", "CreateTopic", "DeleteTopic", "DescribeTopic"].map((a) => `kafka-cluster:${a}`),
    );
    expect(expandAction("kafka-cluster:*")).toHaveLength(GUIDE.length);
    expect(expandAction("kafka-cluster:*Topic*")).toHaveLength(6);
    expect(expandAction("kafka-cluster:readdata")).toEqual(["kafka-cluster:ReadData"]);
    expect(expandAction("kafka:DescribeClusterV2")).toEqual([]);
    expect(expandAction("ec2:DescribeVpcs")).toEqual([]);
    expect(() => expandAction("kafka-cluster:WriteDataIdempotent")).toThrow(IamAclError);
    expect(() => expandAction("kafka-cluster:WriteDataIdempotent")).toThrow(/unknown action .*WriteDataIdempotent/);
  });
});

describe("ARNs", () => {
  const cases: [string, ReturnType<typeof parseMskArn>][] = [
    [
      `${PREFIX}:cluster/user-login/${LOCAL.uuid}`,
      { kind: "cluster", resourceName: "kafka-cluster", patternType: "LITERAL" },
    ],
    [`${PREFIX}:cluster/user-login/*`, { kind: "cluster", resourceName: "kafka-cluster", patternType: "LITERAL" }],
    [`${PREFIX}:cluster/*`, { kind: "cluster", resourceName: "kafka-cluster", patternType: "LITERAL" }],
    [`${PREFIX}:cluster/other/${LOCAL.uuid}`, null],
    [
      `${PREFIX}:topic/user-login/${LOCAL.uuid}/user-login`,
      { kind: "topic", resourceName: "user-login", patternType: "LITERAL" },
    ],
    // "all the topics in any cluster named MyTestCluster, regardless of the cluster's UUID"
    [
      "arn:aws:kafka:eu-west-1:123456789012:topic/user-login/*",
      { kind: "topic", resourceName: "*", patternType: "LITERAL" },
    ],
    [`${PREFIX}:topic/user-login/${LOCAL.uuid}/*`, { kind: "topic", resourceName: "*", patternType: "LITERAL" }],
    [`${PREFIX}:topic/*`, { kind: "topic", resourceName: "*", patternType: "LITERAL" }],
    [`${PREFIX}:topic/user-login/*/user-login`, { kind: "topic", resourceName: "user-login", patternType: "LITERAL" }],
    [
      `${PREFIX}:group/user-login/${LOCAL.uuid}/reader-*`,
      { kind: "group", resourceName: "reader-", patternType: "PREFIXED" },
    ],
    [`${PREFIX}:group/user-login/${LOCAL.uuid}/a/b`, { kind: "group", resourceName: "a/b", patternType: "LITERAL" }],
    [
      `${PREFIX}:transactional-id/user-login/${LOCAL.uuid}/tx`,
      { kind: "transactional-id", resourceName: "tx", patternType: "LITERAL" },
    ],
    [`${PREFIX}:topic/other/${LOCAL.uuid}/user-login`, null],
    [`arn:aws:kafka:us-east-1:123456789012:topic/user-login/${LOCAL.uuid}/user-login`, null],
    [
      `arn:aws:kafka:*:123456789012:topic/user-login/${LOCAL.uuid}/user-login`,
      { kind: "topic", resourceName: "user-login", patternType: "LITERAL" },
    ],
    [`arn:aws:kafka:eu-west-1:999999999999:topic/user-login/${LOCAL.uuid}/user-login`, null],
    ["*", "any"],
  ];
  it.each(cases)("%s", (arn, expected) => {
    expect(parseMskArn(arn, LOCAL)).toEqual(expected);
  });

  it("refuses wildcards that no ACL pattern can express, naming the ARN", () => {
    // The guide's own example "*_test" (names ending in _test) has no Kafka ACL equivalent.
    for (const arn of [
      `${PREFIX}:topic/user-login/${LOCAL.uuid}/*_test`,
      `${PREFIX}:topic/user-login/${LOCAL.uuid}/user-?`,
      `${PREFIX}:topic/user-*/${LOCAL.uuid}/user-login`,
      `${PREFIX}:cluster/user-*/x`,
    ]) {
      expect(() => parseMskArn(arn, LOCAL), arn).toThrow(IamAclError);
      expect(() => parseMskArn(arn, LOCAL), arn).toThrow(arn);
    }
    expect(() => parseMskArn("arn:aws:s3:::bucket", LOCAL)).toThrow(/not an MSK resource ARN/);
  });
});

describe("statements", () => {
  const topic = (name: string) => `${PREFIX}:topic/user-login/${LOCAL.uuid}/${name}`;

  it("maps every action on every resource of its type; a Deny becomes a DENY ACL", () => {
    const grants = statementGrants(
      {
        Effect: "Allow",
        Action: ["kafka-cluster:Connect", "kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"],
        Resource: [clusterArn(LOCAL), topic("a"), topic("b")],
      },
      LOCAL,
    );
    expect(grants.map((g) => `${grantLabel(g)} -> ${g.acl ? aclLabel(g.acl) : "authenticate"}`)).toEqual([
      "Connect on cluster -> authenticate",
      "DescribeTopic on topic a -> ALLOW DESCRIBE TOPIC a",
      "DescribeTopic on topic b -> ALLOW DESCRIBE TOPIC b",
      "WriteData on topic a -> ALLOW WRITE TOPIC a",
      "WriteData on topic b -> ALLOW WRITE TOPIC b",
    ]);
    const denied = statementGrants({ Effect: "Deny", Action: "kafka-cluster:ReadData", Resource: topic("a") }, LOCAL);
    expect(denied.map((g) => g.acl && aclLabel(g.acl))).toEqual(["DENY READ TOPIC a"]);
    const connect = principalGrants([
      ...grants,
      ...statementGrants({ Effect: "Deny", Action: "kafka-cluster:Connect", Resource: "*" }, LOCAL),
    ]);
    expect(connect.connect).toBe(false);
  });

  it("refuses an action named on resources of another type only: it would grant nothing", () => {
    expect(() =>
      statementGrants({ Effect: "Allow", Action: "kafka-cluster:WriteDataIdempotently", Resource: topic("a") }, LOCAL),
    ).toThrow(/WriteDataIdempotently applies to cluster ARNs.*grants nothing/);
  });

  it("refuses what ACLs cannot express: NotAction, NotResource, Condition", () => {
    expect(() =>
      statementGrants({ Effect: "Allow", NotAction: "kafka-cluster:ReadData", Resource: "*" }, LOCAL),
    ).toThrow(/NotAction/);
    expect(() =>
      statementGrants(
        { Effect: "Allow", Action: "kafka-cluster:ReadData", Resource: topic("a"), Condition: { Bool: {} } },
        LOCAL,
      ),
    ).toThrow(/Condition/);
  });

  it("skips resources of other clusters and statements of other services", () => {
    expect(
      statementGrants(
        { Effect: "Allow", Action: "kafka-cluster:ReadData", Resource: `${PREFIX}:topic/other/x/a` },
        LOCAL,
      ),
    ).toEqual([]);
    expect(statementGrants({ Effect: "Allow", Action: ["logs:PutLogEvents"], Resource: "*" }, LOCAL)).toEqual([]);
  });
});

/** Every (kafka-cluster action, resource) pair a role's statements name, counted straight from the raw template. */
function rawPairs(template: CfnTemplate, role: string): number {
  let pairs = 0;
  for (const resource of Object.values(template.Resources)) {
    const p = resource.Properties as Record<string, unknown> | undefined;
    const attached =
      (resource.Type === "AWS::IAM::Policy" &&
        (p?.Roles as { Ref: string }[] | undefined)?.some((r) => r.Ref === role)) ||
      false;
    if (!attached) continue;
    const statements = (p?.PolicyDocument as { Statement: Record<string, unknown>[] } | undefined)?.Statement ?? [];
    for (const statement of statements) {
      const actions = ([] as string[]).concat(statement.Action as string | string[]);
      const resources = ([] as unknown[]).concat(statement.Resource);
      pairs += actions.filter((a) => a.startsWith("kafka-cluster:")).length * resources.length;
    }
  }
  return pairs;
}

function synthesize(
  context: Record<string, unknown>,
  props: ConstructorParameters<typeof UserLoginPipelineStack>[2] = {},
) {
  const app = new App({ context: { "aws:cdk:bundling-stacks": [], ...context } });
  const stack = new UserLoginPipelineStack(app, "UserLoginPipeline", { env: ENV, ...props });
  return Template.fromStack(stack).toJSON() as CfnTemplate;
}

describe("the synthesized template", () => {
  const template = pipelineTemplate().toJSON() as CfnTemplate;
  const local = templateCluster(template, ENV);

  it("stands the local broker in for the stack's one MSK cluster", () => {
    expect(local).toMatchObject({
      name: "user-login",
      uuid: LOCAL_CLUSTER_UUID,
      region: ENV.region,
      account: ENV.account,
    });
  });

  it("maps every kafka-cluster statement of every role, one grant per action and resource", () => {
    const roles = templateRoleGrants(template, local);
    expect(roles.size).toBeGreaterThanOrEqual(3);
    for (const [role, grants] of roles) {
      expect(grants.grants.length, role).toBe(rawPairs(template, role));
      expect(grants.connect, `${role} may connect`).toBe(true);
      for (const grant of grants.grants) {
        expect(grant.action in MSK_ACTIONS, grantLabel(grant)).toBe(true);
        // Every resource the stack names is this cluster's, and exact (no wildcards).
        expect(grant.resource.startsWith(`arn:aws:kafka:${ENV.region}:${ENV.account}:`), grant.resource).toBe(true);
        if (grant.acl) expect(grant.acl.patternType).toBe("LITERAL");
      }
    }
  });

  it("knows each role's component from the template's structure", () => {
    const components = stackComponents(template, local);
    const roles = templateRoleGrants(template, local);
    expect(components.processor).toMatchObject({ groupId: "user-login-processor", topics: ["user-login"] });
    expect(components.processor.onFailureTopic).toBe("user-login-esm-failures");
    expect(components.topicSetup?.topics.map((t) => t.Name)).toEqual([
      "user-login",
      "processed-user-login",
      "user-login-dlq",
      "user-login-esm-failures",
    ]);
    const labels = (role: string) => roles.get(role)?.grants.map(grantLabel) ?? [];
    expect(labels(components.processor.role)).toEqual(
      expect.arrayContaining([
        "Connect on cluster",
        "ReadData on topic user-login",
        "AlterGroup on group user-login-processor",
        "WriteData on topic processed-user-login",
        "WriteData on topic user-login-dlq",
      ]),
    );
    expect(labels(components.generator.role)).toEqual(expect.arrayContaining(["WriteData on topic user-login"]));
    expect(labels(components.topicSetup?.role ?? "")).toEqual(
      expect.arrayContaining(["CreateTopic on topic user-login", "AlterTopic on topic user-login-esm-failures"]),
    );
  });

  it("fails loudly on an unknown action, an unresolvable resource, or a role no component owns", () => {
    const role = stackComponents(template, local).generator.role;
    const policyId = Object.entries(template.Resources).find(
      ([, r]) =>
        r.Type === "AWS::IAM::Policy" &&
        (r.Properties?.Roles as { Ref: string }[] | undefined)?.some((ref) => ref.Ref === role),
    )?.[0] as string;
    const withStatement = (statement: Record<string, unknown>): CfnTemplate => {
      const copy = structuredClone(template) as unknown as {
        Resources: Record<string, { Properties: Record<string, never> }>;
      };
      const document = copy.Resources[policyId]?.Properties.PolicyDocument as unknown as { Statement: unknown[] };
      document.Statement.push(statement);
      return copy as unknown as CfnTemplate;
    };
    expect(() =>
      templateRoleGrants(
        withStatement({ Effect: "Allow", Action: "kafka-cluster:ReadTopic", Resource: clusterArn(local) }),
        local,
      ),
    ).toThrow(/unknown action "kafka-cluster:ReadTopic"/);
    expect(() =>
      templateRoleGrants(
        withStatement({ Effect: "Allow", Action: "kafka-cluster:ReadData", Resource: { "Fn::ImportValue": "x" } }),
        local,
      ),
    ).toThrow(/cannot be resolved locally/);
    const stranger = structuredClone(template) as { Resources: Record<string, unknown> };
    stranger.Resources.StrangerRole = { Type: "AWS::IAM::Role", Properties: {} };
    stranger.Resources.StrangerPolicy = {
      Type: "AWS::IAM::Policy",
      Properties: {
        Roles: [{ Ref: "StrangerRole" }],
        PolicyDocument: {
          Statement: [{ Effect: "Allow", Action: "kafka-cluster:Connect", Resource: clusterArn(local) }],
        },
      },
    };
    expect(() => stackComponents(stranger as unknown as CfnTemplate, local)).toThrow(
      /StrangerRole.*no known component/,
    );
  });

  it("grants the same with cdk.json's context (minimized policies, as `cdk deploy` synthesizes)", () => {
    const cdkJson = JSON.parse(readFileSync(join(import.meta.dirname, "../../cdk.json"), "utf8")) as {
      context: Record<string, unknown>;
    };
    const minimized = synthesize(cdkJson.context);
    const acls = (t: CfnTemplate) => {
      const c = templateCluster(t, ENV);
      const components = stackComponents(t, c);
      const roles = templateRoleGrants(t, c);
      return Object.fromEntries(
        (["processor", "generator", "topicSetup"] as const).map((name) => {
          const role = name === "topicSetup" ? components.topicSetup?.role : components[name].role;
          const grants = roles.get(role ?? "");
          return [name, { connect: grants?.connect, acls: grants?.acls.map(aclLabel).sort() }];
        }),
      );
    };
    expect(acls(minimized)).toEqual(acls(template));
  });

  it("maps a provisioned cluster's template too (topics by AWS::MSK::Topic: no topic-setup role)", () => {
    const provisioned = synthesize({}, { cluster: { type: "provisioned", brokerCount: 2 } });
    const c = templateCluster(provisioned, ENV);
    const components = stackComponents(provisioned, c);
    expect(components.topicSetup).toBeUndefined();
    expect(templateRoleGrants(provisioned, c).get(components.processor.role)?.connect).toBe(true);
  });
});

describe("the operator's policy", () => {
  it("maps to ACLs on the pipeline's topics and groups, the throw-away reader groups by prefix", () => {
    const grants = policyGrants(
      operatorPolicy(
        LOCAL,
        {
          source: "user-login",
          processed: "processed-user-login",
          deadLetter: "user-login-dlq",
          processorGroup: "user-login-processor",
          redriveGroup: "user-login-dlq-redrive",
        },
        true,
      ),
      LOCAL,
    );
    const acls = principalGrants(grants);
    expect(acls.connect).toBe(true);
    expect(acls.acls.map(aclLabel)).toEqual(
      expect.arrayContaining([
        "ALLOW IDEMPOTENT_WRITE CLUSTER kafka-cluster",
        "ALLOW READ TOPIC user-login-dlq",
        "ALLOW WRITE TOPIC user-login",
        "ALLOW READ GROUP reader-*",
        "ALLOW DELETE GROUP reader-*",
        "ALLOW DESCRIBE GROUP user-login-processor",
      ]),
    );
    expect(acls.acls.map(aclLabel)).not.toContain("ALLOW WRITE TOPIC user-login-dlq");
  });
});
