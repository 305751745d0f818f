/**
 * Loading and calling a Lambda handler in-process, as the local harness and the invoke CLI do.
 */
import { randomUUID } from "node:crypto";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { Context } from "aws-lambda";
import type { MskEvent } from "../core/msk.ts";

type LambdaHandler = (event: unknown, context: Context) => Promise<unknown>;

export interface LoadedHandler {
  /** Calls the handler with a Lambda context whose remaining time starts at `timeoutMs` (default 60 s). */
  readonly invoke: (event: MskEvent, timeoutMs?: number) => Promise<unknown>;
  /** Disconnects the handler's container-wide clients, if it exports closeProducer(). */
  readonly close: () => Promise<void>;
}

/** The processor's handler source; a built bundle (with the same exports) can be given instead. */
export const DEFAULT_HANDLER = resolve(import.meta.dirname, "../processor/handler.ts");

/** The data fields of a Lambda context (what can be posted to another thread). */
export type LambdaContextFields = Omit<Context, "getRemainingTimeInMillis" | "done" | "fail" | "succeed">;

export function lambdaContext(functionName = "user-login-processor", timeoutMs = 60_000): Context {
  const deadline = Date.now() + timeoutMs;
  return {
    ...lambdaContextFields(functionName),
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}

export function lambdaContextFields(functionName = "user-login-processor"): LambdaContextFields {
  return {
    callbackWaitsForEmptyEventLoop: false,
    functionName,
    functionVersion: "$LATEST",
    invokedFunctionArn: `arn:aws:lambda:local:000000000000:function:${functionName}`,
    memoryLimitInMB: "1024",
    awsRequestId: randomUUID(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: "local",
  };
}

export async function loadHandler(modulePath: string = DEFAULT_HANDLER): Promise<LoadedHandler> {
  const module = (await import(pathToFileURL(resolve(modulePath)).href)) as {
    handler?: LambdaHandler;
    closeProducer?: () => Promise<void>;
  };
  const handler = module.handler;
  if (typeof handler !== "function") throw new Error(`${modulePath} does not export a function named "handler"`);
  return {
    invoke: (event, timeoutMs) => handler(event, lambdaContext(undefined, timeoutMs)),
    close: async () => {
      await module.closeProducer?.();
    },
  };
}
