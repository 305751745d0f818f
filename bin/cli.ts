/**
 * Shared plumbing for the command-line tools: flag parsing with specific errors, and a main() wrapper.
 */
import { parseArgs } from "node:util";
import { onShutdownSignals } from "../functions/shared/signals.ts";

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

type FlagSpec = Record<string, { type: "string" | "boolean"; short?: string }>;

export function parseFlags<T extends FlagSpec>(argv: string[], spec: T, usage: string) {
  try {
    return parseArgs({ args: argv, options: { ...spec, help: { type: "boolean", short: "h" } }, strict: true }).values;
  } catch (error) {
    throw new UsageError(`${(error as Error).message}\n\n${usage}`);
  }
}

export function intFlag(value: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (value.trim() === "" || !Number.isInteger(parsed) || parsed < min || parsed > max) {
    throw new UsageError(`--${name} must be a whole number from ${min} to ${max}, got "${value}"`);
  }
  return parsed;
}

export function numberFlag(
  value: string | undefined,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (value.trim() === "" || !Number.isFinite(parsed) || parsed < min || parsed > max) {
    throw new UsageError(`--${name} must be a number from ${min} to ${max}, got "${value}"`);
  }
  return parsed;
}

export function choiceFlag<C extends string>(
  value: string | undefined,
  name: string,
  choices: readonly C[],
  fallback: C,
): C {
  if (value === undefined) return fallback;
  if (!(choices as readonly string[]).includes(value)) {
    throw new UsageError(`--${name} must be one of ${choices.join(", ")}, got "${value}"`);
  }
  return value as C;
}

/** A `--name` / `--no-name` pair (two boolean flags): which was given, or the fallback; both is an error. */
export function toggleFlag(
  on: boolean | undefined,
  off: boolean | undefined,
  name: string,
  fallback: boolean,
): boolean {
  if (on && off) throw new UsageError(`--${name} and --no-${name} contradict each other: give one`);
  return on ? true : off ? false : fallback;
}

/** An ISO-8601 time or epoch milliseconds, as epoch milliseconds. */
export function timestampFlag(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const ms = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  if (!Number.isFinite(ms))
    throw new UsageError(`--${name} must be an ISO-8601 time or epoch milliseconds, got "${value}"`);
  return ms;
}

/** Runs a CLI's main function: usage errors exit 2, other errors exit 1, each with one clear message on stderr. */
export function runMain(main: () => Promise<void>): void {
  main().catch((error: unknown) => {
    const message = error instanceof Error ? error.message : String(error);
    process.stderr.write(`error: ${message}\n`);
    process.exit(error instanceof UsageError ? 2 : 1);
  });
}

/**
 * Resolves on the first SIGINT or SIGTERM, which starts the clean shutdown; later ones do not interrupt it (see
 * functions/shared/signals.ts: one Ctrl-C arrives more than once under npm and tsx). A repeated signal 5 s or more
 * after the first forces the exit (130), after `onForce` (the summary so far); an embedded broker is stopped even then.
 */
export function untilSignal(onForce?: (signal: NodeJS.Signals) => void): Promise<NodeJS.Signals> {
  return new Promise((resolve) => onShutdownSignals({ onSignal: resolve, onForce }));
}
