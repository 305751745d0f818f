/**
 * npm start [-- flags]
 * The whole local pipeline: an embedded Kafka broker (or KAFKA_BROKERS), the three topics, a generator of
 * real-shaped user-login events, and the processor handler behind the emulated MSK event source mapping.
 * Ctrl-C stops everything cleanly and prints a summary; repeated Ctrl-C does not interrupt that (again after 5 s forces
 * the exit, still with the summary and without leaving the broker).
 *
 * With --enforce-iam the stack is synthesized (no bundling), its IAM policies become Kafka ACLs
 * (functions/local/iam-acl.ts) on an embedded broker that authenticates and authorizes like MSK, and each component
 * connects as its role's own SCRAM principal: topic setup creates the topics, the event source mapping and the
 * processor run as the function role, the generator as its task role.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { App } from "aws-cdk-lib";
import type { Kafka } from "kafkajs";
import { harnessSource } from "../functions/console/pipeline-metrics.ts";
import {
  ConsolePortInUseError,
  type ConsoleServer,
  checkPortFree,
  exposureWarning,
  startConsole,
} from "../functions/console/server.ts";
import { kafkaSink, producerSlot } from "../functions/generator/main.ts";
import { GeneratorModel } from "../functions/generator/model.ts";
import { runGenerator } from "../functions/generator/run.ts";
import { EmbeddedKafka, REPO_ROOT } from "../functions/local/embedded-kafka.ts";
import { MAX_BATCH_SIZE, MAX_POLLER_CONCURRENCY, MskEventSourceHarness } from "../functions/local/harness.ts";
import {
  type AclBinding,
  applyAcls,
  type CfnTemplate,
  COMPONENT_PRINCIPALS,
  type Component,
  clusterArn,
  grantLabel,
  type LocalCluster,
  operatorPolicy,
  type PrincipalGrants,
  policyGrants,
  principalGrants,
  stackComponents,
  templateCluster,
  templateRoleGrants,
} from "../functions/local/iam-acl.ts";
import { startProgress, summaryText } from "../functions/local/progress.ts";
import { harnessFunction } from "../functions/local/worker-environment.ts";
import { loadConnectionConfig, loadTopics } from "../functions/shared/config.ts";
import { ESM_DEFAULTS } from "../functions/shared/esm.ts";
import { connectKafka } from "../functions/shared/kafka.ts";
import { setLogLevel } from "../functions/shared/log.ts";
import { pipelineTopicSpecs } from "../functions/shared/topic-settings.ts";
import { ensureTopics } from "../functions/shared/topics.ts";
import { UserLoginPipelineStack } from "../lib/pipeline-stack.ts";
import { intFlag, numberFlag, parseFlags, runMain, UsageError, untilSignal } from "./cli.ts";

const USAGE = `usage: npm start -- [flags]
  --rate N             events generated per second (default: 2, as the original generator)
  --invalid-ratio R    share of deliberately bad records, 0..1 (default: 0; see npm run generate -- --help)
  --partitions N       partitions of each topic it creates (default: 3)
  --batch-size N       records per invocation, 1..${MAX_BATCH_SIZE} (default: 100)
  --batch-window-ms N  longest wait to fill a batch (default: 500)
  --concurrency N      invocations at once, each on other partitions, 1..${MAX_POLLER_CONCURRENCY}; above 1 each runs in an
                       execution environment of its own, a worker thread (default: 1, in this process)
  --console-port N     serve the web console on this port (default: 8080; 0 turns it off)
  --console-host H     address the console binds (default: 127.0.0.1; anything else is reachable from other machines)
  --enforce-iam        the embedded broker enforces the stack's IAM policies as ACLs (synthesized from lib/), and each
                       component connects as its own role's principal (SCRAM); prints which role each runs as
Uses KAFKA_BROKERS when set; otherwise starts an embedded Kafka broker.`;

type Env = Record<string, string | undefined>;

/** The stack as `cdk synth` would make it (cdk.json's context), without bundling any code: only the template counts. */
function synthesizeTemplate(): CfnTemplate {
  const outdir = mkdtempSync(join(tmpdir(), "enforce-iam-cdk-"));
  try {
    const cdkJson = JSON.parse(readFileSync(join(REPO_ROOT, "cdk.json"), "utf8")) as { context?: object };
    const app = new App({ outdir, context: { ...cdkJson.context, "aws:cdk:bundling-stacks": [] } });
    const stack = new UserLoginPipelineStack(app, "UserLoginPipeline", { env: LOCAL_ENV });
    return app.synth().getStackByName(stack.stackName).template as CfnTemplate;
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

const LOCAL_ENV = { account: "000000000000", region: "us-east-1" };
const SUPER_USER = "admin";

/** "CreateTopic, DescribeTopic on topic a, b; Connect on cluster": a role's grants on one line. */
function compactGrants(grants: PrincipalGrants): string {
  const byResources = new Map<string, string[]>();
  const byAction = new Map<string, string[]>();
  for (const grant of grants.grants) {
    const [action, resource] = grantLabel(grant).split(" on ") as [string, string];
    byAction.set(action, [...(byAction.get(action) ?? []), resource]);
  }
  for (const [action, resources] of byAction) {
    const kind = resources[0]?.split(" ")[0] ?? "";
    const names = resources.map((r) => r.slice(kind.length + 1)).filter(Boolean);
    const key = names.length ? `${kind} ${names.join(", ")}` : kind;
    byResources.set(key, [...(byResources.get(key) ?? []), action]);
  }
  return [...byResources].map(([resources, actions]) => `${actions.join(", ")} on ${resources}`).join("; ");
}

interface Identity {
  readonly principal: string;
  readonly password: string;
  readonly role: string;
  readonly grants: PrincipalGrants;
}

/**
 * --enforce-iam: the stack's roles (and the operator's policy) as principals with their ACLs, on an authorizing
 * embedded broker. Returns the broker and each component's connection environment.
 */
async function enforceIam(
  topics: { source: string; processed: string; deadLetter: string },
  log: (line: string) => void,
): Promise<{ broker: EmbeddedKafka; env: (component: Component) => Env; local: LocalCluster; groupId: string }> {
  const synthesizing = Date.now();
  const template = synthesizeTemplate();
  const synthMs = Date.now() - synthesizing;
  const local = templateCluster(template, LOCAL_ENV);
  const stack = stackComponents(template, local);
  if (!stack.topicSetup)
    throw new UsageError("--enforce-iam expects the default (MSK Serverless) stack, with topic setup");
  const stackTopics = stack.topicSetup.topics.map((t) => t.Name);
  const missing = Object.values(topics).filter((t) => !stackTopics.includes(t));
  if (missing.length > 0) {
    throw new UsageError(
      `--enforce-iam enforces the stack's grants, which name the topics ${stackTopics.join(", ")}; ` +
        `${missing.join(", ")} is not one of them (unset SOURCE_TOPIC, PROCESSED_TOPIC, DLQ_TOPIC)`,
    );
  }
  const roleGrants = templateRoleGrants(template, local);
  const operator = principalGrants(
    policyGrants(
      operatorPolicy(local, {
        source: topics.source,
        processed: topics.processed,
        deadLetter: topics.deadLetter,
        processorGroup: stack.processor.groupId,
        redriveGroup: `${topics.deadLetter}-redrive`,
      }),
      local,
    ),
  );
  const roles: Record<Component, { role: string; grants: PrincipalGrants | undefined }> = {
    topicSetup: {
      role: `${stack.topicSetup.role} (topic-setup custom resource's function)`,
      grants: roleGrants.get(stack.topicSetup.role),
    },
    processor: {
      role: `${stack.processor.role} (processor function; the event source mapping polls as it too)`,
      grants: roleGrants.get(stack.processor.role),
    },
    generator: { role: `${stack.generator.role} (generator ECS task)`, grants: roleGrants.get(stack.generator.role) },
    operator: { role: "operatorPolicy() in functions/local/iam-acl.ts (dlq and topics tools)", grants: operator },
  };
  const identities = new Map<Component, Identity>();
  for (const [component, { role, grants }] of Object.entries(roles) as [Component, (typeof roles)[Component]][]) {
    if (!grants?.connect) throw new UsageError(`${role} may not kafka-cluster:Connect: the ${component} cannot run`);
    identities.set(component, {
      principal: COMPONENT_PRINCIPALS[component],
      password: randomBytes(12).toString("base64url"),
      role,
      grants,
    });
  }
  const superPassword = randomBytes(12).toString("base64url");
  const users = Object.fromEntries([
    [SUPER_USER, superPassword],
    ...[...identities.values()].map((i) => [i.principal, i.password]),
  ]);
  const broker = new EmbeddedKafka({ log, authorization: { users, superUser: SUPER_USER } });
  log("starting the embedded Kafka broker (authorizing like MSK IAM access control)...");
  await broker.start();
  const scram = (principal: string, password: string): Env => ({
    KAFKA_BROKERS: broker.brokers,
    KAFKA_AUTH: "scram",
    KAFKA_TLS: "false",
    KAFKA_SASL_USERNAME: principal,
    KAFKA_SASL_PASSWORD: password,
    KAFKA_SASL_SECRET_ARN: undefined,
    MSK_CLUSTER_ARN: undefined,
  });
  const { kafka: adminKafka } = await connectKafka(
    loadConnectionConfig(scram(SUPER_USER, superPassword)),
    "enforce-iam-setup",
  );
  const admin = adminKafka.admin();
  await admin.connect();
  try {
    await applyAcls(
      admin,
      new Map<string, readonly AclBinding[]>([...identities.values()].map((i) => [i.principal, i.grants.acls])),
    );
  } finally {
    await admin.disconnect();
  }
  log(`--enforce-iam: the stack's IAM policies as ACLs (template synthesized in ${(synthMs / 1000).toFixed(1)} s):`);
  for (const [component, identity] of identities) {
    log(`  ${component.padEnd(10)} as User:${identity.principal}: ${identity.role}`);
    log(`  ${"".padEnd(10)}   ${compactGrants(identity.grants)}`);
  }
  const op = identities.get("operator") as Identity;
  log(
    `  the dlq and topics tools as the operator: KAFKA_BROKERS=${broker.brokers} KAFKA_AUTH=scram KAFKA_TLS=false ` +
      `KAFKA_SASL_USERNAME=${op.principal} KAFKA_SASL_PASSWORD=${op.password} npm run dlq -- stats`,
  );
  const env = (component: Component): Env => {
    const identity = identities.get(component) as Identity;
    return { ...process.env, ...scram(identity.principal, identity.password) };
  };
  return { broker, env, local, groupId: stack.processor.groupId };
}

runMain(async () => {
  const flags = parseFlags(
    process.argv.slice(2),
    {
      rate: { type: "string" },
      "invalid-ratio": { type: "string" },
      partitions: { type: "string" },
      "batch-size": { type: "string" },
      "batch-window-ms": { type: "string" },
      concurrency: { type: "string" },
      "enforce-iam": { type: "boolean" },
      "console-port": { type: "string" },
      "console-host": { type: "string" },
    },
    USAGE,
  );
  if (flags.help) return void console.log(USAGE);
  // The live progress line says what happens; per-batch logs would bury it. LOG_LEVEL=INFO shows them.
  if (!process.env.LOG_LEVEL) setLogLevel("ERROR");
  const rate = numberFlag(flags.rate, "rate", 2, 0.1, 100_000);
  const invalidRatio = numberFlag(flags["invalid-ratio"], "invalid-ratio", 0, 0, 1);
  const partitions = intFlag(flags.partitions, "partitions", 3, 1, 1000);
  const batchSize = intFlag(flags["batch-size"], "batch-size", 100, 1, MAX_BATCH_SIZE);
  const batchWindowMs = intFlag(flags["batch-window-ms"], "batch-window-ms", 500, 0, 300_000);
  const concurrency = intFlag(flags.concurrency, "concurrency", 1, 1, MAX_POLLER_CONCURRENCY);
  const topics = loadTopics(process.env);
  const consolePort = intFlag(flags["console-port"], "console-port", 8080, 0, 65535);
  const consoleHost = flags["console-host"] ?? "127.0.0.1";
  const portInUse = (error: unknown) => {
    if (!(error instanceof ConsolePortInUseError)) throw error;
    throw new UsageError(`${error.message}: choose another with --console-port N (0 turns the console off)`);
  };
  // Before the broker starts: a taken port fails the start at once.
  if (consolePort > 0) await checkPortFree(consoleHost, consolePort).catch(portInUse);
  // A forced Ctrl-C (again, 5 s after the first) still says what was done; the broker goes with the process.
  let summary = () => {};
  const stopping = untilSignal(() => summary());

  let broker: EmbeddedKafka | undefined;
  // Each component's connection settings: one for all, unless --enforce-iam gives each its own principal.
  let envOf: (component: Component) => Env = () => process.env;
  let eventSourceArn: string | undefined;
  let groupId: string | undefined;
  if (flags["enforce-iam"]) {
    if (process.env.KAFKA_BROKERS || process.env.MSK_CLUSTER_ARN) {
      throw new UsageError(
        "--enforce-iam runs its own authorizing embedded broker: unset KAFKA_BROKERS and MSK_CLUSTER_ARN " +
          "(on MSK, IAM enforces the policies itself)",
      );
    }
    const enforced = await enforceIam(topics, (line) => console.error(line));
    broker = enforced.broker;
    envOf = enforced.env;
    eventSourceArn = clusterArn(enforced.local);
    groupId = enforced.groupId;
    console.error(`Kafka is up at ${broker.brokers} (log: ${broker.logFile})`);
  } else if (!process.env.KAFKA_BROKERS && !process.env.MSK_CLUSTER_ARN) {
    broker = new EmbeddedKafka({ log: (line) => console.error(line) });
    console.error("starting the embedded Kafka broker...");
    const env = { ...process.env, KAFKA_BROKERS: await broker.start(), KAFKA_AUTH: "none" };
    envOf = () => env;
    console.error(`Kafka is up at ${broker.brokers} (log: ${broker.logFile})`);
  }
  const connect = async (
    component: Component,
    clientId: string,
  ): Promise<{ kafka: Kafka; brokers: readonly string[] }> =>
    connectKafka(loadConnectionConfig(envOf(component)), clientId);

  // Topics: as the stack's topic setup would create them.
  const { kafka: topicsKafka } = await connect("topicSetup", "user-login-local");
  const created = await ensureTopics(topicsKafka, pipelineTopicSpecs(topics, partitions, ESM_DEFAULTS.onFailureTopic));
  if (created.length > 0) console.error(`created topics: ${created.join(", ")}`);

  // The processor reads its connection from the environment when its module loads, as in Lambda; partial batch
  // responses on, as the stack deploys the function with the event source mapping's ReportBatchItemFailures.
  process.env.PARTIAL_BATCH_RESPONSE ??= String(ESM_DEFAULTS.reportBatchItemFailures);
  if (flags["enforce-iam"]) {
    for (const [name, value] of Object.entries(envOf("processor"))) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  }
  const handler = await harnessFunction(concurrency);
  const { kafka: esmKafka, brokers } = await connect("processor", "user-login-local");
  const harness = new MskEventSourceHarness({
    kafka: esmKafka,
    bootstrapServers: brokers.join(","),
    topic: topics.source,
    groupId,
    // As Lambda does: the event names the cluster the mapping reads (the processor refuses any other).
    eventSourceArn: eventSourceArn ?? loadConnectionConfig(envOf("processor")).clusterArn,
    batchSize,
    batchWindowMs,
    // Retries, bisect, record age, partial batch responses, timeout and on-failure topic: as deployed (ESM_DEFAULTS).
    ...handler.options,
  });
  await harness.start();

  const { kafka } = await connect("generator", "user-login-local");
  const producer = producerSlot(kafka);
  const generatorStop = new AbortController();
  const model = new GeneratorModel({ invalidRatio });
  let generated = 0;
  const sink = kafkaSink(producer, topics.source);
  const generating = runGenerator({
    model,
    rate,
    signal: generatorStop.signal,
    sink: {
      async send(records) {
        await sink.send(records);
        generated += records.length;
      },
    },
  });
  console.error(
    `pipeline running: ${rate} events/s -> ${topics.source} -> processor -> ${topics.processed} | ${topics.deadLetter}. Ctrl-C stops.`,
  );
  // The web console, fed by the harness's live stats (functions/console/); redrive allowed: this is the local pipeline.
  let consoleServer: ConsoleServer | undefined;
  if (consolePort > 0) {
    const { kafka: consoleKafka, brokers: consoleBrokers } = await connect("operator", "user-login-console");
    consoleServer = await startConsole({
      kafka: consoleKafka,
      topics,
      groupId: groupId ?? "user-login-processor",
      pipeline: harnessSource(harness.stats, () => generated),
      host: consoleHost,
      port: consolePort,
      allowRedrive: true,
      cluster: consoleBrokers.join(","),
      log: (line) => console.error(line),
    }).catch(portInUse);
    const warning = exposureWarning(consoleHost, true);
    if (warning) console.error(warning);
    console.error(`console: ${consoleServer.url} (Pipeline, Topics, Dead letters; --console-port 0 turns it off)`);
  }
  const progress = startProgress(harness.stats, () => generated);
  let progressRunning = true;
  const stopProgress = () => {
    if (progressRunning) progress();
    progressRunning = false;
  };
  summary = () => {
    stopProgress();
    console.error(`generated ${generated} events`);
    console.error(summaryText(harness.stats));
  };

  const crash = await Promise.race([stopping.then(() => undefined), generating.then(() => undefined), harness.crashed]);
  generatorStop.abort();
  await generating.catch((error: unknown) => console.error(`generator stopped: ${(error as Error).message}`));
  await producer.close();
  stopProgress();
  console.error("stopping...");
  await consoleServer?.close();
  await harness.stop();
  await handler.close();
  await broker?.destroy();
  summary();
  if (crash) throw new Error(`the event source mapping's Kafka consumer crashed: ${crash.message}`);
});
