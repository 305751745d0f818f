// Runs in a fresh Node process for the benchmark: imports the bundled handler, runs one event, reports timings.
//   node bench/child.mjs BUNDLE EVENT_FILE   (env: KAFKA_BROKERS, topics)
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";

/**
 * This process's peak resident set. On Linux, getrusage's ru_maxrss (process.resourceUsage().maxRSS) starts from the
 * parent's RSS at fork, so a large benchmark process would be reported as the child's peak; /proc's VmHWM is the
 * exec'd process's own.
 */
function peakRssMb() {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
    if (match) return Number(match[1]) / 1024;
  } catch {
    // not Linux
  }
  return process.resourceUsage().maxRSS / 1024;
}

const [bundle, eventFile] = process.argv.slice(2);
const event = JSON.parse(readFileSync(eventFile, "utf8"));
const rssBefore = process.memoryUsage().rss;
const started = performance.now();
const module = await import(pathToFileURL(bundle).href);
const imported = performance.now();
const context = { functionName: "bench", awsRequestId: "bench", getRemainingTimeInMillis: () => 60_000 };
const cpuBefore = process.cpuUsage();
const response = await module.handler(event, context);
const done = performance.now();
const cpu = process.cpuUsage(cpuBefore);
await module.closeProducer?.();
process.stdout.write(
  `${JSON.stringify({
    importMs: imported - started,
    firstEventMs: done - started,
    eventMs: done - imported,
    eventCpuMs: (cpu.user + cpu.system) / 1000,
    written: response.summary.written,
    rssBeforeMb: rssBefore / 2 ** 20,
    maxRssMb: peakRssMb(),
  })}\n`,
);
process.exit(0);
