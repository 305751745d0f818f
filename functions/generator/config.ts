/**
 * The generator's settings: a command-line flag, or its environment variable (as the ECS task sets them).
 * Flags win. Every error names the flag, its variable and what is allowed.
 */
import { parseArgs } from "node:util";
import { ConfigError, DEFAULT_TOPICS, parseBrokers } from "../shared/config.ts";

export interface GeneratorConfig {
  readonly brokers: readonly string[] | undefined;
  readonly topic: string;
  /** Records per second; undefined means as fast as possible with --dry-run, else 2. */
  readonly rate: number;
  readonly count: number | undefined;
  readonly durationMs: number | undefined;
  readonly missingDeviceTypeRatio: number;
  readonly invalidRatio: number;
  readonly seed: number | undefined;
  readonly users: number | undefined;
  readonly dryRun: boolean;
  readonly help: boolean;
}

export const GENERATOR_USAGE = `usage: npm run generate -- [flags]     (each flag also reads the environment variable shown)
  --brokers B                       KAFKA_BROKERS                            bootstrap servers (required unless --dry-run)
  --topic T                         SOURCE_TOPIC                             default: user-login
  --rate N                          GENERATOR_RATE                           events per second (default: 2; unthrottled with --dry-run)
  --count N                         GENERATOR_COUNT                          stop after N events (default: run until stopped)
  --duration D                      GENERATOR_DURATION                       stop after D: 90, 90s, 15m, 2h, 500ms
  --missing-device-type-ratio R     GENERATOR_MISSING_DEVICE_TYPE_RATIO      0..1 (default: 0.05)
  --invalid-ratio R                 GENERATOR_INVALID_RATIO                  0..1 share of deliberately bad records (default: 0)
  --seed N                          GENERATOR_SEED                           reproducible run (default: random)
  --users N                         GENERATOR_USERS                          reuse a pool of N users; keys are then user_id
  --dry-run                         GENERATOR_DRY_RUN                        print JSON lines to stdout, produce nothing`;

const FLAGS = {
  brokers: "KAFKA_BROKERS",
  topic: "SOURCE_TOPIC",
  rate: "GENERATOR_RATE",
  count: "GENERATOR_COUNT",
  duration: "GENERATOR_DURATION",
  "missing-device-type-ratio": "GENERATOR_MISSING_DEVICE_TYPE_RATIO",
  "invalid-ratio": "GENERATOR_INVALID_RATIO",
  seed: "GENERATOR_SEED",
  users: "GENERATOR_USERS",
  "dry-run": "GENERATOR_DRY_RUN",
} as const;
type Flag = keyof typeof FLAGS;

export function parseDuration(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!match) return undefined;
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? "s"] as number;
  return Number(match[1]) * unit;
}

export function loadGeneratorConfig(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): GeneratorConfig {
  let values: Record<string, string | boolean | undefined>;
  try {
    const options = Object.fromEntries(
      Object.keys(FLAGS).map((flag) => [flag, { type: flag === "dry-run" ? "boolean" : "string" } as const]),
    );
    values = parseArgs({
      args: [...argv],
      options: { ...options, help: { type: "boolean", short: "h" } },
      strict: true,
    }).values as Record<string, string | boolean | undefined>;
  } catch (error) {
    throw new ConfigError(`${(error as Error).message}\n\n${GENERATOR_USAGE}`);
  }
  const raw = (flag: Flag): { text: string | undefined; where: string } => {
    const value = values[flag];
    if (typeof value === "string") return { text: value, where: `--${flag}` };
    return { text: env[FLAGS[flag]], where: FLAGS[flag] };
  };
  const number = (flag: Flag, min: number, max: number, integer: boolean): number | undefined => {
    const { text, where } = raw(flag);
    if (text === undefined || text === "") return undefined;
    const parsed = Number(text);
    if (!Number.isFinite(parsed) || parsed < min || parsed > max || (integer && !Number.isInteger(parsed))) {
      const kind = integer ? "a whole number" : "a number";
      throw new ConfigError(`${where} must be ${kind} from ${min} to ${max}, got "${text}"`);
    }
    return parsed;
  };
  const duration = raw("duration");
  let durationMs: number | undefined;
  if (duration.text !== undefined && duration.text !== "") {
    durationMs = parseDuration(duration.text);
    if (durationMs === undefined || durationMs <= 0) {
      throw new ConfigError(
        `${duration.where} must be a positive duration such as 90, 90s, 15m or 2h, got "${duration.text}"`,
      );
    }
  }
  const dryRun = values["dry-run"] === true || /^(true|1)$/i.test(env.GENERATOR_DRY_RUN ?? "");
  const brokers = raw("brokers");
  const count = number("count", 1, Number.MAX_SAFE_INTEGER, true);
  const config: GeneratorConfig = {
    brokers: brokers.text ? parseBrokers(brokers.text, brokers.where) : undefined,
    topic: raw("topic").text || DEFAULT_TOPICS.source,
    rate: number("rate", 0.001, 1_000_000, false) ?? (dryRun ? 1_000_000 : 2),
    count,
    durationMs,
    missingDeviceTypeRatio: number("missing-device-type-ratio", 0, 1, false) ?? 0.05,
    invalidRatio: number("invalid-ratio", 0, 1, false) ?? 0,
    seed: number("seed", 0, 2 ** 32 - 1, true),
    users: number("users", 1, 10_000_000, true),
    dryRun,
    help: values.help === true,
  };
  if (!config.dryRun && !config.brokers && !config.help && !env.MSK_CLUSTER_ARN) {
    throw new ConfigError(
      "--brokers (or KAFKA_BROKERS) is required unless --dry-run or MSK_CLUSTER_ARN is set: give host:port[,host:port]",
    );
  }
  return config;
}
