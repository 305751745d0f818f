/**
 * Amazon MSK IAM access control, translated into Apache Kafka ACLs, so that the embedded broker (with its
 * `authorization` option and kafka/MskLikeAuthorizer.java) allows each component exactly what its IAM role would let
 * it do on MSK, no more.
 *
 * The source of truth is the synthesized CloudFormation template: `templateRoleGrants` reads every role's IAM
 * statements (AWS::IAM::Policy, AWS::IAM::ManagedPolicy, a role's inline Policies), resolves the intrinsics CDK writes
 * into ARNs (Fn::Join, Fn::Select, Fn::Split, Fn::Sub, Ref and Fn::GetAtt of the MSK cluster, pseudo parameters)
 * against a local stand-in for the cluster, and maps each `kafka-cluster:*` action on each resource to what MSK
 * documents it is equivalent to. A change to the stack's grants changes what the local broker allows.
 *
 * The action table is the MSK Developer Guide's ("IAM access control" > "Semantics of IAM authorization policy actions
 * and resources", docs.aws.amazon.com/msk/latest/developerguide/kafka-actions.html; the same table in the archived
 * github.com/awsdocs/amazon-msk-developer-guide, doc_source/iam-access-control.md): each action is "equivalent to
 * Apache Kafka's <OPERATION> <RESOURCE> ACL". kafka-cluster:Connect has no ACL equivalent ("Grants permission to
 * connect and authenticate to the cluster"; MSK checks it during the SASL handshake): here it decides whether the
 * role's principal exists as a SCRAM user at all, so without it the client fails to authenticate, as on MSK.
 *
 * Wildcards, as IAM evaluates them: `*` in an action (kafka-cluster:*Topic*) expands over the table; in an ARN, the
 * part after `topic/`, `group/` or `transactional-id/` is CLUSTER_NAME/CLUSTER_UUID/NAME. A trailing `*` that
 * covers the whole name (`.../*`, or `topic/user-login/*` for every UUID) becomes the LITERAL `*` ACL; a trailing `*`
 * after a name prefix (`.../reader-*`) a PREFIXED ACL; `*` as the whole cluster-name or UUID segment matches the local
 * cluster. Anything else (`?`, `*` inside a name) has no ACL equivalent and is refused with an error naming it.
 */
import { Kafka, logLevel } from "kafkajs";
import { createProducer } from "../shared/kafka.ts";

/** Kafka's ACL operations (org.apache.kafka.common.acl.AclOperation codes, also kafkajs's AclOperationTypes). */
export const ACL_OPERATION = {
  ALL: 2,
  READ: 3,
  WRITE: 4,
  CREATE: 5,
  DELETE: 6,
  ALTER: 7,
  DESCRIBE: 8,
  CLUSTER_ACTION: 9,
  DESCRIBE_CONFIGS: 10,
  ALTER_CONFIGS: 11,
  IDEMPOTENT_WRITE: 12,
} as const;
export type AclOperation = keyof typeof ACL_OPERATION;

/** Kafka's ACL resource types (org.apache.kafka.common.resource.ResourceType codes, kafkajs AclResourceTypes). */
export const ACL_RESOURCE_TYPE = { TOPIC: 2, GROUP: 3, CLUSTER: 4, TRANSACTIONAL_ID: 5 } as const;
export type AclResourceType = keyof typeof ACL_RESOURCE_TYPE;

/** Kafka's pattern types (PatternType codes, kafkajs ResourcePatternTypes) and permissions (AclPermissionType). */
export const ACL_PATTERN_TYPE = { LITERAL: 3, PREFIXED: 4 } as const;
export type AclPatternType = keyof typeof ACL_PATTERN_TYPE;
export const ACL_PERMISSION = { DENY: 2, ALLOW: 3 } as const;
export type AclPermission = keyof typeof ACL_PERMISSION;

/** The ARN resource types MSK's IAM access control knows. */
export type MskResourceKind = "cluster" | "topic" | "group" | "transactional-id";

export interface ActionMapping {
  /** The resource type its ARN must name. */
  readonly resource: MskResourceKind;
  /** The Kafka ACL it is equivalent to; "authenticate" for Connect. */
  readonly acl: { readonly operation: AclOperation; readonly resourceType: AclResourceType } | "authenticate";
  /** The guide's "Required actions" column: what a policy must also grant for the action to be usable. */
  readonly requires: readonly string[];
}

const cluster = (operation: AclOperation, ...requires: string[]): ActionMapping => ({
  resource: "cluster",
  acl: { operation, resourceType: "CLUSTER" },
  requires,
});
const onTopic = (operation: AclOperation, ...requires: string[]): ActionMapping => ({
  resource: "topic",
  acl: { operation, resourceType: "TOPIC" },
  requires,
});
const onGroup = (operation: AclOperation, ...requires: string[]): ActionMapping => ({
  resource: "group",
  acl: { operation, resourceType: "GROUP" },
  requires,
});
const onTransactionalId = (operation: AclOperation, ...requires: string[]): ActionMapping => ({
  resource: "transactional-id",
  acl: { operation, resourceType: "TRANSACTIONAL_ID" },
  requires,
});

/**
 * The MSK Developer Guide's action table (kafka-actions.html), action by action: "equivalent to Apache Kafka's ...
 * ACL" and the "Required actions" column (Connect left out of it: every action requires it).
 */
export const MSK_ACTIONS: Readonly<Record<string, ActionMapping>> = {
  "kafka-cluster:Connect": { resource: "cluster", acl: "authenticate", requires: [] },
  "kafka-cluster:DescribeCluster": cluster("DESCRIBE"),
  "kafka-cluster:AlterCluster": cluster("ALTER", "kafka-cluster:DescribeCluster"),
  "kafka-cluster:DescribeClusterDynamicConfiguration": cluster("DESCRIBE_CONFIGS"),
  "kafka-cluster:AlterClusterDynamicConfiguration": cluster(
    "ALTER_CONFIGS",
    "kafka-cluster:DescribeClusterDynamicConfiguration",
  ),
  "kafka-cluster:WriteDataIdempotently": cluster("IDEMPOTENT_WRITE", "kafka-cluster:WriteData"),
  // "equivalent to Apache Kafka's CREATE CLUSTER/TOPIC ACL" on a topic ARN: CREATE on that topic (CreateTopics checks
  // CREATE on the cluster or on the topic).
  "kafka-cluster:CreateTopic": onTopic("CREATE"),
  "kafka-cluster:DescribeTopic": onTopic("DESCRIBE"),
  "kafka-cluster:AlterTopic": onTopic("ALTER", "kafka-cluster:DescribeTopic"),
  "kafka-cluster:DeleteTopic": onTopic("DELETE", "kafka-cluster:DescribeTopic"),
  "kafka-cluster:DescribeTopicDynamicConfiguration": onTopic("DESCRIBE_CONFIGS"),
  "kafka-cluster:AlterTopicDynamicConfiguration": onTopic(
    "ALTER_CONFIGS",
    "kafka-cluster:DescribeTopicDynamicConfiguration",
  ),
  "kafka-cluster:ReadData": onTopic("READ", "kafka-cluster:DescribeTopic", "kafka-cluster:AlterGroup"),
  "kafka-cluster:WriteData": onTopic("WRITE", "kafka-cluster:DescribeTopic"),
  "kafka-cluster:DescribeGroup": onGroup("DESCRIBE"),
  // "Grants permission to join groups on a cluster, equivalent to Apache Kafka's READ GROUP ACL."
  "kafka-cluster:AlterGroup": onGroup("READ", "kafka-cluster:DescribeGroup"),
  "kafka-cluster:DeleteGroup": onGroup("DELETE", "kafka-cluster:DescribeGroup"),
  "kafka-cluster:DescribeTransactionalId": onTransactionalId("DESCRIBE"),
  "kafka-cluster:AlterTransactionalId": onTransactionalId(
    "WRITE",
    "kafka-cluster:DescribeTransactionalId",
    "kafka-cluster:WriteData",
  ),
};

export class IamAclError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "IamAclError";
  }
}

/** The cluster the local broker stands in for: the stack's MSK cluster, with a placeholder UUID. */
export interface LocalCluster {
  readonly partition: string;
  readonly region: string;
  readonly account: string;
  readonly name: string;
  readonly uuid: string;
  /** The template's logical id of the AWS::MSK::Cluster / AWS::MSK::ServerlessCluster. */
  readonly logicalId?: string;
}

export const LOCAL_CLUSTER_UUID = "00000000-0000-0000-0000-000000000000-local";

export function clusterArn(cluster: LocalCluster): string {
  return `arn:${cluster.partition}:kafka:${cluster.region}:${cluster.account}:cluster/${cluster.name}/${cluster.uuid}`;
}

/** One Kafka ACL (for a principal given later). */
export interface AclBinding {
  readonly resourceType: AclResourceType;
  readonly resourceName: string;
  readonly patternType: AclPatternType;
  readonly operation: AclOperation;
  readonly permission: AclPermission;
}

/** One IAM action on one resource, and what it means on the local broker. */
export interface Grant {
  readonly action: string;
  /** The resolved ARN as the policy names it (with its wildcards). */
  readonly resource: string;
  readonly effect: "Allow" | "Deny";
  /** The ACL; undefined for Connect (authentication). */
  readonly acl: AclBinding | undefined;
}

/** `Action on kind name`, e.g. "WriteData on topic user-login" (the local cluster's name and UUID left out). */
export function grantLabel(grant: Grant): string {
  const resource = grant.resource
    .replace(/^arn:[^:]*:kafka:[^:]*:[^:]*:/, "")
    .replace(/^cluster\/[^/]+\/[^/]+$/, "cluster")
    .replace(/^(topic|group|transactional-id)\/[^/]+\/[^/]+\/(.+)$/, "$1 $2");
  return `${grant.effect === "Deny" ? "Deny " : ""}${grant.action.replace("kafka-cluster:", "")} on ${resource}`;
}

export function aclLabel(acl: AclBinding): string {
  const pattern = acl.patternType === "PREFIXED" ? `${acl.resourceName}*` : acl.resourceName;
  return `${acl.permission} ${acl.operation} ${acl.resourceType} ${pattern}`;
}

/** IAM's glob (`*` any run, `?` one character), case-sensitive as ARNs are. */
function globMatches(pattern: string, text: string): boolean {
  const regex = pattern
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${regex}$`, "s").test(text);
}

/** Expands one Action entry (wildcards allowed) to the kafka-cluster actions it stands for; others give []. */
export function expandAction(action: string): string[] {
  const [service, name] = action.includes(":") ? action.split(/:(.*)/s, 2) : [action, undefined];
  if (action === "*") return Object.keys(MSK_ACTIONS);
  if (service?.toLowerCase() !== "kafka-cluster" || name === undefined) return [];
  if (!/[*?]/.test(name)) {
    const known = Object.keys(MSK_ACTIONS).find((a) => a.toLowerCase() === `kafka-cluster:${name}`.toLowerCase());
    if (!known) {
      throw new IamAclError(
        `unknown action "${action}": not in the MSK Developer Guide's kafka-cluster action table (functions/local/iam-acl.ts MSK_ACTIONS)`,
      );
    }
    return [known];
  }
  const matched = Object.keys(MSK_ACTIONS).filter((a) =>
    globMatches(`kafka-cluster:${name}`.toLowerCase(), a.toLowerCase()),
  );
  if (matched.length === 0) throw new IamAclError(`action "${action}" matches no kafka-cluster action`);
  return matched;
}

export interface ArnMatch {
  readonly kind: MskResourceKind;
  /** For cluster: "kafka-cluster" (Kafka's cluster resource name). */
  readonly resourceName: string;
  readonly patternType: AclPatternType;
}

const CLUSTER_RESOURCE_NAME = "kafka-cluster";
const ARN = /^arn:([^:]*):kafka:([^:]*):([^:]*):(cluster|topic|group|transactional-id)\/(.+)$/s;

const segmentMatches = (pattern: string, value: string) => pattern === "*" || pattern === value;

/**
 * What an MSK ARN (or "*") names on the local cluster: null when it names another cluster (or another region,
 * account, partition), the resource and ACL pattern otherwise. Throws on ARNs that are not MSK's or whose wildcards
 * have no ACL equivalent.
 */
export function parseMskArn(arn: string, local: LocalCluster): ArnMatch | null | "any" {
  if (arn === "*") return "any";
  const match = ARN.exec(arn);
  if (!match) {
    throw new IamAclError(
      `"${arn}" is not an MSK resource ARN (arn:aws:kafka:REGION:ACCOUNT:cluster|topic|group|transactional-id/...)`,
    );
  }
  const [, partition, region, account, kind, rest] = match as unknown as [
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  if (
    ![partition, region, account].every((field, i) =>
      globMatches(field, [local.partition, local.region, local.account][i] as string),
    )
  ) {
    return null;
  }
  const resourceKind = kind as MskResourceKind;
  if (resourceKind === "cluster") {
    // cluster/NAME/UUID: literal, a trailing `*` (spanning the `/`, as IAM's does), or `*` for a whole segment.
    const whole = `${local.name}/${local.uuid}`;
    const wildcards = (rest.match(/[*?]/g) ?? []).length;
    const found: ArnMatch = { kind: "cluster", resourceName: CLUSTER_RESOURCE_NAME, patternType: "LITERAL" };
    if (wildcards === 0) return rest === whole ? found : null;
    if (wildcards === 1 && rest.endsWith("*")) return whole.startsWith(rest.slice(0, -1)) ? found : null;
    const [name, uuid, ...extra] = rest.split("/");
    if (extra.length === 0 && [name, uuid].every((s) => s === "*" || !/[*?]/.test(s as string))) {
      return segmentMatches(name as string, local.name) && segmentMatches(uuid as string, local.uuid) ? found : null;
    }
    throw new IamAclError(`cluster ARN "${arn}": only a trailing * or * for a whole segment are supported`);
  }
  const base = `${local.name}/${local.uuid}/`;
  const wildcards = (rest.match(/[*?]/g) ?? []).length;
  // A single trailing `*`: IAM's `*` also spans the `/`s, so compare with the whole NAME/UUID/ prefix.
  if (wildcards === 1 && rest.endsWith("*")) {
    const prefix = rest.slice(0, -1);
    if (base.startsWith(prefix)) return { kind: resourceKind, resourceName: "*", patternType: "LITERAL" };
    if (prefix.startsWith(base)) {
      const namePrefix = prefix.slice(base.length);
      return namePrefix === ""
        ? { kind: resourceKind, resourceName: "*", patternType: "LITERAL" }
        : { kind: resourceKind, resourceName: namePrefix, patternType: "PREFIXED" };
    }
    return null;
  }
  const first = rest.indexOf("/");
  const second = first < 0 ? -1 : rest.indexOf("/", first + 1);
  if (second < 0) {
    if (wildcards === 0) return null;
    throw new IamAclError(`${kind} ARN "${arn}": expected ${kind}/CLUSTER_NAME/CLUSTER_UUID/NAME`);
  }
  const name = rest.slice(0, first);
  const uuid = rest.slice(first + 1, second);
  const resourceName = rest.slice(second + 1);
  const unsupported = () =>
    new IamAclError(
      `${kind} ARN "${arn}": only a whole-segment * for the cluster name or UUID, and a trailing * on the ${kind} name, have Kafka ACL equivalents`,
    );
  if (/[*?]/.test(name) && name !== "*") throw unsupported();
  if (/[*?]/.test(uuid) && uuid !== "*") throw unsupported();
  if (!segmentMatches(name, local.name) || !segmentMatches(uuid, local.uuid)) return null;
  if (resourceName === "*") return { kind: resourceKind, resourceName: "*", patternType: "LITERAL" };
  const nameWildcards = (resourceName.match(/[*?]/g) ?? []).length;
  if (nameWildcards === 0) return { kind: resourceKind, resourceName, patternType: "LITERAL" };
  if (nameWildcards === 1 && resourceName.endsWith("*")) {
    return { kind: resourceKind, resourceName: resourceName.slice(0, -1), patternType: "PREFIXED" };
  }
  throw unsupported();
}

/** An IAM policy statement, with CloudFormation intrinsics already resolved. */
export interface PolicyStatement {
  readonly Effect: "Allow" | "Deny";
  readonly Action?: string | readonly string[];
  readonly NotAction?: unknown;
  readonly Resource?: string | readonly string[];
  readonly NotResource?: unknown;
  readonly Condition?: unknown;
  readonly Sid?: string;
}

export interface PolicyDocument {
  readonly Version?: string;
  readonly Statement: PolicyStatement | readonly PolicyStatement[];
}

const list = <T>(value: T | readonly T[] | undefined): T[] =>
  value === undefined ? [] : Array.isArray(value) ? [...value] : [value as T];

/** Every kafka-cluster action of one statement on every resource it names, mapped; other services ignored. */
export function statementGrants(statement: PolicyStatement, local: LocalCluster): Grant[] {
  const what = statement.Sid ? `statement ${statement.Sid}` : `statement ${JSON.stringify(statement).slice(0, 200)}`;
  if (statement.NotAction !== undefined) {
    throw new IamAclError(`${what}: NotAction cannot be translated into ACLs; list the actions`);
  }
  const actions = list(statement.Action).flatMap((action) => expandAction(action).map((a) => ({ a, named: action })));
  if (actions.length === 0) return [];
  if (statement.NotResource !== undefined || statement.Condition !== undefined) {
    throw new IamAclError(`${what}: NotResource and Condition on kafka-cluster actions cannot be translated into ACLs`);
  }
  if (statement.Effect !== "Allow" && statement.Effect !== "Deny") {
    throw new IamAclError(`${what}: Effect must be Allow or Deny, got ${JSON.stringify(statement.Effect)}`);
  }
  const resources = list(statement.Resource).map((arn) => {
    if (typeof arn !== "string") {
      throw new IamAclError(`${what}: resource ${JSON.stringify(arn)} did not resolve to a string`);
    }
    return { arn, match: parseMskArn(arn, local) };
  });
  const grants: Grant[] = [];
  for (const { a: action, named } of actions) {
    const mapping = MSK_ACTIONS[action] as ActionMapping;
    let applies = false;
    for (const { arn, match } of resources) {
      if (match === null) continue;
      if (match !== "any" && match.kind !== mapping.resource) continue;
      applies = true;
      const target: ArnMatch =
        match === "any"
          ? {
              kind: mapping.resource,
              resourceName: mapping.resource === "cluster" ? CLUSTER_RESOURCE_NAME : "*",
              patternType: "LITERAL",
            }
          : match;
      grants.push({
        action,
        resource: arn,
        effect: statement.Effect,
        acl:
          mapping.acl === "authenticate"
            ? undefined
            : {
                resourceType: mapping.acl.resourceType,
                resourceName: target.resourceName,
                patternType: target.patternType,
                operation: mapping.acl.operation,
                permission: statement.Effect === "Allow" ? "ALLOW" : "DENY",
              },
      });
    }
    // An action named outright (no wildcard) on resources of which none is its type grants nothing: a mistake
    // (WriteDataIdempotently on a topic ARN, say). Resources of another cluster are another matter: skipped.
    const otherTypesOnly = resources.every(
      ({ match }) => match !== null && match !== "any" && match.kind !== mapping.resource,
    );
    if (!applies && !/[*?]/.test(named) && otherTypesOnly) {
      throw new IamAclError(
        `${what}: ${action} applies to ${mapping.resource} ARNs, but the statement names only ${resources
          .map(({ arn }) => arn)
          .join(", ")}: it grants nothing`,
      );
    }
  }
  return grants;
}

export function policyGrants(document: PolicyDocument, local: LocalCluster): Grant[] {
  return list(document.Statement).flatMap((statement) => statementGrants(statement, local));
}

/** What one principal may do: authenticate at all (Connect), and its ACLs. */
export interface PrincipalGrants {
  /** Connect on this cluster allowed, and not denied. */
  readonly connect: boolean;
  readonly grants: readonly Grant[];
  /** The ACLs, deduplicated (Connect has none). */
  readonly acls: readonly AclBinding[];
}

export function principalGrants(grants: readonly Grant[]): PrincipalGrants {
  const connects = grants.filter((g) => g.action === "kafka-cluster:Connect");
  const connect = connects.some((g) => g.effect === "Allow") && !connects.some((g) => g.effect === "Deny");
  const seen = new Map<string, AclBinding>();
  for (const grant of grants) if (grant.acl) seen.set(aclLabel(grant.acl), grant.acl);
  return { connect, grants, acls: [...seen.values()] };
}

// ---------------------------------------------------------------------------------------------------------------
// The CloudFormation template

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export interface CfnTemplate {
  readonly Resources: Readonly<Record<string, { readonly Type: string; readonly Properties?: Record<string, Json> }>>;
}

const MSK_CLUSTER_TYPES = new Set(["AWS::MSK::ServerlessCluster", "AWS::MSK::Cluster"]);

/** The template's one MSK cluster as the local stand-in. */
export function templateCluster(
  template: CfnTemplate,
  env: { region: string; account: string; partition?: string },
): LocalCluster {
  const clusters = Object.entries(template.Resources).filter(([, r]) => MSK_CLUSTER_TYPES.has(r.Type));
  if (clusters.length !== 1) {
    throw new IamAclError(`expected one MSK cluster in the template, found ${clusters.length}`);
  }
  const [logicalId, resource] = clusters[0] as [string, { Properties?: Record<string, Json> }];
  const name = resource.Properties?.ClusterName;
  if (typeof name !== "string") throw new IamAclError(`${logicalId}: ClusterName must be a literal string`);
  return {
    partition: env.partition ?? "aws",
    region: env.region,
    account: env.account,
    name,
    uuid: LOCAL_CLUSTER_UUID,
    logicalId,
  };
}

class Unresolvable extends Error {}

/** Resolves the intrinsics CDK writes into IAM ARNs; throws Unresolvable on anything else. */
export function resolveIntrinsics(value: Json, template: CfnTemplate, local: LocalCluster): Json {
  const resolve = (v: Json): Json => resolveIntrinsics(v, template, local);
  if (Array.isArray(value)) return value.map(resolve);
  if (value === null || typeof value !== "object") return value;
  const keys = Object.keys(value);
  if (keys.length !== 1 || !(keys[0] as string).match(/^(Ref|Fn::)/)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, resolve(v)]));
  }
  const [key] = keys as [string];
  const arg = value[key] as Json;
  const pseudo: Record<string, string> = {
    "AWS::Partition": local.partition,
    "AWS::Region": local.region,
    "AWS::AccountId": local.account,
    "AWS::URLSuffix": "amazonaws.com",
  };
  const isCluster = (id: Json) => typeof id === "string" && id === local.logicalId;
  switch (key) {
    case "Ref":
      if (typeof arg === "string" && pseudo[arg] !== undefined) return pseudo[arg] as string;
      // Ref of an MSK cluster is its ARN.
      if (isCluster(arg)) return clusterArn(local);
      throw new Unresolvable(`Ref ${JSON.stringify(arg)}`);
    case "Fn::GetAtt": {
      const [id, attribute] = (typeof arg === "string" ? arg.split(".") : arg) as [Json, Json];
      if (isCluster(id) && attribute === "Arn") return clusterArn(local);
      throw new Unresolvable(`Fn::GetAtt ${JSON.stringify(arg)}`);
    }
    case "Fn::Join": {
      const [separator, parts] = arg as [string, Json[]];
      return (resolve(parts as Json) as Json[]).map((p) => String(p)).join(separator);
    }
    case "Fn::Split": {
      const [separator, source] = arg as [string, Json];
      return String(resolve(source)).split(separator);
    }
    case "Fn::Select": {
      const [index, items] = arg as [Json, Json];
      const resolved = resolve(items) as Json[];
      const picked = resolved[Number(resolve(index))];
      if (picked === undefined) throw new Unresolvable(`Fn::Select ${JSON.stringify(arg)}`);
      return picked;
    }
    case "Fn::Sub": {
      const [text, variables] = (typeof arg === "string" ? [arg, {}] : arg) as [string, Record<string, Json>];
      return text.replace(/\$\{([^}!][^}]*)\}/g, (_, name: string) => {
        if (variables[name] !== undefined) return String(resolve(variables[name] as Json));
        if (pseudo[name] !== undefined) return pseudo[name] as string;
        if (name === `${local.logicalId}.Arn` || name === local.logicalId) return clusterArn(local);
        throw new Unresolvable(`Fn::Sub \${${name}}`);
      });
    }
    default:
      throw new Unresolvable(key);
  }
}

/** The policy documents attached to each role (by logical id): AWS::IAM::Policy, ManagedPolicy, inline Policies. */
export function templateRolePolicies(template: CfnTemplate): Map<string, Json[]> {
  const byRole = new Map<string, Json[]>();
  const add = (roleRef: Json, document: Json) => {
    const role = roleRef && typeof roleRef === "object" && !Array.isArray(roleRef) ? roleRef.Ref : undefined;
    if (typeof role !== "string") {
      throw new IamAclError(`a policy is attached to ${JSON.stringify(roleRef)}: only { Ref: <role> } is understood`);
    }
    byRole.set(role, [...(byRole.get(role) ?? []), document]);
  };
  for (const [id, resource] of Object.entries(template.Resources)) {
    const p = resource.Properties ?? {};
    if (resource.Type === "AWS::IAM::Policy" || resource.Type === "AWS::IAM::ManagedPolicy") {
      for (const role of list(p.Roles as Json[] | undefined)) add(role, p.PolicyDocument as Json);
      if (p.Users !== undefined || p.Groups !== undefined) {
        throw new IamAclError(`${id}: policies attached to IAM users or groups are not translated`);
      }
    }
    if (resource.Type === "AWS::IAM::Role") {
      for (const inline of list(p.Policies as Json[] | undefined)) {
        add({ Ref: id }, (inline as Record<string, Json>).PolicyDocument as Json);
      }
      for (const arn of list(p.ManagedPolicyArns as Json[] | undefined)) {
        // A managed policy of this template (Ref) is attached through its Roles above only if it lists the role.
        const ref = arn && typeof arn === "object" && !Array.isArray(arn) ? arn.Ref : undefined;
        const managed = typeof ref === "string" ? template.Resources[ref] : undefined;
        if (managed?.Type === "AWS::IAM::ManagedPolicy") add({ Ref: id }, managed.Properties?.PolicyDocument as Json);
        // AWS managed policies (arn:...:iam::aws:policy/...) are not in the template; none of the stack's grants
        // kafka-cluster actions (AWSLambdaBasicExecutionRole, AWSLambdaVPCAccessExecutionRole).
      }
    }
  }
  return byRole;
}

const mentionsKafkaCluster = (statement: Json): boolean =>
  list((statement as Record<string, Json>).Action as Json[] | undefined).some(
    (a) => typeof a === "string" && (a === "*" || a.toLowerCase().startsWith("kafka-cluster:")),
  );

/** Every role with at least one kafka-cluster action: logical id -> its grants on the local cluster. */
export function templateRoleGrants(template: CfnTemplate, local: LocalCluster): Map<string, PrincipalGrants> {
  const result = new Map<string, PrincipalGrants>();
  for (const [role, documents] of templateRolePolicies(template)) {
    const grants: Grant[] = [];
    for (const document of documents) {
      for (const statement of list((document as Record<string, Json>).Statement as Json[] | undefined)) {
        if (!mentionsKafkaCluster(statement)) continue;
        let resolved: Json;
        try {
          resolved = resolveIntrinsics(statement, template, local);
        } catch (error) {
          if (!(error instanceof Unresolvable)) throw error;
          throw new IamAclError(
            `role ${role}: a kafka-cluster statement uses ${error.message}, which cannot be resolved locally: ${JSON.stringify(statement).slice(0, 300)}`,
          );
        }
        grants.push(...statementGrants(resolved as unknown as PolicyStatement, local));
      }
    }
    if (grants.length > 0) result.set(role, principalGrants(grants));
  }
  return result;
}

// ---------------------------------------------------------------------------------------------------------------
// The pipeline's components and their principals

export type Component = "processor" | "generator" | "topicSetup" | "operator";

/** The SCRAM user each component connects as locally (User:<name> in the ACLs). */
export const COMPONENT_PRINCIPALS: Readonly<Record<Component, string>> = {
  processor: "processor",
  generator: "generator",
  topicSetup: "topic-setup",
  operator: "operator",
};

export interface StackComponents {
  /** The processor function's role; the event source mapping polls with it too. */
  readonly processor: {
    readonly role: string;
    readonly groupId: string;
    readonly topics: string[];
    readonly onFailureTopic?: string;
  };
  /** The generator's ECS task role. */
  readonly generator: { readonly role: string };
  /** The topic-setup custom resource's function role (MSK Serverless only) and the topics it creates. */
  readonly topicSetup?: {
    readonly role: string;
    readonly topics: { Name: string; Partitions: number; Configs?: Record<string, string> }[];
  };
}

const getAttId = (value: Json | undefined): string | undefined => {
  if (!value || typeof value !== "object" || Array.isArray(value)) return undefined;
  const att = value["Fn::GetAtt"];
  if (Array.isArray(att) && typeof att[0] === "string") return att[0];
  if (typeof att === "string") return att.split(".")[0];
  return undefined;
};
const refId = (value: Json | undefined): string | undefined =>
  value && typeof value === "object" && !Array.isArray(value) && typeof value.Ref === "string" ? value.Ref : undefined;

/**
 * Finds which role is which component from the template's structure (not from logical ids): the role of the function
 * the MSK event source mapping invokes, the ECS task role, the role of the function behind Custom::KafkaTopics. Fails
 * when a role with kafka-cluster grants is none of them: a new component needs a principal here first.
 */
export function stackComponents(template: CfnTemplate, local: LocalCluster): StackComponents {
  const resources = template.Resources;
  const functionRole = (fnId: string | undefined): string => {
    const role = getAttId(fnId ? resources[fnId]?.Properties?.Role : undefined);
    if (!role) throw new IamAclError(`cannot find the role of function ${fnId}`);
    return role;
  };
  const esms = Object.values(resources).filter(
    (r) =>
      r.Type === "AWS::Lambda::EventSourceMapping" &&
      (getAttId(r.Properties?.EventSourceArn) === local.logicalId ||
        refId(r.Properties?.EventSourceArn) === local.logicalId),
  );
  if (esms.length !== 1)
    throw new IamAclError(`expected one event source mapping on the cluster, found ${esms.length}`);
  const esm = (esms[0] as { Properties: Record<string, Json> }).Properties;
  const destination = (
    (esm.DestinationConfig as Record<string, Json> | undefined)?.OnFailure as Record<string, Json> | undefined
  )?.Destination;
  const processor = {
    role: functionRole(refId(esm.FunctionName) ?? getAttId(esm.FunctionName)),
    groupId: String((esm.AmazonManagedKafkaEventSourceConfig as Record<string, Json> | undefined)?.ConsumerGroupId),
    topics: list(esm.Topics as Json[]).map(String),
    onFailureTopic: typeof destination === "string" ? destination.replace(/^kafka:\/\//, "") : undefined,
  };
  const tasks = Object.values(resources).filter((r) => r.Type === "AWS::ECS::TaskDefinition");
  const taskRoles = tasks.map((t) => getAttId(t.Properties?.TaskRoleArn)).filter((r): r is string => r !== undefined);
  if (taskRoles.length !== 1)
    throw new IamAclError(`expected one ECS task role (the generator's), found ${taskRoles.length}`);
  let topicSetup: StackComponents["topicSetup"];
  const custom = Object.values(resources).find((r) => r.Type === "Custom::KafkaTopics");
  if (custom) {
    const provider = getAttId(custom.Properties?.ServiceToken);
    const variables = (resources[provider ?? ""]?.Properties?.Environment as Record<string, Json> | undefined)
      ?.Variables as Record<string, Json> | undefined;
    const onEvent = getAttId(variables?.USER_ON_EVENT_FUNCTION_ARN) ?? provider;
    topicSetup = {
      role: functionRole(onEvent),
      topics: custom.Properties?.Topics as unknown as NonNullable<StackComponents["topicSetup"]>["topics"],
    };
  }
  const components: StackComponents = { processor, generator: { role: taskRoles[0] as string }, topicSetup };
  const known = new Set([processor.role, taskRoles[0], topicSetup?.role]);
  const unknown = [...templateRoleGrants(template, local).keys()].filter((role) => !known.has(role));
  if (unknown.length > 0) {
    throw new IamAclError(
      `role(s) ${unknown.join(", ")} have kafka-cluster grants but are no known component (processor, generator, topic setup): give them a principal in functions/local/iam-acl.ts`,
    );
  }
  return components;
}

/** Whether the project's producers (createProducer: processor, generator, redrive) are idempotent. */
export function producersAreIdempotent(): boolean {
  // Building a producer connects nothing.
  return createProducer(new Kafka({ brokers: ["127.0.0.1:9"], logLevel: logLevel.NOTHING })).isIdempotent();
}

/**
 * The operator's policy, written here because the stack has no operator role: what `npm run dlq -- stats|peek|redrive`
 * and `npm run topics` (the overview, not --create: topics are the stack's to create) need, as an IAM policy to attach
 * to a person's role on MSK. ReadData, DescribeGroup/AlterGroup/DeleteGroup on `reader-*`: read-topic.ts reads a
 * topic in a throw-away group it deletes afterwards; the redrive group remembers what was redriven; redrive writes to
 * the source topic (WriteDataIdempotently too, should the project's producers be idempotent); the overview describes
 * the pipeline's topics and the processor's group.
 */
export function operatorPolicy(
  cluster: LocalCluster,
  names: { source: string; processed: string; deadLetter: string; processorGroup: string; redriveGroup: string },
  idempotentProducer = producersAreIdempotent(),
): PolicyDocument {
  const arn = (kind: "topic" | "group", name: string) =>
    `arn:${cluster.partition}:kafka:${cluster.region}:${cluster.account}:${kind}/${cluster.name}/${cluster.uuid}/${name}`;
  return {
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "Cluster",
        Effect: "Allow",
        Action: ["kafka-cluster:Connect", ...(idempotentProducer ? ["kafka-cluster:WriteDataIdempotently"] : [])],
        Resource: clusterArn(cluster),
      },
      {
        Sid: "DescribeTopics",
        Effect: "Allow",
        Action: "kafka-cluster:DescribeTopic",
        Resource: [names.source, names.processed, names.deadLetter].map((t) => arn("topic", t)),
      },
      { Sid: "ReadDlq", Effect: "Allow", Action: "kafka-cluster:ReadData", Resource: arn("topic", names.deadLetter) },
      {
        Sid: "RedriveToSource",
        Effect: "Allow",
        Action: "kafka-cluster:WriteData",
        Resource: arn("topic", names.source),
      },
      {
        Sid: "RedriveGroup",
        Effect: "Allow",
        Action: ["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"],
        Resource: arn("group", names.redriveGroup),
      },
      {
        Sid: "ReaderGroups",
        Effect: "Allow",
        Action: ["kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup", "kafka-cluster:DeleteGroup"],
        Resource: arn("group", "reader-*"),
      },
      {
        Sid: "ProcessorLag",
        Effect: "Allow",
        Action: "kafka-cluster:DescribeGroup",
        Resource: arn("group", names.processorGroup),
      },
    ],
  };
}

/** kafkajs's createAcls entries for one principal. */
export function kafkajsAcls(principal: string, acls: readonly AclBinding[]) {
  return acls.map((acl) => ({
    resourceType: ACL_RESOURCE_TYPE[acl.resourceType],
    resourceName: acl.resourceName,
    resourcePatternType: ACL_PATTERN_TYPE[acl.patternType],
    principal: `User:${principal}`,
    host: "*",
    operation: ACL_OPERATION[acl.operation],
    permissionType: ACL_PERMISSION[acl.permission],
  }));
}

/** Something with kafkajs Admin's createAcls / describeAcls (kept structural: kafkajs's ACL enums are numbers). */
export interface AclAdmin {
  createAcls(options: { acl: ReturnType<typeof kafkajsAcls> }): Promise<unknown>;
  describeAcls(filter: {
    resourceType: number;
    resourcePatternType: number;
    operation: number;
    permissionType: number;
    principal?: string;
  }): Promise<{ resources: { acls: unknown[] }[] }>;
}

/**
 * Creates the ACLs (as a super user) and waits until the broker's authorizer serves them: CreateAcls returns once the
 * controller committed them, the broker applies them from the metadata log a moment later.
 */
export async function applyAcls(
  admin: AclAdmin,
  byPrincipal: ReadonlyMap<string, readonly AclBinding[]>,
  timeoutMs = 30_000,
) {
  const entries = [...byPrincipal].flatMap(([principal, acls]) => kafkajsAcls(principal, acls));
  if (entries.length === 0) return;
  const ANY = 1;
  const served = async () =>
    (
      await admin.describeAcls({ resourceType: ANY, resourcePatternType: ANY, operation: ANY, permissionType: ANY })
    ).resources.reduce((n, r) => n + r.acls.length, 0);
  // Each principal's ACLs are new (deduplicated per principal), so the count grows by exactly this many.
  const expected = (await served()) + entries.length;
  for (let i = 0; i < entries.length; i += 500) await admin.createAcls({ acl: entries.slice(i, i + 500) });
  const deadline = Date.now() + timeoutMs;
  for (let count = await served(); count < expected; count = await served()) {
    if (Date.now() > deadline) {
      throw new IamAclError(`the broker serves ${count} of ${expected} ACLs ${timeoutMs} ms after creating them`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
