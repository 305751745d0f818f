/**
 * Writing the core's output records to Kafka, in event order, in produce requests that each destination accepts.
 */
import { CompressionTypes, type IHeaders, type Message, type TopicMessages } from "kafkajs";
import { partitionId } from "../core/msk.ts";
import type { OutputHeaders, OutputRecord } from "../core/process.ts";
import { RECORD_BATCH_OVERHEAD } from "../core/record-size.ts";
import { NULL_HEADER_VALUE, type ProducerSlot } from "../shared/kafka.ts";

export interface SendResult {
  /** How many outputs are durably written (acks=all). */
  readonly written: number;
  /**
   * Indices of the outputs that are not, ascending; never an output written after an unwritten one of its source
   * partition. @default all after the first `written` (a sender that stops at its first failure)
   */
  readonly unwritten?: readonly number[];
  /** Why they are not: what ended the send, else the first refusal. */
  readonly error?: Error;
  /** The first output the broker refused as too large even alone (unwritable), also when a later failure ended the send. */
  readonly refused?: OutputTooLargeError;
}

export interface SendOptions {
  /**
   * Epoch ms after which no produce attempt starts (what is left is reported unwritten), so that a partial batch
   * response still reaches Lambda before the function times out. @default none
   */
  readonly deadline?: number;
}

/** Where the handler's output goes; the tests and the dry-run substitute their own. */
export interface OutputSender {
  send(outputs: readonly OutputRecord[], options?: SendOptions): Promise<SendResult>;
}

/** No time left in the invocation to start another produce request. */
export class SendDeadlineError extends Error {
  constructor() {
    super("no time left in the invocation to start another produce request; the rest is left for the retry");
    this.name = "SendDeadlineError";
  }
}

/** An output that no produce request can carry: the broker refused it as too large, gzip-compressed and alone. */
export class OutputTooLargeError extends Error {
  constructor(
    readonly output: OutputRecord,
    readonly limit: number,
    options?: { cause?: unknown },
  ) {
    super(
      `a ${output.kind} record of ${RECORD_BATCH_OVERHEAD + output.bytes} bytes (from ${output.source.topic} ` +
        `partition ${output.source.partition} offset ${output.source.offset}) is too large for ${output.topic} ` +
        `even compressed (limit configured here: ${limit} bytes): raise that topic's max.message.bytes`,
      options,
    );
    this.name = "OutputTooLargeError";
  }
}

/**
 * A record over its topic's limit: found by the sender (OutputTooLargeError) or by the broker (kafkajs
 * KafkaJSProtocolError type MESSAGE_TOO_LARGE / RECORD_LIST_TOO_LARGE, possibly inside KafkaJSNumberOfRetriesExceeded).
 */
export function isTooLarge(error: unknown): boolean {
  return errorChain(error).some(
    (e) => e instanceof OutputTooLargeError || e.type === "MESSAGE_TOO_LARGE" || e.type === "RECORD_LIST_TOO_LARGE",
  );
}

type KafkaError = { name?: string; type?: string; retriable?: boolean; cause?: unknown; originalError?: unknown };

function errorChain(error: unknown): KafkaError[] {
  const chain: KafkaError[] = [];
  let e = error as KafkaError | undefined;
  for (let depth = 0; e && typeof e === "object" && depth < 10; depth++) {
    chain.push(e);
    e = (e.originalError ?? e.cause) as KafkaError | undefined;
  }
  return chain;
}

/**
 * Worth another attempt: anything but a record too large, a refused authorization, a record the broker finds invalid,
 * or the invocation's deadline.
 */
export function isRetriable(error: unknown): boolean {
  return !errorChain(error).some(
    (e) =>
      e instanceof OutputTooLargeError ||
      e instanceof SendDeadlineError ||
      /TOO_LARGE|AUTHORIZATION_FAILED|INVALID_RECORD/.test(e.type ?? ""),
  );
}

export interface SendLimits {
  /** Upper bound on the bytes of one produce request. */
  readonly requestBytes: number;
  /** Each destination topic's `max.message.bytes`; a topic not listed is bounded by requestBytes. */
  readonly maxMessageBytes: Readonly<Record<string, number>>;
}

export interface SendCompression {
  /**
   * The codec of every produce request (OUTPUT_COMPRESSION): the request sizes above are reckoned uncompressed, an
   * upper bound of the compressed batch the broker checks. An output over its limit uncompressed is sent alone and
   * gzip-compressed whatever this is. @default CompressionTypes.None
   */
  readonly compression?: CompressionTypes;
}

export interface SendRetry {
  /** Attempts per produce request, each with a new producer. @default 3 */
  readonly attempts?: number;
  /** Pause before the second attempt, doubled for each further one. @default 200 */
  readonly backoffMs?: number;
  /** No new attempt starts once a send has taken this long. @default 15000 */
  readonly budgetMs?: number;
}

/** A null header value is written as an empty one (NULL_HEADER_VALUE: kafkajs cannot encode null). */
const EMPTY = NULL_HEADER_VALUE;

function toKafkaHeaders(headers: OutputHeaders): IHeaders {
  for (const name in headers) {
    const value = headers[name];
    if (value === null) headers[name] = EMPTY;
    else if (Array.isArray(value) && value.includes(null)) headers[name] = value.map((v) => v ?? EMPTY);
  }
  return headers as IHeaders;
}

function toTopicMessages(outputs: readonly OutputRecord[], indices: readonly number[]): TopicMessages[] {
  const byTopic = new Map<string, Message[]>();
  for (const i of indices) {
    const output = outputs[i] as OutputRecord;
    let messages = byTopic.get(output.topic);
    if (!messages) {
      messages = [];
      byTopic.set(output.topic, messages);
    }
    messages.push({ key: output.key, value: output.value, headers: toKafkaHeaders(output.headers) });
  }
  return [...byTopic].map(([topic, messages]) => ({ topic, messages }));
}

const limitOf = (output: OutputRecord, limits: SendLimits) =>
  limits.maxMessageBytes[output.topic] ?? limits.requestBytes;

/** Whether the output fits its topic's limit on its own, uncompressed. */
export const fitsAlone = (output: OutputRecord, limits: SendLimits): boolean =>
  RECORD_BATCH_OVERHEAD + output.bytes <= limitOf(output, limits);

/**
 * The next produce request from `start`: consecutive outputs, leaving out (`skipped`) those of `blocked` source
 * partitions, while each topic's records together stay within that topic's `max.message.bytes` (so every partition's
 * record batch does, whichever partition a record lands on) and the whole within `requestBytes`. It stops before an
 * output that does not fit on its own; `indices` is empty when that is the first one.
 */
export function nextRequest(
  outputs: readonly OutputRecord[],
  start: number,
  limits: SendLimits,
  blocked: ReadonlySet<string> = new Set(),
): { indices: number[]; skipped: number[]; end: number } {
  const indices: number[] = [];
  const skipped: number[] = [];
  const perTopic = new Map<string, number>();
  let total = 0;
  let end = start;
  for (; end < outputs.length; end++) {
    const output = outputs[end] as OutputRecord;
    if (blocked.size > 0 && blocked.has(partitionId(output.source))) {
      skipped.push(end);
      continue;
    }
    const topicBytes = perTopic.get(output.topic) ?? RECORD_BATCH_OVERHEAD;
    if (topicBytes + output.bytes > limitOf(output, limits)) break;
    if (indices.length > 0 && total + output.bytes > limits.requestBytes) break;
    perTopic.set(output.topic, topicBytes + output.bytes);
    total += output.bytes;
    indices.push(end);
  }
  return { indices, skipped, end };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Sends outputs in event order, one produce request at a time (acks=all), each awaited before the next.
 *
 * A failed request is tried again, up to `retry.attempts` times, with a new producer each time (the slot retires
 * the one that failed): the producers have no retries of their own (see createProducer). When the attempts run out,
 * nothing after the failed request is sent: everything before it is written, the rest is reported unwritten.
 *
 * Requests go out with `output.compression` (none by default). An output over its topic's limit on its own (a dead
 * letter of a record that was compressed at the source, say) is sent alone, gzip-compressed, since the broker checks
 * the compressed batch; so is an output the broker refuses as too large with the configured codec. If the broker still refuses it, it is
 * unwritable: it and every later output of the same source partition stay unwritten (order within a partition),
 * while other partitions' outputs go on, so one such record does not hold up the rest of the batch.
 */
export function kafkaSender(
  slot: Pick<ProducerSlot, "run">,
  limits: SendLimits,
  retry: SendRetry = {},
  output: SendCompression = {},
): OutputSender {
  const configured = output.compression ?? CompressionTypes.None;
  const attempts = retry.attempts ?? 3;
  const backoffMs = retry.backoffMs ?? 200;
  const budgetMs = retry.budgetMs ?? 15_000;
  const produce = async (topicMessages: TopicMessages[], compressed: boolean, deadline: number) => {
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      if (Date.now() > deadline) throw new SendDeadlineError();
      try {
        await slot.run((producer) =>
          producer.sendBatch({
            acks: -1,
            topicMessages,
            compression: compressed ? CompressionTypes.GZIP : configured,
          }),
        );
        return;
      } catch (error) {
        if (attempt >= attempts || !isRetriable(error) || Date.now() - started > budgetMs) throw error;
        await sleep(backoffMs * 2 ** (attempt - 1));
      }
    }
  };
  return {
    async send(outputs, options = {}) {
      const deadline = options.deadline ?? Number.POSITIVE_INFINITY;
      const unwritten: number[] = [];
      const blocked = new Set<string>();
      let written = 0;
      let error: Error | undefined;
      let refused: OutputTooLargeError | undefined;
      /**
       * One output in a request of its own: gzip when it is over the limit uncompressed, else the configured codec
       * first. False: unwritable.
       */
      const sendAlone = async (k: number): Promise<boolean> => {
        const output = outputs[k] as OutputRecord;
        let compressed = !fitsAlone(output, limits);
        for (;;) {
          try {
            await produce(toTopicMessages(outputs, [k]), compressed, deadline);
            return true;
          } catch (cause) {
            if (!isTooLarge(cause)) throw cause;
            if (compressed) {
              blocked.add(partitionId(output.source));
              refused ??= new OutputTooLargeError(output, limitOf(output, limits), { cause });
              error ??= refused;
              return false;
            }
            compressed = true;
          }
        }
      };
      /** Outputs from..to-1 one by one; false when a failure other than "too large" ended the send. */
      const oneByOne = async (from: number, to: number): Promise<boolean> => {
        for (let k = from; k < to; k++) {
          if (blocked.has(partitionId((outputs[k] as OutputRecord).source))) unwritten.push(k);
          else {
            try {
              if (await sendAlone(k)) written++;
              else unwritten.push(k);
            } catch (cause) {
              giveUp(k, cause);
              return false;
            }
          }
        }
        return true;
      };
      const giveUp = (from: number, cause: unknown) => {
        for (let j = from; j < outputs.length; j++) unwritten.push(j);
        error = cause instanceof Error ? cause : new Error(String(cause));
      };
      let i = 0;
      while (i < outputs.length) {
        const output = outputs[i] as OutputRecord;
        if (blocked.has(partitionId(output.source)) || !fitsAlone(output, limits)) {
          if (!(await oneByOne(i, i + 1))) break;
          i++;
          continue;
        }
        const request = nextRequest(outputs, i, limits, blocked);
        try {
          await produce(toTopicMessages(outputs, request.indices), false, deadline);
          written += request.indices.length;
          unwritten.push(...request.skipped);
        } catch (cause) {
          if (!isTooLarge(cause)) {
            giveUp(i, cause);
            break;
          }
          // The broker's limit is below the configured one: find the record(s) it refuses, one at a time.
          if (!(await oneByOne(i, request.end))) break;
        }
        i = request.end;
      }
      const sorted = [...new Set(unwritten)].sort((a, b) => a - b);
      return { written, unwritten: sorted, error, ...(refused ? { refused } : {}) };
    },
  };
}
