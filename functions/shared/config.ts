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

export const KAFKA_AUTH_MODES = ["iam", "scram", "none"] as const;
export type KafkaAuth = (typeof KAFKA_AUTH_MODES)[number];

/** How to reach and authenticate to Kafka: the same for the processor, the generator, the harness and the tools. */
export interface ConnectionConfig {
  /** KAFKA_BROKERS; when absent, MSK_CLUSTER_ARN discovery (or, in the handler, the event's bootstrapServers). */
  readonly brokers: readonly string[] | undefined;
  /** MSK_CLUSTER_ARN */
  readonly clusterArn: string | undefined;
  /** KAFKA_AUTH: `iam` by default in AWS (AWS_EXECUTION_ENV is set), else `none`. */
  readonly auth: KafkaAuth;
  /** KAFKA_TLS: on by default for iam and scram. */
  readonly tls: boolean;
  /** KAFKA_TLS_CA_FILE: a PEM bundle to trust instead of the system's CAs (a private or test CA). */
  readonly tlsCaFile: string | undefined;
  /** AWS_REGION (iam signing, discovery, Secrets Manager). */
  readonly region: string | undefined;
  /** KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD, or KAFKA_SASL_SECRET_ARN (an MSK SCRAM secret). */
  readonly scram: { readonly username?: string; readonly password?: string; readonly secretArn?: string } | undefined;
}

export function loadConnectionConfig(env: Env = process.env): ConnectionConfig {
  const authText = env.KAFKA_AUTH?.trim().toLowerCase() || (env.AWS_EXECUTION_ENV ? "iam" : "none");
  if (!(KAFKA_AUTH_MODES as readonly string[]).includes(authText)) {
    throw new ConfigError(`KAFKA_AUTH must be one of ${KAFKA_AUTH_MODES.join(", ")}, got "${env.KAFKA_AUTH}"`);
  }
  const auth = authText as KafkaAuth;
  const region = env.AWS_REGION?.trim() || env.AWS_DEFAULT_REGION?.trim() || undefined;
  const clusterArn = env.MSK_CLUSTER_ARN?.trim() || undefined;
  if (clusterArn && !/^arn:aws[\w-]*:kafka:[\w-]+:\d{12}:cluster\/.+/.test(clusterArn)) {
    throw new ConfigError(
      `MSK_CLUSTER_ARN must be an MSK cluster ARN (arn:aws:kafka:REGION:ACCOUNT:cluster/NAME/ID), got "${clusterArn}"`,
    );
  }
  if ((auth === "iam" || clusterArn) && !region) {
    throw new ConfigError(
      `AWS_REGION environment variable is not set: KAFKA_AUTH=${auth}${clusterArn ? " with MSK_CLUSTER_ARN" : ""} needs the cluster's region (e.g. AWS_REGION=us-east-1)`,
    );
  }
  let scram: ConnectionConfig["scram"];
  if (auth === "scram") {
    const username = env.KAFKA_SASL_USERNAME || undefined;
    const password = env.KAFKA_SASL_PASSWORD || undefined;
    const secretArn = env.KAFKA_SASL_SECRET_ARN?.trim() || undefined;
    if (!secretArn && !(username && password)) {
      throw new ConfigError(
        "KAFKA_AUTH=scram needs KAFKA_SASL_SECRET_ARN (an AmazonMSK_ secret) or both KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD",
      );
    }
    if (secretArn && !region) {
      throw new ConfigError(
        "AWS_REGION environment variable is not set: KAFKA_SASL_SECRET_ARN is read from Secrets Manager in that region",
      );
    }
    scram = { username, password, secretArn };
  }
  const brokers = env.KAFKA_BROKERS;
  return {
    brokers: brokers === undefined || brokers.trim() === "" ? undefined : parseBrokers(brokers),
    clusterArn,
    auth,
    tls: parseBoolean(env, "KAFKA_TLS", auth !== "none"),
    tlsCaFile: env.KAFKA_TLS_CA_FILE?.trim() || undefined,
    region,
    scram,
  };
}

export interface ProcessorConfig {
  readonly connection: ConnectionConfig;
  readonly clientId: string;
  readonly topics: TopicConfig;
  /** Report Kafka partial batch responses instead of failing the whole batch. */
  readonly partialBatchResponse: boolean;
  /** Upper bound on the bytes of one produce request. */
  readonly produceChunkBytes: number;
  /**
   * The destination topics' `max.message.bytes` (PROCESSED_MAX_MESSAGE_BYTES, DLQ_MAX_MESSAGE_BYTES): what one
   * partition's share of a produce request may hold. The stack and `topics --create` create the topics with these.
   */
  readonly maxMessageBytes: { readonly processed: number; readonly deadLetter: number };
  /** OUTPUT_COMPRESSION: the codec of the processor's produce requests (functions/shared/codecs.ts). */
  readonly outputCompression: OutputCompression;
}

/** Kafka's compression codecs, as OUTPUT_COMPRESSION (and the stack's `outputCompression`) name them. */
export const OUTPUT_COMPRESSIONS = ["none", "gzip", "snappy", "lz4", "zstd"] as const;
export type OutputCompression = (typeof OUTPUT_COMPRESSIONS)[number];

export function parseOutputCompression(env: Env, name = "OUTPUT_COMPRESSION"): OutputCompression {
  const value = env[name];
  if (value === undefined || value.trim() === "") return "none";
  const codec = value.trim().toLowerCase();
  if (!(OUTPUT_COMPRESSIONS as readonly string[]).includes(codec)) {
    throw new ConfigError(
      `${name} must be one of ${OUTPUT_COMPRESSIONS.join(", ")}, got "${value}": set it to one of them, or unset it for none`,
    );
  }
  return codec as OutputCompression;
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

/**
 * The largest produce request the processor builds: a quarter of the broker's default `socket.request.max.bytes`
 * (100 MiB) and more than any topic limit MSK Serverless allows (8 MiB).
 */
export const MAX_REQUEST_BYTES = 16 * 1024 * 1024;
/** Kafka's default `max.message.bytes`; see topic-settings.ts (which re-exports both). */
export const DEFAULT_MAX_MESSAGE_BYTES = 1_048_588;
export const DEAD_LETTER_MAX_MESSAGE_BYTES = 2 * 1_048_576;

export function loadProcessorConfig(env: Env = process.env): ProcessorConfig {
  return {
    connection: loadConnectionConfig(env),
    clientId: text(env, "KAFKA_CLIENT_ID", "user-login-processor"),
    topics: loadTopics(env),
    partialBatchResponse: parseBoolean(env, "PARTIAL_BATCH_RESPONSE", false),
    produceChunkBytes: parseInteger(env, "PRODUCE_CHUNK_BYTES", 1024 * 1024, 1024, MAX_REQUEST_BYTES),
    maxMessageBytes: {
      processed: parseInteger(env, "PROCESSED_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, 1024, MAX_REQUEST_BYTES),
      deadLetter: parseInteger(env, "DLQ_MAX_MESSAGE_BYTES", DEAD_LETTER_MAX_MESSAGE_BYTES, 1024, MAX_REQUEST_BYTES),
    },
    outputCompression: parseOutputCompression(env),
  };
}
