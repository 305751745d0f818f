/**
 * Writing the core's output records to Kafka, in event order, in bounded produce requests.
 */
import type { Message, Producer, TopicMessages } from "kafkajs";
import type { OutputHeaders, OutputRecord } from "../core/process.ts";

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

function headerBytes(headers: OutputHeaders): number {
  let bytes = 0;
  for (const name in headers) {
    const value = headers[name];
    const values = Array.isArray(value) ? value : [value];
    for (const v of values) bytes += name.length + (v === undefined ? 0 : v.length) + 8;
  }
  return bytes;
}

/** A rough upper bound of a record's size on the wire, to keep produce requests under the broker's limits. */
export function estimateBytes(output: OutputRecord): number {
  return 70 + (output.key?.length ?? 0) + (output.value?.length ?? 0) + headerBytes(output.headers);
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
    messages.push({ key: output.key, value: output.value, headers: output.headers });
  }
  return [...byTopic].map(([topic, messages]) => ({ topic, messages }));
}

/**
 * Sends outputs in consecutive chunks of at most `maxChunkBytes`, one produce request per chunk, each awaited
 * (acks=all) before the next: when a chunk fails, everything before it is written and nothing after it was tried.
 */
export function kafkaSender(producer: Producer, maxChunkBytes: number): OutputSender {
  return {
    async send(outputs) {
      let start = 0;
      while (start < outputs.length) {
        let end = start;
        let bytes = 0;
        while (end < outputs.length) {
          const size = estimateBytes(outputs[end] as OutputRecord);
          if (end > start && bytes + size > maxChunkBytes) break;
          bytes += size;
          end++;
        }
        try {
          await producer.sendBatch({ acks: -1, topicMessages: toTopicMessages(outputs, start, end) });
        } catch (error) {
          return { written: start, error: error instanceof Error ? error : new Error(String(error)) };
        }
        start = end;
      }
      return { written: outputs.length };
    },
  };
}
