/**
 * The generator's producer loop: a steady rate from an absolute schedule (a token bucket holding at most one second
 * of backlog, so no drift over hours and no burst after an outage), batched sends, retries with backoff while the
 * broker is unreachable, and a summary of what was sent.
 */
import type { GeneratedRecord, GeneratorModel, RecordKind } from "./model.ts";

/** Where records go: Kafka, or stdout for --dry-run. Throws when a batch could not be written. */
export interface RecordSink {
  send(records: readonly GeneratedRecord[]): Promise<void>;
}

export interface RunOptions {
  readonly model: GeneratorModel;
  readonly sink: RecordSink;
  /** Records per second. */
  readonly rate: number;
  /** Stop after this many records. @default no limit */
  readonly count?: number;
  /** Stop after this long. @default no limit */
  readonly durationMs?: number;
  /** Stops the loop; the batch in flight is finished first. */
  readonly signal: AbortSignal;
  /** Largest batch per send. @default rate / 20, between 1 and 5000 */
  readonly maxBatch?: number;
  /** Backoff after a failed send: first delay, doubled up to maxRetryMs. @default 250 */
  readonly retryMs?: number;
  /** @default 5000 */
  readonly maxRetryMs?: number;
  readonly log?: (message: string) => void;
}

export interface RunSummary {
  sent: number;
  failed: number;
  byKind: Partial<Record<RecordKind, number>>;
  elapsedMs: number;
  /** Achieved records per second. */
  rate: number;
}

/** Resolves after `ms`, or at once when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

export async function runGenerator(options: RunOptions): Promise<RunSummary> {
  const { model, sink, rate, signal } = options;
  const log = options.log ?? (() => {});
  const maxBatch = options.maxBatch ?? Math.min(5000, Math.max(1, Math.ceil(rate / 20)));
  const limit = options.count ?? Number.POSITIVE_INFINITY;
  const summary: RunSummary = { sent: 0, failed: 0, byKind: {}, elapsedMs: 0, rate: 0 };
  const started = performance.now();
  let scheduleStart = started;
  let produced = 0;

  while (!signal.aborted && produced < limit) {
    const now = performance.now();
    if (options.durationMs !== undefined && now - started >= options.durationMs) break;
    let due = Math.min(limit, Math.floor(((now - scheduleStart) / 1000) * rate));
    if (due - produced > Math.max(1, rate)) {
      // More than a second behind (the broker was away): drop the backlog instead of bursting to catch up.
      scheduleStart = now - ((produced + rate) / rate) * 1000;
      due = produced + Math.floor(rate);
    }
    const n = Math.min(due - produced, maxBatch);
    if (n <= 0) {
      const nextAt = scheduleStart + ((produced + 1) / rate) * 1000;
      await sleep(Math.max(1, nextAt - now), signal);
      continue;
    }
    const batch = Array.from({ length: n }, () => model.next());
    produced += n;
    let delay = options.retryMs ?? 250;
    for (;;) {
      try {
        await sink.send(batch);
        summary.sent += n;
        for (const record of batch) summary.byKind[record.kind] = (summary.byKind[record.kind] ?? 0) + 1;
        break;
      } catch (error) {
        if (signal.aborted) {
          summary.failed += n;
          break;
        }
        log(`send failed (${(error as Error).message}); retrying in ${delay} ms`);
        await sleep(delay, signal);
        delay = Math.min(delay * 2, options.maxRetryMs ?? 5000);
      }
    }
  }
  summary.elapsedMs = Math.round(performance.now() - started);
  summary.rate = summary.elapsedMs > 0 ? Math.round((summary.sent * 1000) / summary.elapsedMs) : 0;
  return summary;
}

/** The --dry-run sink: one JSON line per record, `{"key", "value"}` or `{"key", "valueBase64"}` for bytes. */
export function dryRunSink(write: (text: string) => void): RecordSink {
  return {
    async send(records) {
      let text = "";
      for (const record of records) {
        const line =
          record.value instanceof Buffer
            ? { key: record.key, valueBase64: record.value.toString("base64") }
            : { key: record.key, value: record.value };
        text += `${JSON.stringify(line)}\n`;
      }
      write(text);
    },
  };
}
