/**
 * A Lambda execution environment of the local harness on a worker thread: the handler module loaded afresh (its own
 * configuration, its own producer: the container-wide state that Lambda gives each environment), one invocation at
 * a time, the harness's event loop untouched by the function's CPU work (as Lambda's poller is by a function's), and
 * a timed-out invocation stopped with its thread, as Lambda stops an environment whose invocation timed out.
 */

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import type { MskEvent } from "../core/msk.ts";
import type { FunctionEnvironment, HarnessOptions } from "./harness.ts";
import { DEFAULT_HANDLER, lambdaContextFields, loadHandler } from "./lambda-runtime.ts";

/**
 * The worker's program (CommonJS, evaluated): imports the handler and says whether that worked (`loaded`, or
 * `load-failed` with the reason: Lambda's init), answers `invoke` messages one at a time, and on `close` disconnects
 * the handler's clients (closeProducer, as loadHandler's close) and ends the thread. The context comes as data; its
 * remaining time is counted here from the deadline the harness set.
 */
const PROGRAM = `
const { parentPort, workerData } = require("node:worker_threads");
const text = (error) => { try { return error instanceof Error ? String(error.message) : String(error); } catch { return "unprintable error"; } };
const loading = (workerData.typescript
  ? import(workerData.typescript).then((tsx) => { tsx.register(); return import(workerData.url); })
  : import(workerData.url)
).then((module) => {
  if (typeof module.handler !== "function") throw new Error(workerData.url + ' does not export a function named "handler"');
  return module;
});
loading.then(() => parentPort.postMessage({ type: "loaded" }), (error) => parentPort.postMessage({ type: "load-failed", error: text(error) }));
parentPort.on("message", async (message) => {
  if (message.type === "close") {
    try { await (await loading).closeProducer?.(); } catch {}
    process.exit(0);
  }
  try {
    const module = await loading;
    const deadline = message.deadline;
    const context = { ...message.context, getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
      done() {}, fail() {}, succeed() {} };
    const response = await module.handler(message.event, context);
    parentPort.postMessage({ id: message.id, response });
  } catch (error) {
    parentPort.postMessage({ id: message.id, error: text(error) });
  }
});
`;

/** Lambda's limit on an execution environment's init ("Lambda execution environment lifecycle": 10 seconds). */
export const INIT_LIMIT_MS = 10_000;
/** How long a stop waits for the thread to end: terminate() cannot interrupt a synchronous native call. */
const TERMINATE_WAIT_MS = 2000;

interface TsxManifest {
  exports: { "./esm/api": { import: { default: string } } };
}

/**
 * tsx's ESM API, registered in the worker before a TypeScript handler is imported: a worker does not inherit the
 * loader this process was started with (`tsx` or vitest), and Node 20 ignores `--import` hooks in a worker's execArgv
 * for an evaluated program.
 */
function typescriptLoader(modulePath: string): string | undefined {
  if (!/\.[cm]?tsx?$/.test(modulePath)) return undefined;
  // The ESM entry of "tsx/esm/api" from tsx's own exports map (require.resolve would give its CommonJS one).
  const manifest = createRequire(import.meta.url).resolve("tsx/package.json");
  const exports = (JSON.parse(readFileSync(manifest, "utf8")) as TsxManifest).exports["./esm/api"].import.default;
  return pathToFileURL(resolve(dirname(manifest), exports)).href;
}

export interface WorkerEnvironmentOptions {
  /** The handler module (TypeScript or a built bundle). @default the processor's handler.ts */
  readonly modulePath?: string;
  /** The environment's variables (its configuration). @default this process's */
  readonly env?: NodeJS.ProcessEnv;
  /** @default "user-login-processor" */
  readonly functionName?: string;
}

/** Starts a worker thread that loads the handler; invocations wait for the load. */
export function workerEnvironment(options: WorkerEnvironmentOptions = {}): Required<FunctionEnvironment> {
  const modulePath = resolve(options.modulePath ?? DEFAULT_HANDLER);
  const worker = new Worker(PROGRAM, {
    eval: true,
    workerData: { url: pathToFileURL(modulePath).href, typescript: typescriptLoader(modulePath) },
    env: { ...(options.env ?? process.env) },
    execArgv: [],
  });
  let alive = true;
  let exitReason = "";
  let pending: { id: number; resolve: (value: unknown) => void; reject: (error: Error) => void } | undefined;
  let nextId = 0;
  let loaded: (() => void) | undefined;
  let loadFailed: ((error: Error) => void) | undefined;
  const loading = new Promise<void>((resolveLoad, rejectLoad) => {
    loaded = resolveLoad;
    loadFailed = rejectLoad;
  });
  loading.catch(() => {});
  const stop = (reason: string) => {
    alive = false;
    exitReason ||= reason;
    worker.unref();
    return Promise.race([worker.terminate(), sleep(TERMINATE_WAIT_MS, undefined, { ref: false })]);
  };
  const fail = (reason: string) => {
    alive = false;
    exitReason ||= reason;
    loadFailed?.(new Error(exitReason));
    pending?.reject(new Error(exitReason));
    pending = undefined;
  };
  worker.on("message", (message: { type?: string; id?: number; response?: unknown; error?: string }) => {
    if (message.type === "loaded") return loaded?.();
    if (message.type === "load-failed") {
      // Lambda's error type for a handler module that cannot be loaded; the environment is not used again.
      fail(`Runtime.ImportModuleError: ${message.error}`);
      void stop(exitReason);
      return;
    }
    if (!pending || message.id !== pending.id) return;
    const { resolve: settle, reject } = pending;
    pending = undefined;
    if (message.error !== undefined) reject(new Error(message.error));
    else settle(message.response);
  });
  // Lambda's words for an environment whose runtime died during an invocation.
  worker.on("error", (error) => fail(`Runtime exited with error: ${error.message}`));
  worker.on("exit", (code) => fail(`Runtime exited with status ${code}`));
  const exited = new Promise<void>((done) => worker.once("exit", () => done()));
  let ready: Promise<void> | undefined;

  return {
    ready(): Promise<void> {
      ready ??= new Promise<void>((resolveReady, rejectReady) => {
        const timer = setTimeout(() => {
          const reason = `init did not finish within ${INIT_LIMIT_MS / 1000} s`;
          void stop(reason);
          rejectReady(new Error(reason));
        }, INIT_LIMIT_MS);
        timer.unref();
        loading.then(resolveReady, rejectReady).finally(() => clearTimeout(timer));
      });
      return ready;
    },
    invoke(event: MskEvent, timeoutMs: number): Promise<unknown> {
      if (!alive) return Promise.reject(new Error(exitReason));
      if (pending) return Promise.reject(new Error("an execution environment serves one invocation at a time"));
      const context = lambdaContextFields(options.functionName);
      const id = nextId++;
      return new Promise((resolveInvocation, reject) => {
        pending = { id, resolve: resolveInvocation, reject };
        worker.postMessage({ type: "invoke", id, event, context, deadline: Date.now() + timeoutMs });
      });
    },
    alive: () => alive,
    async abort(): Promise<void> {
      // The invocation fails now even if the thread is in a native call that terminate() must wait for.
      const reason = "the invocation timed out: its execution environment was stopped";
      const stopping = stop(reason);
      fail(reason);
      await stopping;
    },
    async close(): Promise<void> {
      if (!alive) return;
      worker.postMessage({ type: "close" });
      // A handler whose clients do not close in 10 s is stopped all the same (stop waits 2 s at most for the thread).
      let timer: NodeJS.Timeout | undefined;
      const stopped = new Promise<unknown>((done) => {
        timer = setTimeout(() => void stop("closed").then(done), 10_000);
      });
      await Promise.race([exited, stopped]);
      clearTimeout(timer);
    },
  };
}

/**
 * The function as the CLIs give it to the harness: with concurrency 1 in this process (loadHandler), above 1 in
 * worker environments made on demand (the harness closes those; `close` closes the in-process one).
 */
export async function harnessFunction(
  concurrency: number,
  modulePath?: string,
): Promise<{ options: Pick<HarnessOptions, "invoke" | "concurrency" | "newEnvironment">; close: () => Promise<void> }> {
  if (concurrency > 1) {
    // The environments' variables as they are now (a CLI may have set the processor's configuration).
    const env = { ...process.env };
    // One environment loaded before anything consumes: a handler that cannot load fails the start, as with
    // concurrency 1, instead of failing every batch (which would park or discard the whole topic).
    const first = workerEnvironment({ modulePath, env });
    try {
      await first.ready();
    } catch (error) {
      await first.close();
      throw new Error(`the handler ${modulePath ?? DEFAULT_HANDLER} cannot be loaded: ${(error as Error).message}`);
    }
    const spare = [first];
    return {
      options: {
        concurrency,
        newEnvironment: () => {
          const loaded = spare.pop();
          if (loaded?.alive()) return loaded;
          // Its runtime died while it waited for the first batch: a fresh one instead.
          void loaded?.close();
          return workerEnvironment({ modulePath, env });
        },
      },
      close: async () => {
        await Promise.all(spare.map((environment) => environment.close()));
      },
    };
  }
  const handler = await loadHandler(modulePath);
  return { options: { invoke: handler.invoke }, close: handler.close };
}
