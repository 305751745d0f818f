/**
 * Configuration, read once from the environment. Every error names the variable and how to fix it.
 */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

type Env = Readonly<Record<string, string | undefined>>;

export const DEFAULT_TOPICS = {
  source: "user-login",
  processed: "processed-user-login",
  deadLetter: "user-login-dlq",
} as const;

export interface TopicConfig {
  readonly source: string;
  readonly processed: string;
  readonly deadLetter: string;
}

export interface ProcessorConfig {
  /** Bootstrap servers; when absent the handler uses the event's bootstrapServers. */
  readonly brokers: readonly string[] | undefined;
  readonly clientId: string;
  readonly topics: TopicConfig;
  /** Report Kafka partial batch responses instead of failing the whole batch. */
  readonly partialBatchResponse: boolean;
  /** Upper bound on the bytes of one produce request. */
  readonly produceChunkBytes: number;
}

export function requireEnv(env: Env, name: string): string {
  const value = env[name];
  if (value === undefined || value.trim() === "") throw new ConfigError(`${name} environment variable is not set`);
  return value;
}

function text(env: Env, name: string, fallback: string): string {
  const value = env[name];
  if (value === undefined) return fallback;
  if (value.trim() === "")
    throw new ConfigError(`${name} is set but empty: unset it to use "${fallback}" or give a value`);
  return value.trim();
}

export function parseBoolean(env: Env, name: string, fallback: boolean): boolean {
  const value = env[name];
  if (value === undefined || value === "") return fallback;
  if (/^(true|1|yes)$/i.test(value)) return true;
  if (/^(false|0|no)$/i.test(value)) return false;
  throw new ConfigError(`${name} must be "true" or "false", got "${value}"`);
}

export function parseInteger(env: Env, name: string, fallback: number, min: number, max: number): number {
  const value = env[name];
  if (value === undefined || value === "") return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < min || parsed > max) {
    throw new ConfigError(`${name} must be a whole number from ${min} to ${max}, got "${value}"`);
  }
  return parsed;
}

/** `host:port[,host:port...]` as a list; rejects entries without a port. */
export function parseBrokers(value: string, name = "KAFKA_BROKERS"): string[] {
  const brokers = value
    .split(",")
    .map((broker) => broker.trim())
    .filter((broker) => broker !== "");
  if (brokers.length === 0) throw new ConfigError(`${name} must list at least one host:port`);
  for (const broker of brokers) {
    if (!/^[^\s:]+:\d{1,5}$/.test(broker) && !/^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(broker)) {
      throw new ConfigError(`${name} entry "${broker}" is not host:port (e.g. 127.0.0.1:9092)`);
    }
  }
  return brokers;
}

export function loadTopics(env: Env): TopicConfig {
  const topics = {
    source: text(env, "SOURCE_TOPIC", DEFAULT_TOPICS.source),
    processed: text(env, "PROCESSED_TOPIC", DEFAULT_TOPICS.processed),
    deadLetter: text(env, "DLQ_TOPIC", DEFAULT_TOPICS.deadLetter),
  };
  if (new Set(Object.values(topics)).size !== 3) {
    throw new ConfigError(
      `SOURCE_TOPIC, PROCESSED_TOPIC and DLQ_TOPIC must be three different topics, got ${JSON.stringify(topics)}`,
    );
  }
  return topics;
}

export function loadProcessorConfig(env: Env = process.env): ProcessorConfig {
  const brokers = env.KAFKA_BROKERS;
  return {
    brokers: brokers === undefined || brokers.trim() === "" ? undefined : parseBrokers(brokers),
    clientId: text(env, "KAFKA_CLIENT_ID", "user-login-processor"),
    topics: loadTopics(env),
    partialBatchResponse: parseBoolean(env, "PARTIAL_BATCH_RESPONSE", false),
    produceChunkBytes: parseInteger(env, "PRODUCE_CHUNK_BYTES", 512 * 1024, 1024, 64 * 1024 * 1024),
  };
}
