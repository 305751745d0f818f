/**
 * The stack's IAM policies, enforced: on a broker of its own that authenticates every client (SCRAM-SHA-512) and
 * authorizes every request like MSK's IAM access control (kafka/MskLikeAuthorizer.java), with ACLs derived from the
 * synthesized template by functions/local/iam-acl.ts, each component connects as its role's principal.
 *
 * Sufficient: every component does its whole job under exactly its role's grants.
 * Minimal: for every kafka-cluster action on every resource of every role (one row each, from the template, so a new
 * grant adds a row), a principal holding all of the role's grants but that one runs the same job, which must fail with
 * an error naming what is missing; or, for the few grants no local code path exercises, the row says so and why.
 */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import type { CloudFormationCustomResourceEvent } from "aws-lambda";
import type { Admin, Consumer, Kafka } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MskEvent } from "../../functions/core/msk.ts";
import { kafkaSink, producerSlot } from "../../functions/generator/main.ts";
import { GeneratorModel } from "../../functions/generator/model.ts";
import { dlqStats, readDeadLetters, redrive } from "../../functions/local/dlq.ts";
import { EmbeddedKafka } from "../../functions/local/embedded-kafka.ts";
import { MskEventSourceHarness } from "../../functions/local/harness.ts";
import {
  type AclBinding,
  aclLabel,
  applyAcls,
  COMPONENT_PRINCIPALS,
  type Component,
  clusterArn,
  type Grant,
  grantLabel,
  operatorPolicy,
  type PrincipalGrants,
  policyGrants,
  principalGrants,
  producersAreIdempotent,
  stackComponents,
  templateCluster,
  templateRoleGrants,
} from "../../functions/local/iam-acl.ts";
import { lambdaContext } from "../../functions/local/lambda-runtime.ts";
import { topicOverview } from "../../functions/local/topic-overview.ts";
import { containerSender, createHandler } from "../../functions/processor/processor.ts";
import { loadProcessorConfig } from "../../functions/shared/config.ts";
import { createKafka, createProducer } from "../../functions/shared/kafka.ts";
import { ensureTopics } from "../../functions/shared/topics.ts";
import { handler as topicSetupHandler } from "../../functions/topic-setup/handler.ts";
import { ENV, pipelineTemplate } from "../support/cdk.ts";
import { validLogin } from "../support/msk.ts";

// ---------------------------------------------------------------------------------------------------------------
// What the stack grants, and the rows

const template = pipelineTemplate().toJSON() as Parameters<typeof templateCluster>[0];
const local = templateCluster(template, ENV);
const stack = stackComponents(template, local);
const roleGrants = templateRoleGrants(template, local);
const topicSpecs = stack.topicSetup?.topics ?? [];
const topicNames = topicSpecs.map((t) => t.Name);
const [SOURCE, PROCESSED, DLQ] = [
  String(stack.processor.topics[0]),
  topicNames.find((t) => t.startsWith("processed")) as string,
  topicNames.find((t) => t.endsWith("-dlq")) as string,
];
/** The event source mapping's on-failure destination (kafka://...), written with the function's role. */
const ESM_FAILURES = String(stack.processor.onFailureTopic);
const GROUP = stack.processor.groupId;
const REDRIVE_GROUP = `${DLQ}-redrive`;

const operatorGrants = principalGrants(
  policyGrants(
    operatorPolicy(local, {
      source: SOURCE,
      processed: PROCESSED,
      deadLetter: DLQ,
      processorGroup: GROUP,
      redriveGroup: REDRIVE_GROUP,
    }),
    local,
  ),
);

const ROLES: Record<Component, { role: string; grants: PrincipalGrants }> = {
  processor: { role: stack.processor.role, grants: roleGrants.get(stack.processor.role) as PrincipalGrants },
  generator: { role: stack.generator.role, grants: roleGrants.get(stack.generator.role) as PrincipalGrants },
  topicSetup: {
    role: stack.topicSetup?.role ?? "(none)",
    grants: roleGrants.get(stack.topicSetup?.role ?? "") as PrincipalGrants,
  },
  operator: { role: "operatorPolicy() in functions/local/iam-acl.ts", grants: operatorGrants },
};
const COMPONENTS = Object.keys(ROLES) as Component[];

/**
 * The grants no local code path exercises: removing them changes nothing here. Each says why; every other grant must
 * make its component fail when removed (a new grant that nothing uses fails this test until it is listed here).
 */
const NOT_EXERCISED: { component: Component | "*"; grant: (g: Grant) => boolean; why: string }[] = [
  {
    component: "*",
    grant: (g) => g.action === "kafka-cluster:DescribeCluster",
    why:
      "no component sends a request that needs DESCRIBE on the cluster: kafkajs never sends DescribeCluster " +
      "(its admin.describeCluster is a Metadata request), and Metadata needs no cluster ACL",
  },
  {
    component: "processor",
    grant: (g) => g.action === "kafka-cluster:DescribeClusterDynamicConfiguration",
    why:
      'Lambda\'s pollers need it (Lambda Developer Guide, "Configuring Amazon MSK event sources for Lambda", IAM ' +
      "role-based authentication); the local harness does not describe the cluster's configuration",
  },
];

// The project's producers decide whether InitProducerId (IDEMPOTENT_WRITE on the cluster) is ever sent.
const IDEMPOTENT = producersAreIdempotent();
if (!IDEMPOTENT) {
  NOT_EXERCISED.push({
    component: "*",
    grant: (g) => g.action === "kafka-cluster:WriteDataIdempotently",
    why:
      "the project's producers are not idempotent (createProducer in functions/shared/kafka.ts), so none sends " +
      "InitProducerId: the grant is unused",
  });
}

const notExercised = (component: Component, grant: Grant) =>
  NOT_EXERCISED.find((n) => (n.component === "*" || n.component === component) && n.grant(grant))?.why;

/** What the component's error must name when `grant` is missing. */
function expectedFailure(grant: Grant): RegExp {
  const acl = grant.acl;
  if (!acl) return /SASL SCRAM SHA512 authentication failed/;
  if (acl.resourceType === "CLUSTER") return /CLUSTER_AUTHORIZATION_FAILED/;
  if (acl.resourceType === "GROUP") {
    // read-topic.ts deletes its throw-away group best-effort; the operator scenario checks it is gone.
    if (acl.operation === "DELETE") return /left its throw-away consumer group .* behind/;
    // kafkajs turns FindCoordinator's GROUP_AUTHORIZATION_FAILED into "Failed to find group coordinator"
    // (brokerPool.withBroker swallows the error); the overview silently leaves out groups it may not describe.
    if (acl.operation === "DESCRIBE") {
      return /GROUP_AUTHORIZATION_FAILED|Failed to find group coordinator|does not show group/;
    }
    // READ on the redrive group: kafkajs's admin.setOffsets hangs instead of failing (see the operator job).
    return /GROUP_AUTHORIZATION_FAILED|timed out after \d+ ms waiting for dlq redrive/;
  }
  const name = acl.patternType === "PREFIXED" ? `${acl.resourceName}[^"]*` : acl.resourceName;
  if (acl.operation === "DESCRIBE") {
    // Kafka answers "all topics" Metadata with only the topics one may describe: a missing DescribeTopic there looks
    // like a missing topic (the harness and the topics overview say so, naming it).
    return new RegExp(
      `TOPIC_AUTHORIZATION_FAILED|topic "${name}" does not exist|does not show topic "${name}"|waiting for topic setup`,
    );
  }
  return /TOPIC_AUTHORIZATION_FAILED/;
}

interface Row {
  readonly component: Component;
  readonly removed: Grant;
  readonly principal: string;
  readonly grants: PrincipalGrants;
  readonly why: string | undefined;
}

const ROWS: Row[] = COMPONENTS.flatMap((component) => {
  const { grants } = ROLES[component];
  const unique = [...new Map(grants.grants.map((g) => [grantLabel(g), g])).values()];
  return unique.map((removed, i) => ({
    component,
    removed,
    principal: `${COMPONENT_PRINCIPALS[component]}-without-${i}`,
    grants: principalGrants(grants.grants.filter((g) => grantLabel(g) !== grantLabel(removed))),
    why: notExercised(component, removed),
  }));
});

// ---------------------------------------------------------------------------------------------------------------
// The broker, its users and ACLs

const ADMIN = "admin";
const password = () => randomBytes(12).toString("base64url");
const passwords = new Map<string, string>();
const principals = new Map<string, PrincipalGrants>([
  ...COMPONENTS.map((c) => [COMPONENT_PRINCIPALS[c], ROLES[c].grants] as const),
  ...ROWS.map((row) => [row.principal, row.grants] as const),
]);
// Two more for the idempotent-write check: WRITE on one topic only, and WRITE on every topic.
const topicWriter: AclBinding[] = [
  { resourceType: "TOPIC", resourceName: SOURCE, patternType: "LITERAL", operation: "WRITE", permission: "ALLOW" },
  { resourceType: "TOPIC", resourceName: SOURCE, patternType: "LITERAL", operation: "DESCRIBE", permission: "ALLOW" },
];
const extraAcls = new Map<string, AclBinding[]>([
  ["writes-one-topic", topicWriter],
  ["writes-every-topic", topicWriter.map((acl) => (acl.operation === "WRITE" ? { ...acl, resourceName: "*" } : acl))],
]);
// A principal exists as a SCRAM user only if its role may Connect: that is what Connect means on MSK.
const users: Record<string, string> = { [ADMIN]: password() };
for (const [name, grants] of principals) if (grants.connect) users[name] = password();
for (const name of extraAcls.keys()) users[name] = password();
for (const [name, value] of Object.entries(users)) passwords.set(name, value);

let broker: EmbeddedKafka;
let admin: Admin;
const timings: Record<string, number> = {};

const kafkaAs = (user: string, clientId = user): Kafka =>
  createKafka({
    brokers: [broker.brokers],
    clientId,
    sasl: { mechanism: "scram-sha-512", username: user, password: passwords.get(user) ?? "no-such-user" },
    retries: 2,
  });

/** The connection settings a component reads from its environment, for `user`. */
const scramEnv = (user: string): Record<string, string> => ({
  KAFKA_BROKERS: broker.brokers,
  KAFKA_AUTH: "scram",
  KAFKA_TLS: "false",
  KAFKA_SASL_USERNAME: user,
  KAFKA_SASL_PASSWORD: passwords.get(user) ?? "no-such-user",
});

beforeAll(async () => {
  const started = Date.now();
  broker = new EmbeddedKafka({ heap: "512m", authorization: { users, superUser: ADMIN } });
  await broker.start();
  timings.brokerStartMs = Date.now() - started;
  admin = kafkaAs(ADMIN).admin();
  await admin.connect();
  const acls = new Map<string, readonly AclBinding[]>([...principals].map(([name, g]) => [name, g.acls]));
  for (const [name, list] of extraAcls) acls.set(name, list);
  const applying = Date.now();
  await applyAcls(admin, acls);
  timings.aclsMs = Date.now() - applying;
  timings.acls = [...acls.values()].reduce((n, list) => n + list.length, 0);
}, 180_000);

afterAll(async () => {
  await admin?.disconnect();
  await broker?.destroy();
  console.error(`authorization: ${JSON.stringify(timings)}`);
});

// ---------------------------------------------------------------------------------------------------------------
// Each component's job, as the given principal; each throws when the job cannot be done

/** Every message, type and name along an error's causes: what the assertions look at. */
function errorText(error: unknown): string {
  const parts: string[] = [];
  const seen = new Set<unknown>();
  const visit = (e: unknown, depth: number) => {
    if (!e || typeof e !== "object" || seen.has(e) || depth > 8) return;
    seen.add(e);
    const { name, type, message, cause, originalError, errors } = e as Record<string, unknown>;
    parts.push([name, type, message].filter((p) => p !== undefined).join(" "));
    visit(cause, depth + 1);
    visit(originalError, depth + 1);
    if (Array.isArray(errors)) for (const inner of errors) visit(inner, depth + 1);
  };
  visit(error, 0);
  return parts.join(" <- ");
}

/** The first failure reported from the side (a consumer crash, a failed invocation), raced against the work. */
function failureSlot() {
  let fail: (error: unknown) => void = () => {};
  const failure = new Promise<never>((_, reject) => {
    fail = reject;
  });
  failure.catch(() => {});
  return { fail, race: <T>(work: Promise<T>): Promise<T> => Promise.race([work, failure]) };
}

/** A Kafka client whose consumers report a crash (kafkajs otherwise only logs it and the group never joins). */
function watchingConsumers(kafka: Kafka, onCrash: (error: Error) => void): Kafka {
  return new Proxy(kafka, {
    get(target, property) {
      if (property === "consumer") {
        return (config: Parameters<Kafka["consumer"]>[0]): Consumer => {
          const consumer = target.consumer(config);
          consumer.on(consumer.events.CRASH, (event) => onCrash(event.payload.error));
          return consumer;
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

async function endOffset(admin: Admin, topic: string): Promise<number> {
  return (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high), 0);
}

async function produceAsAdmin(
  topic: string,
  messages: { key: string; value: string; headers?: Record<string, string> }[],
): Promise<void> {
  const producer = createProducer(kafkaAs(ADMIN, "setup"), 5);
  await producer.connect();
  try {
    await producer.send({ topic, acks: -1, messages });
  } finally {
    await producer.disconnect();
  }
}

/** The processor group's lag on the source topic (-1 while it has committed nothing). */
async function sourceLag(admin: Admin): Promise<number> {
  const ends = await admin.fetchTopicOffsets(SOURCE);
  const [committed] = await admin.fetchOffsets({ groupId: GROUP, topics: [SOURCE] });
  let lag = 0;
  for (const end of ends) {
    const at = Number(committed?.partitions.find((p) => p.partition === end.partition)?.offset ?? -1);
    if (at < 0 && Number(end.high) > Number(end.low)) return -1;
    lag += Number(end.high) - Math.max(at, Number(end.low));
  }
  return lag;
}

/** The stack's topics, as the template creates them, each partition with a leader. */
async function ensurePipelineTopics(admin: Admin): Promise<void> {
  await ensureTopics(
    kafkaAs(ADMIN, "setup"),
    topicSpecs.map((t) => ({ topic: t.Name, numPartitions: Number(t.Partitions), configs: t.Configs })),
  );
  // Leaders in the metadata first, then every partition answering ListOffsets (right after topic setup created or
  // grew them, the broker may still say NOT_LEADER_FOR_PARTITION for a moment).
  await waitUntil(async () => {
    try {
      const { topics } = await admin.fetchTopicMetadata({ topics: topicNames });
      if (!topics.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))) return false;
      for (const topic of topicNames) await admin.fetchTopicOffsets(topic);
      return true;
    } catch {
      return false;
    }
  }, 30_000);
}

/** A job: set up as the super user, then `run` as the principal under test (only `run`'s failure counts). */
type Prepare = (admin: Admin) => Promise<(user: string) => Promise<void>>;

/**
 * The processor behind the emulated event source mapping, both as the principal (the function role; the mapping
 * polls and writes its on-failure destination with it too): one valid and one invalid record in, one processed and one
 * dead letter out (through the processor's own sender and createProducer, idempotent or not as that is), and a record
 * the function always fails parked on the failure topic after its retries; offsets committed by the mapping's group.
 */
const processorJob: Prepare = async (admin) => {
  await ensurePipelineTopics(admin);
  const before = {
    processed: await endOffset(admin, PROCESSED),
    deadLetter: await endOffset(admin, DLQ),
    parked: await endOffset(admin, ESM_FAILURES),
  };
  await produceAsAdmin(SOURCE, [
    { key: "valid", value: JSON.stringify(validLogin()) },
    { key: "invalid", value: "not json" },
    { key: "poison", value: JSON.stringify(validLogin()) },
  ]);
  const poison = Buffer.from("poison").toString("base64");
  const hasPoison = (event: MskEvent) => Object.values(event.records).some((rs) => rs.some((r) => r.key === poison));
  return async (user) => {
    const config = loadProcessorConfig({
      ...scramEnv(user),
      SOURCE_TOPIC: SOURCE,
      PROCESSED_TOPIC: PROCESSED,
      DLQ_TOPIC: DLQ,
      PARTIAL_BATCH_RESPONSE: "false",
    });
    const container = containerSender(config);
    const handler = createHandler({ config, getSender: container.getSender });
    const crashed = failureSlot();
    const harness = new MskEventSourceHarness({
      kafka: watchingConsumers(kafkaAs(user, "esm"), crashed.fail),
      bootstrapServers: broker.brokers,
      eventSourceArn: clusterArn(local),
      topic: SOURCE,
      groupId: GROUP,
      batchWindowMs: 50,
      // Bisect isolates the poison record; one retry, then it is parked (any other failure fails the job at once).
      retryAttempts: 1,
      retryBackoffMs: 50,
      onFailureTopic: ESM_FAILURES,
      onFailureTopicError: crashed.fail,
      invoke: async (event) => {
        if (hasPoison(event)) throw new Error("the function always fails this record");
        try {
          return await handler(event, lambdaContext());
        } catch (error) {
          crashed.fail(error);
          throw error;
        }
      },
    });
    try {
      await crashed.race(harness.start());
      const committed = async () => {
        while (
          (await sourceLag(admin)) !== 0 ||
          (await endOffset(admin, PROCESSED)) <= before.processed ||
          (await endOffset(admin, DLQ)) <= before.deadLetter ||
          (await endOffset(admin, ESM_FAILURES)) <= before.parked
        ) {
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      };
      await withTimeout(crashed.race(committed()), 30_000, "the processor to commit its batch");
    } finally {
      await withTimeout(harness.stop(), 15_000, "the harness to stop").catch(() => {});
      await container.close().catch(() => {});
    }
  };
};

/** The generator's send path (its ProducerSlot and sink, acks=all) with one generated record. */
const generatorJob: Prepare = async (admin) => {
  await ensurePipelineTopics(admin);
  const before = await endOffset(admin, SOURCE);
  return async (user) => {
    const slot = producerSlot(kafkaAs(user, "generator"));
    try {
      await kafkaSink(slot, SOURCE).send([new GeneratorModel({ seed: 13 }).next()]);
    } finally {
      await slot.close().catch(() => {});
    }
    if ((await endOffset(admin, SOURCE)) <= before) throw new Error("the generator's record did not arrive");
  };
};

/**
 * The topic-setup custom resource's handler, as CloudFormation calls it, from no topics: Create with one partition
 * each, then Update to the template's partition count (a stack update raising topics.partitions).
 */
const topicSetupJob: Prepare = async (admin) => {
  const existing = (await admin.listTopics()).filter((t) => topicNames.includes(t));
  if (existing.length > 0) {
    await admin.deleteTopics({ topics: existing });
    await waitUntil(async () => !(await admin.listTopics()).some((t) => topicNames.includes(t)), 30_000);
  }
  const event = (type: "Create" | "Update", partitions: (spec: (typeof topicSpecs)[number]) => number) =>
    ({
      RequestType: type,
      LogicalResourceId: "Topics",
      PhysicalResourceId: "topics-Topics",
      ResourceProperties: { Topics: topicSpecs.map((t) => ({ ...t, Partitions: partitions(t) })) },
    }) as unknown as CloudFormationCustomResourceEvent;
  return async (user) => {
    // The handler reads its connection from the environment, as in Lambda.
    const env = scramEnv(user);
    const saved = Object.fromEntries(Object.keys(env).map((name) => [name, process.env[name]]));
    Object.assign(process.env, env);
    try {
      // ensureTopics polls up to 60 s for new topics' partitions, authorization errors included: a deadline.
      const setup = async () => {
        await topicSetupHandler(event("Create", () => 1));
        await topicSetupHandler(event("Update", (t) => Number(t.Partitions)));
      };
      await withTimeout(setup(), 15_000, "topic setup (ensureTopics retries while waiting for partitions)");
    } finally {
      for (const [name, value] of Object.entries(saved)) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
    const metadata = await admin.fetchTopicMetadata({ topics: topicNames });
    for (const spec of topicSpecs) {
      const partitions = metadata.topics.find((t) => t.name === spec.Name)?.partitions.length;
      if (partitions !== Number(spec.Partitions)) {
        throw new Error(`topic "${spec.Name}" has ${partitions} partitions, not ${spec.Partitions}`);
      }
    }
  };
};

const readerGroups = async (admin: Admin) =>
  (await admin.listGroups()).groups.map((g) => g.groupId).filter((g) => g.startsWith("reader-"));

/** The operator's tools: dlq stats, dlq redrive (to the source topic), the topics overview. */
const operatorJob: Prepare = async (admin) => {
  await ensurePipelineTopics(admin);
  const leftovers = await readerGroups(admin);
  if (leftovers.length > 0) await admin.deleteGroups(leftovers);
  // The overview shows the processor group's lag once it has committed something.
  if ((await sourceLag(admin)) < 0) {
    const ends = await admin.fetchTopicOffsets(SOURCE);
    await admin.setOffsets({ groupId: GROUP, topic: SOURCE, partitions: ends.map((e) => ({ ...e, offset: e.low })) });
  }
  await produceAsAdmin(DLQ, [
    { key: "dead", value: "not json", headers: { "error.code": "INVALID_JSON", "error.message": "test" } },
  ]);
  return async (user) => {
    // read-topic.ts and kafkajs's admin.setOffsets read through consumers, which only log a crash (the tools would
    // wait for their idle timeout): the crash fails the job at once.
    const crashed = failureSlot();
    const kafka = watchingConsumers(kafkaAs(user, "operator"), crashed.fail);
    const stats = dlqStats(await crashed.race(readDeadLetters(kafka, DLQ)));
    if (stats.total < 1) throw new Error("dlq stats found no dead letters");
    // kafkajs's admin.setOffsets (redrive's last step) makes a consumer of its own and waits for a fetch that never
    // comes when the group refuses it: redrive would hang, so it gets a deadline.
    const result = await withTimeout(
      crashed.race(redrive(kafka, { from: DLQ, to: SOURCE, group: REDRIVE_GROUP })),
      15_000,
      "dlq redrive (it hangs in kafkajs admin.setOffsets when the group refuses its consumer)",
    );
    if (result.redriven < 1) throw new Error(`redrive redrove nothing: ${JSON.stringify(result.byCode)}`);
    const overview = await topicOverview(kafka);
    for (const topic of [SOURCE, PROCESSED, DLQ]) {
      if (!overview.some((o) => o.topic === topic)) {
        throw new Error(`the topics overview does not show topic "${topic}"`);
      }
    }
    const source = overview.find((o) => o.topic === SOURCE);
    if (!source?.groups.some((g) => g.groupId === GROUP)) {
      throw new Error(`the topics overview does not show group "${GROUP}"'s lag on "${SOURCE}"`);
    }
    const left = await readerGroups(admin);
    if (left.length > 0) throw new Error(`the dlq tool left its throw-away consumer group ${left.join(", ")} behind`);
  };
};

const JOBS: Record<Component, Prepare> = {
  processor: processorJob,
  generator: generatorJob,
  topicSetup: topicSetupJob,
  operator: operatorJob,
};

/** Prepares the component's job (failing the test if that fails), runs it as `user`: its error, or undefined. */
async function runJob(component: Component, user: string): Promise<unknown> {
  const admin = kafkaAs(ADMIN, "setup").admin();
  await admin.connect();
  try {
    const run = await JOBS[component](admin);
    return await outcome(run(user));
  } finally {
    await admin.disconnect();
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function waitUntil(check: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

interface Denial {
  readonly operation: string;
  readonly resourceType: string;
  readonly patternType: string;
  readonly name: string;
  readonly line: string;
}

/** What the broker's authorizer denied `principal` (kafka.authorizer.logger, MskLikeAuthorizer's denials included). */
function denials(principal: string): Denial[] {
  const log = readFileSync(broker.logFile, "utf8");
  const pattern = new RegExp(
    `Principal = User:${principal.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is Denied [Oo]peration = (\\w+) from host = \\S+ on resource = (\\w+):(\\w+):(\\S+)`,
    "g",
  );
  const seen = new Map<string, Denial>();
  for (const m of log.matchAll(pattern)) {
    const [line, operation, resourceType, patternType, name] = m as unknown as string[];
    const denial = { operation, resourceType, patternType, name, line } as Denial;
    seen.set(`${operation} ${resourceType}:${patternType}:${name}`, denial);
  }
  return [...seen.values()];
}

const KAFKA_RESOURCE: Record<AclBinding["resourceType"], string> = {
  TOPIC: "Topic",
  GROUP: "Group",
  CLUSTER: "Cluster",
  TRANSACTIONAL_ID: "TransactionalId",
};

/** Whether a denial is for what `acl` would have allowed. */
function deniedFor(denial: Denial, acl: AclBinding): boolean {
  if (denial.operation !== acl.operation || denial.resourceType !== KAFKA_RESOURCE[acl.resourceType]) return false;
  if (acl.patternType === "PREFIXED") return denial.name.startsWith(acl.resourceName);
  return acl.resourceName === "*" || denial.name === acl.resourceName;
}

const describeDenial = (d: Denial) => `${d.operation} ${d.resourceType}:${d.patternType}:${d.name}`;

/** Runs the job; resolves to the error it failed with, or undefined. */
async function outcome(job: Promise<void>): Promise<unknown> {
  try {
    await job;
    return undefined;
  } catch (error) {
    return error ?? new Error("failed without an error");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The tests. Topic setup first: its rows delete and recreate the topics the others then use.

const ORDER: Component[] = ["topicSetup", "processor", "generator", "operator"];
const matrix: string[] = [];

describe("no way around the authorizer", () => {
  it("refuses unauthenticated clients and unknown users; the super user is the only one without ACLs", async () => {
    const plaintext = createKafka({ brokers: [broker.brokers], clientId: "anonymous", retries: 0 }).admin();
    const anonymous = async () => {
      await plaintext.connect();
      await plaintext.listTopics();
    };
    await expect(withTimeout(anonymous(), 15_000, "a plaintext client")).rejects.toThrow();
    await plaintext.disconnect().catch(() => {});
    const stranger = kafkaAs("stranger").admin();
    await expect(stranger.connect()).rejects.toThrow(/SASL SCRAM SHA512 authentication failed/);
  });

  it("is as strict as MSK about idempotent producers: WRITE on a topic is not enough, WRITE on every topic is", async () => {
    await ensurePipelineTopics(admin);
    const idempotentProducer = (kafka: Kafka) =>
      kafka.producer({
        idempotent: true,
        maxInFlightRequests: 1,
        retry: { retries: 1 },
        allowAutoTopicCreation: false,
      });
    // Apache Kafka's own StandardAuthorizer would let this one through (KIP-679); MSK does not.
    const idempotent = idempotentProducer(kafkaAs("writes-one-topic"));
    const refused = await outcome(idempotent.connect());
    expect(errorText(refused)).toMatch(/CLUSTER_AUTHORIZATION_FAILED/);
    await idempotent.disconnect().catch(() => {});
    const plain = kafkaAs("writes-one-topic").producer({ allowAutoTopicCreation: false });
    await plain.connect();
    await plain.send({ topic: SOURCE, acks: -1, messages: [{ value: "not idempotent" }] });
    await plain.disconnect();
    // "WriteData on all topics" (topic/CLUSTER/UUID/*): MSK's documented exception.
    const everyTopic = idempotentProducer(kafkaAs("writes-every-topic"));
    await everyTopic.connect();
    await everyTopic.send({ topic: SOURCE, acks: -1, messages: [{ value: "idempotent" }] });
    await everyTopic.disconnect();
  });
});

describe("sufficient: each component does its job under exactly its role's grants", () => {
  it.each(ORDER)("%s", async (component) => {
    const started = Date.now();
    const error = await runJob(component, COMPONENT_PRINCIPALS[component]);
    timings[`${component}Ms`] = Date.now() - started;
    expect(errorText(error), `${component} as User:${COMPONENT_PRINCIPALS[component]}`).toBe("");
    expect(denials(COMPONENT_PRINCIPALS[component]).map(describeDenial)).toEqual([]);
  });
});

describe("minimal: without any one grant its component fails, naming what is missing", () => {
  const rows = ORDER.flatMap((component) => ROWS.filter((row) => row.component === component));
  it.each(rows.map((row) => [`${row.component}: ${grantLabel(row.removed)}`, row] as const))("%s", async (_, row) => {
    const error = await runJob(row.component, row.principal);
    const text = errorText(error);
    const denied = denials(row.principal);
    const removedAcl = row.removed.acl;
    const acl = removedAcl ? aclLabel(removedAcl) : "SCRAM user (Connect)";
    const title = `${row.component} | ${grantLabel(row.removed)} | ${acl}`;
    if (row.why) {
      matrix.push(`${title} | not exercised locally: ${row.why}`);
      expect(text, `removing ${grantLabel(row.removed)} was expected to change nothing locally: ${row.why}`).toBe("");
      expect(denied.map(describeDenial)).toEqual([]);
      return;
    }
    const brokerSays = denied.length ? ` [broker denied ${denied.map(describeDenial).join(", ")}]` : "";
    matrix.push(`${title} | fails: ${text.slice(0, 160)}${brokerSays}`);
    expect(text, `${row.component} without ${grantLabel(row.removed)} (${acl})`).toMatch(expectedFailure(row.removed));
    if (/timed out/.test(text)) {
      // The client only hangs; the broker names what it refused.
      expect(
        denied.some((d) => removedAcl && deniedFor(d, removedAcl)),
        `broker denial of ${acl}`,
      ).toBe(true);
    }
    // Whatever the broker denied this principal was the removed grant's: nothing else is missing.
    const unrelated = denied.filter((d) => !removedAcl || !deniedFor(d, removedAcl));
    expect(unrelated.map(describeDenial), `denials other than ${acl}`).toEqual([]);
  });

  afterAll(() => {
    console.error(`authorization matrix (component | removed grant | ACL | outcome):\n${matrix.join("\n")}`);
  });
});
