/**
 * SIGINT and SIGTERM for a program that shuts down cleanly (the CLIs and the generator's container).
 *
 * One Ctrl-C can arrive two or three times: the terminal signals the whole process group, and npm and tsx relay the
 * signal to their child as well. So only the first signal starts the shutdown; the later ones do not interrupt it
 * (one stderr line says so). The handlers stay for the rest of the process's life: without any, tsx's own handler
 * would exit the process at the next signal, mid-shutdown. A repeated signal `forceAfterMs` or more after the first
 * is a user insisting: it forces the exit (130); brokers started by the process are still stopped then, by
 * EmbeddedKafka's exit hook.
 */
export interface ShutdownSignalOptions {
  /** Called once, at the first SIGINT or SIGTERM: start the clean shutdown here. */
  readonly onSignal: (signal: NodeJS.Signals) => void;
  /** A repeated signal this long after the first forces the exit; Infinity never. @default 5000 */
  readonly forceAfterMs?: number;
  /** Last words before a forced exit (the summary so far); must be synchronous. */
  readonly onForce?: (signal: NodeJS.Signals) => void;
  /** @default a line on stderr */
  readonly log?: (line: string) => void;
}

export const FORCE_AFTER_MS = 5000;

export function onShutdownSignals(options: ShutdownSignalOptions): void {
  const forceAfterMs = options.forceAfterMs ?? FORCE_AFTER_MS;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  let first: number | undefined;
  let acknowledged = 0;
  const handle = (signal: NodeJS.Signals) => {
    const now = Date.now();
    if (first === undefined) {
      first = now;
      options.onSignal(signal);
      return;
    }
    if (now - first >= forceAfterMs) {
      log(`${signal} again: forcing the exit`);
      options.onForce?.(signal);
      process.exit(130);
    }
    // The duplicates of one Ctrl-C come within milliseconds: one line for them.
    if (now - acknowledged < 1000) return;
    acknowledged = now;
    const force = Number.isFinite(forceAfterMs) ? `; again after ${Math.round(forceAfterMs / 1000)} s forces it` : "";
    log(`${signal}: already stopping, cleanly${force}`);
  };
  process.on("SIGINT", handle);
  process.on("SIGTERM", handle);
}
