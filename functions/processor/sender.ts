/**
 * Writing the core's output records to Kafka, in event order, in produce requests that each destination accepts.
 */
import type { IHeaders, Message, TopicMessages } from "kafkajs";
import type { OutputHeaders, OutputRecord } from "../core/process.ts";
import { RECORD_BATCH_OVERHEAD } from "../core/record-size.ts";
import type { ProducerSlot } from "../shared/kafka.ts";

export interface SendResult {
  /** How many outputs, from the start, are durably written (acks=all). */
  readonly written: number;
  /** Why the rest were not. */
  readonly error?: Error;
}

/** Where the handler's output goes; the tests and the dry-run substitute their own. */
export interface OutputSender {
  send(outputs: readonly OutputRecord[]): Promise<SendResult>;
}

/** An output that no produce request can carry: it is over its topic's `max.message.bytes` on its own. */
export class OutputTooLargeError extends Error {
  constructor(
    readonly output: OutputRecord,
    readonly limit: number,
  ) {
    super(
      `a ${output.kind} record of ${RECORD_BATCH_OVERHEAD + output.bytes} bytes (from ${output.source.topic} ` +
        `partition ${output.source.partition} offset ${output.source.offset}) is over ${output.topic}'s ` +
        `max.message.bytes of ${limit}: raise that topic's max.message.bytes and the processor's matching setting`,
    );
    this.name = "OutputTooLargeError";
  }
}

export interface SendLimits {
  /** Upper bound on the bytes of one produce request. */
  readonly requestBytes: number;
  /** Each destination topic's `max.message.bytes`; a topic not listed is bounded by requestBytes. */
  readonly maxMessageBytes: Readonly<Record<string, number>>;
}

/**
 * kafkajs 2.2.4 cannot encode a null header value (`sizeOfHeaders` in
 * node_modules/kafkajs/src/protocol/recordBatch/record/v0/index.js calls Buffer.byteLength(null), which throws), so a
 * null header value is written as an empty one. Same record size either way (a one-byte varint).
 */
const EMPTY = Buffer.alloc(0);

function toKafkaHeaders(headers: OutputHeaders): IHeaders {
  for (const name in headers) {
    const value = headers[name];
    if (value === null) headers[name] = EMPTY;
    else if (Array.isArray(value) && value.includes(null)) headers[name] = value.map((v) => v ?? EMPTY);
  }
  return headers as IHeaders;
}

function toTopicMessages(outputs: readonly OutputRecord[], from: number, to: number): TopicMessages[] {
  const byTopic = new Map<string, Message[]>();
  for (let i = from; i < to; i++) {
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

/**
 * Where the produce request that starts at `start` ends: each topic's records together stay within that topic's
 * `max.message.bytes` (so every partition's record batch does, whichever partition kafkajs picks), the whole within
 * `requestBytes`. Returns `start` when the record at `start` cannot fit any request.
 */
export function requestEnd(outputs: readonly OutputRecord[], start: number, limits: SendLimits): number {
  const perTopic = new Map<string, number>();
  let total = 0;
  let end = start;
  while (end < outputs.length) {
    const output = outputs[end] as OutputRecord;
    const limit = limits.maxMessageBytes[output.topic] ?? limits.requestBytes;
    const topicBytes = perTopic.get(output.topic) ?? RECORD_BATCH_OVERHEAD;
    if (topicBytes + output.bytes > limit || (end > start && total + output.bytes > limits.requestBytes)) break;
    perTopic.set(output.topic, topicBytes + output.bytes);
    total += output.bytes;
    end++;
  }
  return end;
}

/**
 * Sends outputs in consecutive produce requests (see requestEnd), each awaited (acks=all) before the next: when one
 * fails, everything before it is written and nothing after it was tried. The producer comes from a ProducerSlot, so a
 * failed request also retires the producer that sent it.
 */
export function kafkaSender(slot: Pick<ProducerSlot, "run">, limits: SendLimits): OutputSender {
  return {
    async send(outputs) {
      let start = 0;
      while (start < outputs.length) {
        const end = requestEnd(outputs, start, limits);
        if (end === start) {
          const output = outputs[start] as OutputRecord;
          const limit = limits.maxMessageBytes[output.topic] ?? limits.requestBytes;
          return { written: start, error: new OutputTooLargeError(output, limit) };
        }
        try {
          await slot.run((producer) =>
            producer.sendBatch({ acks: -1, topicMessages: toTopicMessages(outputs, start, end) }),
          );
        } catch (error) {
          return { written: start, error: error instanceof Error ? error : new Error(String(error)) };
        }
        start = end;
      }
      return { written: outputs.length };
    },
  };
}
