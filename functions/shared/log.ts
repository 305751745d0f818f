/**
 * Minimal structured logging: one JSON object per line on stderr (stdout stays free for CLI output; Lambda sends
 * both to CloudWatch). Never pass record values here: they carry personal data.
 */
const LEVELS = { DEBUG: 10, INFO: 20, WARN: 30, ERROR: 40, SILENT: 100 } as const;
export type LogLevel = keyof typeof LEVELS;

export function parseLogLevel(value: string | undefined, name = "LOG_LEVEL"): LogLevel {
  const level = (value ?? "INFO").toUpperCase();
  if (!(level in LEVELS)) {
    throw new Error(`${name} must be one of ${Object.keys(LEVELS).join(", ")}, got "${value}"`);
  }
  return level as LogLevel;
}

let threshold: number = LEVELS[parseLogLevel(process.env.LOG_LEVEL)];

export function setLogLevel(level: LogLevel): void {
  threshold = LEVELS[level];
}

export function log(level: Exclude<LogLevel, "SILENT">, message: string, fields: Record<string, unknown> = {}): void {
  if (LEVELS[level] < threshold) return;
  process.stderr.write(`${JSON.stringify({ level, timestamp: new Date().toISOString(), message, ...fields })}\n`);
}
