/**
 * A stand-in function for the tests of the harness's worker environments (test/integration/environments.test.ts).
 * Its module state is its environment's: an id and an invocation count. FIXTURE_MODE picks a behaviour:
 * - "slow": each invocation takes FIXTURE_DELAY_MS (default 100);
 * - "spin-once" / "crash-once": the first invocation of the whole run (a marker file in FIXTURE_DIR says which was
 *   first) spins the CPU forever, or throws from a timer (an uncaught exception: the runtime dies); later ones succeed;
 * - "crash-after-once": the first invocation succeeds, then its runtime dies (a timer throws after the response);
 * - "block-once": the first invocation blocks in a native call, which a worker's terminate() cannot interrupt: a
 *   synchronous read of the named pipe FIXTURE_DIR/fifo, until the test opens and closes it for writing;
 * - "init-fail-once": the first environment's module fails to load; "slow-init": every module load takes 1.5 s;
 * - "die-after-load-once": the first environment's module loads, then its runtime dies 100 ms later (a timer throws);
 * - "block-after-response-once": the first invocation returns, then a timer blocks the thread in the same native
 *   read.
 */
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { threadId } from "node:worker_threads";

const environment = randomUUID();
let invocations = 0;
const MODE = process.env.FIXTURE_MODE;

/** Only the first caller of the run gets true. */
function firstOfRun(name = "first"): boolean {
  const marker = join(process.env.FIXTURE_DIR as string, name);
  if (existsSync(marker)) return false;
  writeFileSync(marker, environment, { flag: "wx" });
  return true;
}

if (MODE === "init-fail-once" && firstOfRun("init")) throw new Error("the module failed to load, once");
if (MODE === "slow-init") await new Promise((resolve) => setTimeout(resolve, 1500));
if (MODE === "die-after-load-once" && firstOfRun("load")) {
  setTimeout(() => {
    throw new Error("the runtime died after its init");
  }, 100);
}

export async function handler(
  event: { records: Record<string, { offset: number }[]> },
  context: { getRemainingTimeInMillis(): number },
) {
  invocations++;
  const mode = MODE;
  if (mode === "spin-once" && firstOfRun()) for (;;);
  if (mode === "block-once" && firstOfRun()) readFileSync(join(process.env.FIXTURE_DIR as string, "fifo"));
  const delayMs = Number(process.env.FIXTURE_DELAY_MS ?? 100);
  if (mode === "block-after-response-once" && firstOfRun()) {
    // After the response below has been posted.
    setTimeout(() => readFileSync(join(process.env.FIXTURE_DIR as string, "fifo")), delayMs + 50);
  }
  if (mode === "crash-after-once" && firstOfRun()) {
    setTimeout(() => {
      throw new Error("the runtime died after its response");
    }, 20);
  }
  if (mode === "crash-once" && firstOfRun()) {
    setTimeout(() => {
      throw new Error("the runtime died");
    }, 10);
    await new Promise(() => {});
  }
  await new Promise((resolve) => setTimeout(resolve, delayMs));
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
