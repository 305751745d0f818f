/**
 * The one place that builds Kafka clients (kafkajs today), so the client library can be swapped without touching
 * the processing core. It turns a ConnectionConfig into brokers and security settings: IAM (SASL/OAUTHBEARER over
 * TLS), SCRAM-SHA-512 over TLS, or plaintext for local brokers.
 */
import { readFileSync } from "node:fs";
import type { KafkaClient } from "@aws-sdk/client-kafka";
import type { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import { Kafka, type KafkaConfig, logLevel, type Producer, type SASLOptions } from "kafkajs";
// Registers snappy, lz4 and zstd with kafkajs for every client of the process (kafkajs has only gzip).
import "./codecs.ts";
import { ConfigError, type ConnectionConfig } from "./config.ts";
import { log } from "./log.ts";
import { discoverBrokers, iamTokenProvider, scramSecret } from "./msk-auth.ts";
import { FastDefaultPartitioner } from "./partitioner.ts";

export interface KafkaSecurity {
  readonly ssl?: boolean | { ca: string[] };
  readonly sasl?: SASLOptions;
}

export interface KafkaClientOptions extends KafkaSecurity {
  readonly brokers: readonly string[];
  readonly clientId: string;
  /** How long one connection attempt may take. @default 3000 */
  readonly connectionTimeoutMs?: number;
  /** Retries for connecting and other cluster requests, with exponential backoff. @default 3 */
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
    ssl: options.ssl,
    sasl: options.sasl,
    connectionTimeout: options.connectionTimeoutMs ?? 3000,
    authenticationTimeout: 10_000,
    // Re-authenticate (KIP-368) this long before the broker's session ends: IAM tokens expire.
    reauthenticationThreshold: 60_000,
    requestTimeout: 30_000,
    retry: { retries: options.retries ?? 3, initialRetryTime: 300, maxRetryTime: 5000 },
    logLevel: logLevel.WARN,
    logCreator,
  });
}

/** AWS clients for discovery and secrets; tests pass their own. */
export interface AwsClients {
  readonly kafka?: Pick<KafkaClient, "send">;
  readonly secretsManager?: Pick<SecretsManagerClient, "send">;
}

// Loaded only when a configuration needs them, so a cold start with KAFKA_BROKERS set pays for neither.
async function defaultKafkaClient(region: string | undefined): Promise<KafkaClient> {
  const { KafkaClient } = await import("@aws-sdk/client-kafka");
  return new KafkaClient({ region });
}

async function defaultSecretsManager(region: string | undefined): Promise<SecretsManagerClient> {
  const { SecretsManagerClient } = await import("@aws-sdk/client-secrets-manager");
  return new SecretsManagerClient({ region });
}

/** TLS and SASL settings for the configured auth mode. */
export async function kafkaSecurity(config: ConnectionConfig, aws: AwsClients = {}): Promise<KafkaSecurity> {
  let ssl: KafkaSecurity["ssl"] = config.tls;
  if (config.tls && config.tlsCaFile) {
    try {
      ssl = { ca: [readFileSync(config.tlsCaFile, "utf8")] };
    } catch (error) {
      throw new ConfigError(`KAFKA_TLS_CA_FILE ${config.tlsCaFile} cannot be read: ${(error as Error).message}`);
    }
  }
  if (config.auth === "iam") {
    return {
      ssl,
      sasl: { mechanism: "oauthbearer", oauthBearerProvider: iamTokenProvider({ region: config.region as string }) },
    };
  }
  if (config.auth === "scram") {
    const { username, password, secretArn } = config.scram ?? {};
    const credentials =
      username && password
        ? { username, password }
        : await scramSecret(aws.secretsManager ?? (await defaultSecretsManager(config.region)), secretArn as string);
    return { ssl, sasl: { mechanism: "scram-sha-512", ...credentials } };
  }
  return { ssl };
}

/** Bootstrap brokers: KAFKA_BROKERS, else MSK_CLUSTER_ARN discovery, else `fallback` (the event's), else an error. */
export async function resolveBrokers(
  config: ConnectionConfig,
  aws: AwsClients = {},
  fallback?: readonly string[],
): Promise<readonly string[]> {
  if (config.brokers) return config.brokers;
  if (config.clusterArn) {
    return discoverBrokers(
      aws.kafka ?? (await defaultKafkaClient(config.region)),
      config.clusterArn,
      config.auth,
      config.tls,
    );
  }
  if (fallback && fallback.length > 0) return fallback;
  throw new ConfigError(
    "KAFKA_BROKERS environment variable is not set: set it to host:port[,host:port], or set MSK_CLUSTER_ARN to discover the brokers",
  );
}

/** A kafkajs client for the configuration: brokers resolved, security settings built. */
export async function connectKafka(
  config: ConnectionConfig,
  clientId: string,
  options: { aws?: AwsClients; fallbackBrokers?: readonly string[]; retries?: number } = {},
): Promise<{ kafka: Kafka; brokers: readonly string[] }> {
  const brokers = await resolveBrokers(config, options.aws, options.fallbackBrokers);
  const security = await kafkaSecurity(config, options.aws);
  return { kafka: createKafka({ brokers, clientId, retries: options.retries, ...security }), brokers };
}

/**
 * The pipeline's producer: acks=all (set per send), one request in flight, NOT idempotent, and by default no retries
 * of its own; whoever sends retries a failed request with a new producer (kafkaSender, the generator's loop).
 *
 * Why not kafkajs's own retries, and so why not its idempotent producer (which requires them): on a retry inside one
 * send, kafkajs 2.2.4 re-sends only to the brokers that have not answered yet (`brokersWithoutResponse` in
 * node_modules/kafkajs/src/producer/sendMessages.js) but assigns partitions anew first, so a record whose partition
 * now lives on a broker that did answer (a key-less record, spread round-robin; a keyed one whose leader moved, as in
 * a rolling broker restart) is never sent, and the send still resolves: silent loss with more than one broker
 * (kafkajs issue 1303; reproduced against a two-broker cluster). With no retries inside kafkajs a failed request
 * fails the send, and the caller resends all of it: at worst duplicates, which the `source.*` headers identify.
 * `retries` > 0 is for tests and tools on a single broker only.
 */
export function createProducer(kafka: Kafka, retries = 0): Producer {
  return kafka.producer({
    idempotent: false,
    maxInFlightRequests: 1,
    allowAutoTopicCreation: false,
    // murmur2 on the key, as the Java client: one user's records stay on one partition. kafkajs's DefaultPartitioner,
    // computed without its per-message allocations (same partition for every message: see partitioner.ts).
    createPartitioner: FastDefaultPartitioner,
    retry: { retries, initialRetryTime: 300, maxRetryTime: 5000 },
  });
}

/**
 * A producer that is never reused after a failed send: `run` hands out the connected producer; when the work throws,
 * the producer is disconnected (in the background) and the next `run` connects a new one, with fresh connections and
 * metadata. (For an idempotent producer this is also what keeps a partly failed request from losing records: kafkajs
 * rolls back the sequence numbers of every partition of a failed request, written ones included
 * (sendMessages.js, the `catch` around `broker.produce`), so a reused producer's next send to such a partition is
 * refused, or taken by the broker for a duplicate and dropped.)
 */
export class ProducerSlot {
  private current: Promise<Producer> | undefined;
  private connected = 0;
  private discarded = 0;

  /**
   * `connect` makes and connects a new producer; a failed connect is not kept, the next `run` tries again.
   * `keepAfter` names failures after which the producer stays (a refusal the broker answered). @default none
   */
  constructor(
    private readonly connect: () => Promise<Producer>,
    private readonly options: { readonly keepAfter?: (error: unknown) => boolean } = {},
  ) {}

  /** Producers connected so far (1 while the first keeps working). */
  get connects(): number {
    return this.connected;
  }

  /** Producers dropped after a failed send. */
  get discards(): number {
    return this.discarded;
  }

  async run<T>(work: (producer: Producer) => Promise<T>): Promise<T> {
    let pending = this.current;
    if (!pending) {
      pending = this.connect();
      this.current = pending;
      pending.then(
        () => this.connected++,
        () => {
          if (this.current === pending) this.current = undefined;
        },
      );
    }
    const producer = await pending;
    try {
      return await work(producer);
    } catch (error) {
      if (this.current === pending && !this.options.keepAfter?.(error)) {
        this.current = undefined;
        this.discarded++;
        void producer.disconnect().catch(() => {});
      }
      throw error;
    }
  }

  /** Disconnects the current producer, if any. */
  async close(): Promise<void> {
    const pending = this.current;
    this.current = undefined;
    if (pending) await (await pending.catch(() => undefined))?.disconnect();
  }
}

/**
 * What a null header value is written as: kafkajs 2.2.4 cannot encode a null header value (`sizeOfHeaders` in
 * node_modules/kafkajs/src/protocol/recordBatch/record/v0/index.js calls Buffer.byteLength(null), which throws), so it
 * is written as an empty one. Same record size either way (a one-byte varint).
 */
export const NULL_HEADER_VALUE = Buffer.alloc(0);

type FetchedHeaderValue = Buffer | string | null | undefined;

/**
 * A fetched message's headers as [name, value] pairs, repaired. kafkajs 2.2.4 decodes headers into a plain object
 * (node_modules/kafkajs/src/protocol/recordBatch/record/v0/decoder.js: `obj[key] === undefined ? value :
 * [obj[key], value]`), so for a name Object.prototype has (`constructor`, `toString`, `__proto__`, ...) it reads the
 * inherited member as an earlier value and delivers `[inherited, value]`. That first element is dropped here. A null
 * value (a header without a value) stays null. Names keep their first-seen order, repeated values theirs.
 */
export function fetchedHeaders(
  headers: Readonly<Record<string, FetchedHeaderValue | FetchedHeaderValue[]>> | undefined,
): [string, Buffer | null][] {
  const pairs: [string, Buffer | null][] = [];
  if (!headers) return pairs;
  for (const name of Object.keys(headers)) {
    let values = headers[name];
    if (values === undefined) continue;
    if (Array.isArray(values) && Object.hasOwn(Object.prototype, name)) {
      const inherited = name === "__proto__" ? Object.prototype : (Object.prototype as Record<string, unknown>)[name];
      if ((values[0] as unknown) === inherited) values = values.slice(1);
    }
    for (const value of Array.isArray(values) ? values : [values]) {
      if (value === undefined) continue;
      pairs.push([name, value === null ? null : Buffer.isBuffer(value) ? value : Buffer.from(value)]);
    }
  }
  return pairs;
}
