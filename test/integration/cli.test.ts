/**
 * The command-line tools as a user runs them: separate processes, real files, the shared broker.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { Socket } from "node:net";
import { join } from "node:path";
import { ConfigResourceTypes } from "kafkajs";
import { afterAll, describe, expect, inject, it } from "vitest";
import { REPO_ROOT } from "../../functions/local/embedded-kafka.ts";
import { createKafka } from "../../functions/shared/kafka.ts";
import { createTopicTrio, readTopic, testKafka, waitFor } from "../support/kafka.ts";
import { EVENTS_DIR, loadEvent } from "../support/msk.ts";

const TSX = join(REPO_ROOT, "node_modules", ".bin", "tsx");

function runCli(script: string, args: string[], env: Record<string, string> = {}) {
  return spawnSync(TSX, [join(REPO_ROOT, "bin", script), ...args], {
    encoding: "utf8",
    env: { ...process.env, LOG_LEVEL: "INFO", ...env },
    timeout: 60_000,
  });
}

function startCli(
  script: string,
  args: string[],
  env: Record<string, string>,
): ChildProcess & { output: () => string } {
  const child = spawn(TSX, [join(REPO_ROOT, "bin", script), ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  return Object.assign(child, { output: capture(child) });
}

/** Everything the child writes to stdout and stderr, so far. */
function capture(child: ChildProcess): () => string {
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  return () => output;
}

/**
 * A command as a terminal runs it: in a process group of its own (for `npm run`: npm, sh, tsx and node), so that the
 * test can signal the whole group as Ctrl-C does. Without KAFKA_BROKERS: it starts an embedded broker.
 */
const groups = new Set<{ pgid: number; exited: Promise<unknown> }>();

// A test that failed half-way leaves no run behind: SIGTERM stops each cleanly, its broker too.
afterAll(async () => {
  for (const group of groups) {
    try {
      process.kill(-group.pgid, "SIGTERM");
    } catch {
      continue; // gone already
    }
    await group.exited;
  }
});

function startInGroup(command: string, args: string[]) {
  const env = { ...process.env };
  delete env.KAFKA_BROKERS;
  delete env.MSK_CLUSTER_ARN;
  const child = spawn(command, args, {
    cwd: REPO_ROOT,
    env,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const output = capture(child);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  groups.add({ pgid: child.pid as number, exited });
  return { child, exited, output };
}

/** A terminal's Ctrl-C, twice in quick succession: SIGINT to every process of the group. */
async function doubleCtrlC(pgid: number): Promise<void> {
  process.kill(-pgid, "SIGINT");
  await new Promise((resolve) => setTimeout(resolve, 50));
  process.kill(-pgid, "SIGINT");
}

/** Processes whose command line contains `text`, or (with a number) that are in process group `text`. */
function processes(match: { args: string } | { pgid: number }): string[] {
  const ps = spawnSync("ps", ["-eo", "pid=,pgid=,args="], { encoding: "utf8" }).stdout;
  return ps.split("\n").filter((line) => {
    const [, pgid, args] = /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(line) ?? [];
    return "args" in match ? args?.includes(match.args) : Number(pgid) === match.pgid;
  });
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once("error", () => done(false));
    socket.connect(port, "127.0.0.1", () => done(true));
  });
}

/** After a run: its broker's JVM gone (nothing names its data folder), the folder removed, the port closed. */
async function expectNothingLeft(output: string, pgid: number): Promise<void> {
  const dataDir = /\(log: (\S+)\/server\.log\)/.exec(output)?.[1] as string;
  const port = Number(/127\.0\.0\.1:(\d+)/.exec(output)?.[1]);
  expect(dataDir, output).toMatch(/user-login-kafka-/);
  // The broker may take a moment to be reaped; nothing of the group should outlive npm.
  await waitFor("the run's processes to be gone", () => processes({ args: dataDir }).length === 0, 5000);
  expect(processes({ pgid })).toEqual([]);
  expect(existsSync(dataDir)).toBe(false);
  expect(await accepts(port)).toBe(false);
}

describe("npm run invoke", () => {
  it("prints one JSON line per record that would be produced, in the event's order, with --dry-run", () => {
    const result = runCli("invoke.ts", ["--event", join(EVENTS_DIR, "mixed-batch.json"), "--dry-run"]);
    expect(result.status, result.stderr).toBe(0);
    const lines = result.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    const event = loadEvent("mixed-batch.json");
    const records = Object.values(event.records).flat();
    expect(lines).toHaveLength(records.length);
    lines.forEach((line, i) => {
      const record = records[i];
      expect(line.headers["source.offset"]).toBe(String(record?.offset));
      const sourceKey = record?.key ? Buffer.from(record.key, "base64").toString() : null;
      if (line.topic === "user-login-dlq") {
        expect(line.key).toBe(sourceKey);
        expect(line.valueBase64).toBe(record?.value ?? null);
        expect(line.headers["error.code"]).toMatch(/^(EMPTY_VALUE|INVALID_JSON|SCHEMA_VIOLATION|PROCESSING_ERROR)$/);
      } else {
        expect(line.topic).toBe("processed-user-login");
        const value = JSON.parse(line.value);
        expect(line.key).toBe(sourceKey ?? value.user_id);
        expect(value.created_at).toMatch(/Z$/);
        expect(line.valueBase64).toBeUndefined();
      }
    });
    expect(result.stderr).toContain('"message":"batch done"');
  });

  it("exits non-zero and says what is wrong with a file that is not an MSK event", () => {
    const result = runCli("invoke.ts", ["--event", join(EVENTS_DIR, "not-an-msk-event.json"), "--dry-run"]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/not an MSK event: eventSource must be "aws:kafka"/);
    expect(result.stdout).toBe("");
  });

  it("rejects an unknown flag with the usage", () => {
    const result = runCli("invoke.ts", ["--evnt", "x.json"]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/Unknown option '--evnt'/);
    expect(result.stderr).toContain("usage: npm run invoke");
  });

  it("produces to the broker given by --brokers", async () => {
    const { kafka, brokers } = testKafka("invoke-cli-test");
    const topics = await createTopicTrio(kafka, 2);
    const result = runCli(
      "invoke.ts",
      ["--event", join(EVENTS_DIR, "valid-batch.json"), "--brokers", brokers.join(",")],
      { PROCESSED_TOPIC: topics.processed, DLQ_TOPIC: topics.deadLetter },
    );
    expect(result.status, result.stderr).toBe(0);
    expect(await readTopic(kafka, topics.processed)).toHaveLength(3);
  });
});

describe("npm run kafka", () => {
  it("prints KAFKA_BROKERS once the broker accepts clients, and stops cleanly on SIGINT", async () => {
    const child = startCli("kafka.ts", [], {});
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    await waitFor("KAFKA_BROKERS=", () => /KAFKA_BROKERS=127\.0\.0\.1:\d+\n/.test(child.output()), 90_000);
    const brokers = /KAFKA_BROKERS=(\S+)/.exec(child.output())?.[1] as string;
    const admin = createKafka({ brokers: [brokers], clientId: "kafka-cli-test" }).admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: "smoke" }], waitForLeaders: true });
    expect(await admin.listTopics()).toContain("smoke");
    await admin.disconnect();
    child.kill("SIGINT");
    expect(await exited).toBe(0);
    expect(child.output()).toContain("Kafka stopped.");
  });

  it("survives a terminal's double Ctrl-C: stops the broker cleanly, removes its folder, leaves no process", async () => {
    const run = startInGroup("npm", ["run", "--silent", "kafka"]);
    const pgid = run.child.pid as number;
    await waitFor("Kafka to run", () => run.output().includes("Kafka is running"), 90_000);
    await doubleCtrlC(pgid);
    // The program exits 0 (as the test above shows); npm's sh (dash), having had a SIGINT itself, then ends by
    // SIGINT, and npm with it, as a shell does on Ctrl-C (status 130).
    expect(await run.exited, run.output()).toEqual({ code: null, signal: "SIGINT" });
    expect(run.output()).toContain("Kafka stopped.");
    await expectNothingLeft(run.output(), pgid);
  });
});

describe("npm start", () => {
  it.each([
    ["in this process", []],
    ["in three worker environments (--concurrency 3)", ["--concurrency", "3"]],
  ])(
    "runs generator, harness and handler (%s) on the broker, and stops cleanly on SIGINT with a summary",
    async (_, flags) => {
      const { kafka, brokers } = testKafka("start-cli-test");
      const id = randomUUID().slice(0, 8);
      const env = {
        KAFKA_BROKERS: brokers.join(","),
        SOURCE_TOPIC: `user-login-${id}`,
        PROCESSED_TOPIC: `processed-user-login-${id}`,
        DLQ_TOPIC: `user-login-dlq-${id}`,
      };
      // No console: 8080 may be taken, and the console's own test covers it.
      const child = startCli(
        "start.ts",
        ["--rate", "200", "--batch-window-ms", "100", "--console-port", "0", ...flags],
        env,
      );
      const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
      await waitFor("the pipeline to start", () => child.output().includes("pipeline running"), 60_000);
      await new Promise((resolve) => setTimeout(resolve, 3000));
      child.kill("SIGINT");
      expect(await exited).toBe(0);
      const output = child.output();
      const generated = Number(/generated (\d+) events/.exec(output)?.[1]);
      const committed = Number(/records committed\s+(\d+)/.exec(output)?.[1]);
      expect(generated).toBeGreaterThan(100);
      expect(committed).toBeGreaterThan(0);
      const processed = await readTopic(kafka, env.PROCESSED_TOPIC);
      const dead = await readTopic(kafka, env.DLQ_TOPIC);
      expect(processed.length + dead.length).toBe(committed);
      expect(Number(/processed\s+(\d+)/.exec(output.slice(output.indexOf("summary:")))?.[1])).toBe(processed.length);
    },
  );

  it("survives a terminal's double Ctrl-C on its embedded broker: summary, exit 0, no broker or process left", async () => {
    // tsx as `npm start` runs it (npm's own layers are in the npm run kafka test): its status is the program's.
    const run = startInGroup(TSX, [
      join(REPO_ROOT, "bin", "start.ts"),
      ...["--rate", "100", "--batch-window-ms", "100", "--console-port", "0"],
    ]);
    const pgid = run.child.pid as number;
    await waitFor("the pipeline to start", () => run.output().includes("pipeline running"), 90_000);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    await doubleCtrlC(pgid);
    expect(await run.exited, run.output()).toEqual({ code: 0, signal: null });
    expect(run.output()).toMatch(/generated \d+ events/);
    expect(run.output()).toContain("summary:");
    expect(run.output()).toContain("SIGINT: already stopping");
    await expectNothingLeft(run.output(), pgid);
  });

  it("rejects a bad flag value naming the flag", () => {
    const result = runCli("start.ts", ["--rate", "fast"]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/--rate must be a number from 0.1 to 100000, got "fast"/);
  });
});

describe("npm run harness", () => {
  it.each([
    [["--bisect", "--no-bisect"], /--bisect and --no-bisect contradict each other: give one/],
    [["--max-record-age-s", "30"], /--max-record-age-s must be -1 or from 60 to 604800, got "30"/],
    [["--retry-attempts=-2"], /--retry-attempts must be a whole number from -1 to 10000, got "-2"/],
    [["--timeout-s", "901"], /--timeout-s must be a whole number from 1 to 900, got "901"/],
    [["--concurrency", "6"], /--concurrency must be a whole number from 1 to 5, got "6"/],
    [["--on-failure-topic", ""], /--on-failure-topic needs a topic name, or "none"/],
    [
      ["--report-batch-item-failures", "--no-report-batch-item-failures"],
      /--report-batch-item-failures and --no-report-batch-item-failures contradict each other/,
    ],
  ])("rejects %j before connecting, naming the flag", (args, message) => {
    // An unreachable broker: the flags must fail first, without a connection attempt.
    const result = runCli("harness.ts", ["--brokers", "127.0.0.1:1", ...args]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(message);
  });

  it("refuses a handler that cannot be loaded at start, with --concurrency above 1 as with 1", () => {
    for (const concurrency of ["1", "2"]) {
      const result = runCli("harness.ts", [
        "--brokers",
        inject("kafkaBrokers"),
        "--topic",
        "user-login-esm-failures",
        "--handler",
        "functions/processor/no-such-handler.ts",
        "--concurrency",
        concurrency,
      ]);
      expect(result.status, result.stderr).not.toBe(0);
      expect(result.stderr).toMatch(/no-such-handler/);
    }
  });

  it("refuses a missing on-failure topic at start, naming the fix", () => {
    const result = runCli("harness.ts", [
      "--brokers",
      inject("kafkaBrokers"),
      "--topic",
      "user-login-esm-failures",
      "--on-failure-topic",
      `missing-${randomUUID().slice(0, 8)}`,
    ]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(
      /on-failure topic "missing-\w+" does not exist .*create it \(npm run topics -- --create\)/,
    );
  });
});

describe("npm run topics -- --create", () => {
  it("creates the three topics with their max.message.bytes (the DLQ's twice the others'), and is idempotent", async () => {
    const { kafka, brokers } = testKafka("topics-cli-test");
    // Unique names: other tests use the default ones on the shared broker.
    const id = randomUUID().slice(0, 8);
    const env = {
      SOURCE_TOPIC: `user-login-${id}`,
      PROCESSED_TOPIC: `processed-user-login-${id}`,
      DLQ_TOPIC: `user-login-dlq-${id}`,
    };
    const args = ["--brokers", brokers.join(","), "--create", "--partitions", "2", "--json"];
    const result = runCli("topics.ts", args, env);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toContain(`created topics: ${Object.values(env).join(", ")}`);
    const overview = JSON.stringify(JSON.parse(result.stdout));
    for (const topic of Object.values(env)) expect(overview).toContain(topic);

    const admin = kafka.admin();
    await admin.connect();
    try {
      const described = await admin.describeConfigs({
        includeSynonyms: false,
        resources: Object.values(env).map((name) => ({
          type: ConfigResourceTypes.TOPIC,
          name,
          configNames: ["max.message.bytes"],
        })),
      });
      const limits = Object.fromEntries(
        described.resources.map((resource) => [
          resource.resourceName,
          resource.configEntries.find((entry) => entry.configName === "max.message.bytes")?.configValue,
        ]),
      );
      expect(limits).toEqual({
        [env.SOURCE_TOPIC]: "1048588",
        [env.PROCESSED_TOPIC]: "1048588",
        [env.DLQ_TOPIC]: "2097152",
      });
      const metadata = await admin.fetchTopicMetadata({ topics: Object.values(env) });
      expect(Object.fromEntries(metadata.topics.map((t) => [t.name, t.partitions.length]))).toEqual({
        [env.SOURCE_TOPIC]: 2,
        [env.PROCESSED_TOPIC]: 2,
        [env.DLQ_TOPIC]: 1,
      });
    } finally {
      await admin.disconnect();
    }

    const again = runCli("topics.ts", args, env);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stderr).toContain("topics already exist");
  });
});
