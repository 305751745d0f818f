/**
 * `npm run soak -- --chaos` as a user runs it: a process of its own, with its own broker and fault proxy, a few seeded
 * schedules, the per-fault-type table and the verdict line.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { afterAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../../functions/local/embedded-kafka.ts";

let child: ChildProcess | undefined;

afterAll(() => {
  // Still running (the test failed or timed out): SIGTERM to its process group; the soak takes its broker down.
  if (child?.pid && child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {}
  }
});

describe("npm run soak -- --chaos", () => {
  it("runs seeded schedules for the given minutes and ends with the table and VERDICT: PASS", {
    timeout: 180_000,
  }, async () => {
    const { KAFKA_BROKERS: _ignored, ...env } = process.env;
    child = spawn("npm", ["run", "--silent", "soak", "--", "--chaos", "--minutes", "0.2", "--seed", "8"], {
      cwd: REPO_ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    let output = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => child?.once("exit", (exit) => resolve(exit)));
    expect(output).toMatch(/^seed 8 connections-dropped: .* -> OK$/m);
    expect(output).toMatch(
      /^type\s+schedules\s+failed\s+inputs\s+resent\s+outputs\s+missing\s+orphans\s+duplicates\s+fired$/m,
    );
    expect(output).toMatch(/^total\s+\d+\s+0\s+\d+/m);
    expect(output).toMatch(/^VERDICT: PASS \(\d+ schedules, \d+ inputs, 0 missing, \d+ duplicates\)$/m);
    expect(code, output).toBe(0);
  });

  it("refuses to run against KAFKA_BROKERS, which it cannot put a proxy in front of", async () => {
    const refused = spawn("npm", ["run", "--silent", "soak", "--", "--chaos", "--minutes", "0.2"], {
      cwd: REPO_ROOT,
      env: { ...process.env, KAFKA_BROKERS: "127.0.0.1:9" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    refused.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => refused.once("exit", (exit) => resolve(exit)));
    expect(output).toMatch(/--chaos .* unset KAFKA_BROKERS/);
    expect(code).toBe(2);
  });
});
