/**
 * Structured JSON logging with Powertools for AWS Lambda's Logger: one object per line. In Lambda it writes as
 * Powertools does (CloudWatch picks up both streams); elsewhere (CLIs, the local harness, ECS) every line goes to
 * stderr, so stdout stays free for a CLI's output. Never pass record values here: they carry personal data.
 */
import { Console } from "node:console";
import { Logger } from "@aws-lambda-powertools/logger";
import { METRICS_SERVICE } from "./metrics.ts";

const LEVELS = ["DEBUG", "INFO", "WARN", "ERROR", "SILENT"] as const;
export type LogLevel = (typeof LEVELS)[number];

export function parseLogLevel(value: string | undefined, name = "LOG_LEVEL"): LogLevel {
  const level = (value ?? "INFO").toUpperCase();
  if (!(LEVELS as readonly string[]).includes(level)) {
    throw new Error(`${name} must be one of ${LEVELS.join(", ")}, got "${value}"`);
  }
  return level as LogLevel;
}

export const logger = new Logger({
  serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? METRICS_SERVICE,
  logLevel: parseLogLevel(process.env.LOG_LEVEL),
});
if (!process.env.AWS_LAMBDA_FUNCTION_NAME) {
  // Powertools keeps its own Console; point both of its streams at stderr.
  (logger as unknown as { console: Console }).console = new Console({ stdout: process.stderr, stderr: process.stderr });
}

/**
 * Changes the level for good: Powertools' middleware puts the level back to its initial one on every warm
 * invocation (debug sampling), so the initial level changes too.
 */
export function setLogLevel(level: LogLevel): void {
  (logger as unknown as { setInitialLogLevel(level: string): void }).setInitialLogLevel(level);
  logger.setLogLevel(level);
}

export function log(level: Exclude<LogLevel, "SILENT">, message: string, fields: Record<string, unknown> = {}): void {
  if (level === "DEBUG") logger.debug(message, fields);
  else if (level === "INFO") logger.info(message, fields);
  else if (level === "WARN") logger.warn(message, fields);
  else logger.error(message, fields);
}
