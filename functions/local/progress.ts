import type { HarnessStats } from "./harness.ts";

export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** One status line: records in, processed, dead-lettered (share, by code), lag (per partition), age, throughput. */
export function progressLine(stats: HarnessStats, recordsPerSecond: number, generated?: number): string {
  const codes = Object.entries(stats.deadLetteredByCode)
    .map(([code, n]) => `${code}=${n}`)
    .join(" ");
  const handled = stats.processed + stats.deadLettered;
  const share = handled > 0 ? `${((stats.deadLettered * 100) / handled).toFixed(1)}%` : "0%";
  const partitions = Object.entries(stats.lagByPartition);
  const perPartition =
    partitions.length > 1 && partitions.length <= 8
      ? ` [${partitions.map(([id, lag]) => `${id.slice(id.lastIndexOf("-") + 1)}:${lag}`).join(" ")}]`
      : "";
  const p50 = percentile(stats.recentAgesMs, 50);
  const p99 = percentile(stats.recentAgesMs, 99);
  return [
    generated === undefined ? undefined : `generated ${generated}`,
    `in ${stats.recordsCommitted}`,
    `processed ${stats.processed}`,
    `dead-lettered ${stats.deadLettered} (${share}${codes ? ` ${codes}` : ""})`,
    `lag ${stats.lag}${perPartition}`,
    p50 === undefined ? undefined : `age p50 ${p50} ms p99 ${p99} ms`,
    `${recordsPerSecond.toFixed(0)} rec/s`,
    stats.failedInvocations > 0 ? `failed invocations ${stats.failedInvocations}` : undefined,
    stats.parked > 0 ? `parked ${stats.parked}` : undefined,
    stats.discarded > 0 ? `discarded ${stats.discarded}` : undefined,
  ]
    .filter((part) => part !== undefined)
    .join(" | ");
}

/**
 * Prints progress once a second: rewriting one line on a terminal, a line every 10 s otherwise.
 * Returns a function that stops it.
 */
export function startProgress(stats: HarnessStats, generated?: () => number): () => void {
  const tty = process.stderr.isTTY === true;
  let last = stats.recordsCommitted;
  let lastAt = Date.now();
  let ticks = 0;
  const timer = setInterval(() => {
    const now = Date.now();
    const rate = ((stats.recordsCommitted - last) * 1000) / Math.max(1, now - lastAt);
    last = stats.recordsCommitted;
    lastAt = now;
    const line = progressLine(stats, rate, generated?.());
    if (tty) process.stderr.write(`\r\x1b[2K${line}`);
    else if (++ticks % 10 === 0) process.stderr.write(`${line}\n`);
  }, 1000);
  timer.unref();
  return () => {
    clearInterval(timer);
    if (tty) process.stderr.write("\n");
  };
}

export function summaryText(stats: HarnessStats): string {
  return [
    "summary:",
    `  invocations        ${stats.invocations} (${stats.failedInvocations} failed)`,
    `  records committed  ${stats.recordsCommitted} (delivered ${stats.recordsDelivered}, redeliveries included)`,
    `  processed          ${stats.processed}`,
    `  dead-lettered      ${stats.deadLettered} ${JSON.stringify(stats.deadLetteredByCode)}`,
    `  lag                ${stats.lag}`,
    `  esm failures       ${stats.timedOut} timed out, ${stats.bisections} bisections, ${stats.parked} parked ${JSON.stringify(stats.parkedByReason)}, ${stats.discarded} discarded`,
    `  rebalances         ${stats.rebalances} (${stats.withdrawn} records withdrawn before invocation)`,
  ].join("\n");
}
