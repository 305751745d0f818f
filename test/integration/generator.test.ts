/**
 * The generator CLI on a real broker.
 */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { EmbeddedKafka, freePort, REPO_ROOT } from "../../functions/local/embedded-kafka.ts";
import { createKafka } from "../../functions/shared/kafka.ts";
import { ensureTopics } from "../../functions/shared/topics.ts";
import { readTopic, testKafka, waitFor } from "../support/kafka.ts";

const TSX = join(REPO_ROOT, "node_modules", ".bin", "tsx");

function generate(args: string[]) {
  const child = spawn(TSX, [join(REPO_ROOT, "bin", "generate.ts"), ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, exited, output: () => output };
}

describe("npm run generate on a real broker", () => {
  it("lands exactly 5000 records with --count 5000 --rate 2000", async () => {
    const { kafka, brokers } = testKafka("generator-test");
    const topic = `user-login-${randomUUID().slice(0, 8)}`;
    await ensureTopics(kafka, [{ topic, numPartitions: 3 }]);
    const run = generate([
      "--brokers",
      brokers.join(","),
      "--topic",
      topic,
      "--count",
      "5000",
      "--rate",
      "2000",
      "--seed",
      "9",
      "--invalid-ratio",
      "0.1",
    ]);
    expect(await run.exited, run.output()).toBe(0);
    const records = await readTopic(kafka, topic);
    expect(records).toHaveLength(5000);
    expect(run.output()).toMatch(/generator summary: sent 5000, failed 0/);
    expect(records.filter((r) => r.value === null).length).toBeGreaterThan(0);
  });

  it("waits for a broker that starts late, then sends everything", async () => {
    const port = await freePort();
    const run = generate(["--brokers", `127.0.0.1:${port}`, "--count", "300", "--rate", "500"]);
    await waitFor(
      "the generator to report the broker unreachable",
      () => run.output().includes("broker not reachable yet"),
      60_000,
    );
    const broker = new EmbeddedKafka({ port, heap: "512m" });
    try {
      await broker.start();
      const kafka = createKafka({ brokers: [broker.brokers], clientId: "late-broker-test" });
      await ensureTopics(kafka, [{ topic: "user-login", numPartitions: 2 }]);
      expect(await run.exited, run.output()).toBe(0);
      expect(await readTopic(kafka, "user-login")).toHaveLength(300);
      expect(run.output()).toMatch(/generator summary: sent 300, failed 0/);
    } finally {
      run.child.kill("SIGKILL");
      await broker.destroy();
    }
  });

  it("flushes and prints a summary on SIGTERM", async () => {
    const { kafka, brokers } = testKafka("generator-sigterm-test");
    const topic = `user-login-${randomUUID().slice(0, 8)}`;
    await ensureTopics(kafka, [{ topic }]);
    const run = generate(["--brokers", brokers.join(","), "--topic", topic, "--rate", "1000"]);
    await waitFor("records to arrive", async () => (await readTopic(kafka, topic)).length > 0, 60_000, 500);
    run.child.kill("SIGTERM");
    expect(await run.exited).toBe(0);
    const sent = Number(/generator summary: sent (\d+), failed 0/.exec(run.output())?.[1]);
    expect(sent).toBeGreaterThan(0);
    expect(await readTopic(kafka, topic)).toHaveLength(sent);
  });
});
