/**
 * The Lambda adapter's logic (the entry point is handler.ts): MSK event in, records produced to the processed and
 * dead-letter topics, summary out.
 *
 * Failure semantics are at-least-once. The event source mapping commits a batch's offsets when the invocation
 * succeeds, so this handler only succeeds for records that are durably written (acks=all). When producing fails it
 * either names, per partition, the first record that was not written (PARTIAL_BATCH_RESPONSE=true: Lambda retries
 * from there) or throws (Lambda retries the whole batch). Either way a record is never reported done unwritten.
 */
import { injectLambdaContext } from "@aws-lambda-powertools/logger/middleware";
import type { Metrics } from "@aws-lambda-powertools/metrics";
import { logMetrics } from "@aws-lambda-powertools/metrics/middleware";
import middy from "@middy/core";
import type { Context } from "aws-lambda";
import { InvalidEventError, type MskEvent, parseMskEvent } from "../core/msk.ts";
import {
  type BatchItemFailure,
  type BatchSummary,
  firstUnwrittenPerPartition,
  type ProcessOptions,
  processEvent,
  summarize,
} from "../core/process.ts";
import { compressionType, ensureCodec } from "../shared/codecs.ts";
import { type ProcessorConfig, parseBrokers } from "../shared/config.ts";
import { type AwsClients, connectKafka, createProducer, ProducerSlot } from "../shared/kafka.ts";
import { log, logger } from "../shared/log.ts";
import { isRetriable, isTooLarge, kafkaSender, type OutputSender } from "./sender.ts";
import { addBatchMetrics, offsetRanges, recordAges } from "./telemetry.ts";

export interface HandlerSummary extends BatchSummary {
  /** Records durably written to Kafka (all of them when the batch succeeds). */
  written: number;
  ms: number;
}

export interface HandlerResponse {
  batchItemFailures: BatchItemFailure[];
  summary: HandlerSummary;
}

export class ProduceError extends Error {
  constructor(message: string, options: { cause: unknown }) {
    super(message, options);
    this.name = "ProduceError";
  }
}

export class KafkaConnectError extends Error {
  constructor(message: string, options: { cause: unknown }) {
    super(message, options);
    this.name = "KafkaConnectError";
  }
}

/** An event from another cluster than the configured one (MSK_CLUSTER_ARN): refused before anything is produced. */
export class EventSourceMismatchError extends InvalidEventError {
  constructor(message: string) {
    super(message);
    this.name = "EventSourceMismatchError";
  }
}

/**
 * With a cluster configured (MSK_CLUSTER_ARN, as the stack sets it) only that cluster's events are processed: the
 * producer connects to that cluster's brokers (GetBootstrapBrokers), never to an event's `bootstrapServers`, and an
 * event naming another cluster, or none, is refused. Without one (local runs) any event is accepted.
 */
export function checkEventSource(event: Pick<MskEvent, "eventSourceArn">, config: ProcessorConfig): void {
  const expected = config.connection.clusterArn;
  if (expected === undefined || event.eventSourceArn === expected) return;
  const got = event.eventSourceArn === undefined ? "no eventSourceArn" : `eventSourceArn "${event.eventSourceArn}"`;
  throw new EventSourceMismatchError(
    `event refused: it has ${got}, but this function is configured for MSK_CLUSTER_ARN "${expected}" and ` +
      "processes only that cluster's records (it produces to that cluster, never to an event's bootstrapServers). " +
      "Point the event source mapping at that cluster, or set MSK_CLUSTER_ARN to the cluster it reads.",
  );
}

export interface ProcessorDependencies {
  readonly config: ProcessorConfig;
  /** The sender for this invocation; the default connects one producer per container, lazily. */
  readonly getSender: (event: MskEvent) => Promise<OutputSender>;
  /** @default () => new Date() */
  readonly now?: () => Date;
  /** CloudWatch metrics (EMF); flushed by the handler's middleware. @default none */
  readonly metrics?: Metrics;
  /** The input contract. @default the compiled schemas/user-login.schema.json */
  readonly validate?: ProcessOptions["validate"];
}

/**
 * How long before the function's timeout the sender stops starting produce requests: one request may take kafkajs's
 * request timeout (30 s, functions/shared/kafka.ts) and the response must still reach Lambda.
 */
export const SEND_RESERVE_MS = 35_000;

/** The handler's logic, with its collaborators passed in. */
export async function processMskEvent(
  event: MskEvent,
  deps: ProcessorDependencies,
  context?: Pick<Context, "getRemainingTimeInMillis">,
): Promise<HandlerResponse> {
  checkEventSource(event, deps.config);
  const started = performance.now();
  const { topics, partialBatchResponse } = deps.config;
  const now = deps.now?.() ?? new Date();
  const outputs = processEvent(event, {
    topics: { processed: topics.processed, deadLetter: topics.deadLetter },
    processedAt: now.toISOString(),
    validate: deps.validate,
    maxProcessedBytes: deps.config.maxMessageBytes.processed,
  });
  const counts = summarize(outputs);
  let written = 0;
  let batchItemFailures: BatchItemFailure[] = [];
  let failure: Error | undefined;
  let unwritable = 0;
  if (outputs.length > 0) {
    const sender = await deps.getSender(event);
    const deadline =
      typeof context?.getRemainingTimeInMillis === "function"
        ? Date.now() + context.getRemainingTimeInMillis() - SEND_RESERVE_MS
        : undefined;
    const result = await sender.send(outputs, { deadline });
    written = result.written;
    if (written < outputs.length) {
      let unwritten = result.unwritten ?? outputs.map((_, i) => i).slice(written);
      // A sender whose list does not match its count: none of the outputs counts as written (duplicates, never a loss).
      if (unwritten.length !== outputs.length - written) unwritten = outputs.map((_, i) => i);
      batchItemFailures = firstUnwrittenPerPartition(outputs, unwritten);
      const cause = result.error ?? new Error("the sender stopped early without an error");
      // A record over its topic's limit fails every retry: a misconfigured cluster, said loudly (metric, alarm), also
      // when a later failure ended the send.
      if (result.refused || isTooLarge(cause)) unwritable = 1;
      log("ERROR", isTooLarge(cause) ? "a record is too large for its topic" : "producing the batch failed", {
        written,
        unwritten: outputs.length - written,
        batchItemFailures,
        error: cause.message,
        ...(result.refused && result.refused !== cause ? { refused: result.refused.message } : {}),
      });
      failure = cause;
    }
  }
  const summary: HandlerSummary = { ...counts, written, ms: Math.round(performance.now() - started) };
  if (deps.metrics) {
    addBatchMetrics(deps.metrics, {
      summary: counts,
      durationMs: summary.ms,
      produceFailures: outputs.length - written,
      unwritable,
      agesMs: recordAges(event, now.getTime()),
    });
  }
  log("INFO", "batch done", {
    eventSourceArn: event.eventSourceArn,
    offsets: offsetRanges(event),
    ...summary,
    failedPartitions: batchItemFailures.length,
  });
  // Metrics and the summary line first: a failed batch is counted too (ProduceFailures).
  if (failure && !partialBatchResponse) {
    throw new ProduceError(
      `wrote ${written} of ${outputs.length} records before producing failed: ${failure.message}; ` +
        "failing the invocation so that the event source mapping retries the batch",
      { cause: failure },
    );
  }
  return { batchItemFailures, summary };
}

/** Rejects anything that is not an MSK event before the handler runs. */
const mskEventValidator = (): middy.MiddlewareObj<unknown, HandlerResponse> => ({
  before: (request) => {
    request.event = parseMskEvent(request.event);
  },
});

/**
 * The middy handler: Lambda context in every log line, the MSK event checked, metrics flushed once per invocation.
 * `logEvent: false` explicitly: otherwise POWERTOOLS_LOGGER_LOG_EVENT=true (an environment setting someone may turn
 * on to debug) would make Powertools log every event whole, every record's key, value and headers with it.
 */
export function createHandler(deps: ProcessorDependencies) {
  const handler = middy<unknown, HandlerResponse>().use(
    injectLambdaContext(logger, { resetKeys: true, logEvent: false }),
  );
  if (deps.metrics) handler.use(logMetrics(deps.metrics));
  return handler
    .use(mskEventValidator())
    .handler((event, context) => processMskEvent(event as MskEvent, deps, context));
}

/**
 * One producer per container (acks=all, no retries of its own: see createProducer): created on first use, connected
 * once, reused by later invocations (kafkajs reconnects and re-authenticates it after idle periods and broker restarts)
 * until a send fails for any reason but a refusal the broker answered: then it is discarded and the next attempt
 * connects a new one (see ProducerSlot). A failed connect is not cached either.
 */
export function containerSender(
  config: ProcessorConfig,
  aws: AwsClients = {},
): {
  getSender: (event: MskEvent) => Promise<OutputSender>;
  close: () => Promise<void>;
  /** How many producers this container has connected (1 while the first keeps working). */
  readonly connects: () => number;
  /** How many it discarded after a failed send. */
  readonly discards: () => number;
} {
  let slot: ProducerSlot | undefined;
  let sender: OutputSender | undefined;
  const limits = {
    requestBytes: config.produceChunkBytes,
    maxMessageBytes: {
      [config.topics.processed]: config.maxMessageBytes.processed,
      [config.topics.deadLetter]: config.maxMessageBytes.deadLetter,
    },
  };
  const connect = async (event: MskEvent) => {
    // The event's bootstrapServers only when nothing is configured (local runs): with MSK_CLUSTER_ARN or KAFKA_BROKERS
    // the IAM token goes only to the configured cluster's brokers, whatever an event says.
    const { brokers: configured, clusterArn } = config.connection;
    const fallback =
      !configured && !clusterArn && event.bootstrapServers
        ? parseBrokers(event.bootstrapServers, "event.bootstrapServers")
        : undefined;
    const { kafka, brokers } = await connectKafka(config.connection, config.clientId, {
      aws,
      fallbackBrokers: fallback,
    });
    // A codec that cannot run here (zstd without node:zlib zstd or its packages) fails the cold start, not a send.
    await ensureCodec(config.outputCompression);
    const producer = createProducer(kafka);
    try {
      await producer.connect();
    } catch (error) {
      throw new KafkaConnectError(
        `could not connect the producer to ${brokers.join(",")} (KAFKA_AUTH=${config.connection.auth}): ${(error as Error).message}`,
        { cause: error },
      );
    }
    return producer;
  };
  return {
    async getSender(event) {
      checkEventSource(event, config);
      if (!slot) {
        // A refusal the broker answered (too large, not authorized) leaves the connection sound: keep the producer.
        const created = new ProducerSlot(() => connect(event), {
          keepAfter: (error) => isTooLarge(error) || !isRetriable(error),
        });
        slot = created;
        sender = kafkaSender(created, limits, {}, { compression: compressionType(config.outputCompression) });
      }
      // Connect now, so that a connection failure fails the invocation with KafkaConnectError before any send.
      await slot.run(async () => {});
      return sender as OutputSender;
    },
    async close() {
      await slot?.close();
    },
    connects: () => slot?.connects ?? 0,
    discards: () => slot?.discards ?? 0,
  };
}
