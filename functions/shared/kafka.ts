/**
 * The one place that builds Kafka clients (kafkajs today), so the client library can be swapped without touching
 * the processing core. Local plaintext for now; the authentication modes for Amazon MSK come with the auth work.
 */
import { Kafka, type KafkaConfig, logLevel, Partitioners, type Producer } from "kafkajs";
import { log } from "./log.ts";

export interface KafkaClientOptions {
  readonly brokers: readonly string[];
  readonly clientId: string;
  /** How long one connection attempt may take. @default 3000 */
  readonly connectionTimeoutMs?: number;
  /** Retries for a failed request, with exponential backoff. @default 5 */
  readonly retries?: number;
}

/** kafkajs logs at ERROR what it then retries (coordinator loading, a broker restarting): WARN for us. */
const levelName = (level: logLevel): "WARN" | "INFO" | "DEBUG" =>
  level === logLevel.ERROR || level === logLevel.WARN ? "WARN" : level === logLevel.INFO ? "INFO" : "DEBUG";

/** kafkajs's own log lines, routed to our structured log. Whatever it gives up on reaches us as an error. */
const logCreator: KafkaConfig["logCreator"] =
  () =>
  ({ level, label, namespace, log: entry }) => {
    const { message, timestamp: _ignored, logger: _logger, ...fields } = entry as Record<string, unknown>;
    log(levelName(level), `kafkajs ${namespace}: ${String(message)}`, { ...fields, kafkajsLevel: label });
  };

export function createKafka(options: KafkaClientOptions): Kafka {
  return new Kafka({
    clientId: options.clientId,
    brokers: [...options.brokers],
    connectionTimeout: options.connectionTimeoutMs ?? 3000,
    requestTimeout: 30_000,
    retry: { retries: options.retries ?? 5, initialRetryTime: 300, maxRetryTime: 5000 },
    logLevel: logLevel.WARN,
    logCreator,
  });
}

/**
 * An idempotent producer with acks=all semantics (set per send): no duplicates from its own retries, ordered per
 * partition. Its retries are bounded so that an unreachable broker fails an invocation instead of hanging it.
 */
export function createProducer(kafka: Kafka, retries = 5): Producer {
  return kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    // murmur2 on the key, as the Java client: one user's records stay on one partition.
    createPartitioner: Partitioners.DefaultPartitioner,
    retry: { retries, initialRetryTime: 300, maxRetryTime: 5000 },
  });
}
