/**
 * A stand-in function for the tests of the harness's worker environments (test/integration/environments.test.ts).
 * Its module state is its environment's: an id and an invocation count. FIXTURE_MODE picks a behaviour:
 * - "slow": each invocation takes FIXTURE_DELAY_MS (default 100);
 * - "spin-once" / "crash-once": the first invocation of the whole run (a marker file in FIXTURE_DIR says which was
 *   first) spins the CPU forever, or throws from a timer (an uncaught exception: the runtime dies); later ones succeed.
 */
import { randomUUID } from "node:crypto";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { threadId } from "node:worker_threads";

const environment = randomUUID();
let invocations = 0;

/** Only the first caller of the run gets true. */
function firstOfRun(): boolean {
  const marker = join(process.env.FIXTURE_DIR as string, "first");
  if (existsSync(marker)) return false;
  writeFileSync(marker, environment, { flag: "wx" });
  return true;
}

export async function handler(
  event: { records: Record<string, { offset: number }[]> },
  context: { getRemainingTimeInMillis(): number },
) {
  invocations++;
  const mode = process.env.FIXTURE_MODE;
  if (mode === "spin-once" && firstOfRun()) for (;;);
  if (mode === "crash-once" && firstOfRun()) {
    setTimeout(() => {
      throw new Error("the runtime died");
    }, 10);
    await new Promise(() => {});
  }
  await new Promise((resolve) => setTimeout(resolve, Number(process.env.FIXTURE_DELAY_MS ?? 100)));
  return {
    environment,
    invocations,
    threadId,
    remainingMs: context.getRemainingTimeInMillis(),
    records: Object.values(event.records).reduce((n, records) => n + records.length, 0),
  };
}

export async function closeProducer(): Promise<void> {
  writeFileSync(join(process.env.FIXTURE_DIR as string, `closed-${environment}`), "");
}
