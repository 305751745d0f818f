/**
 * A ProducerSlot whose kafkajs producers are substituted: each sendBatch is recorded (the source coordinates of its
 * messages, from their source.* headers) and fails as the test's `behaviour` says, so the sender's and the handler's
 * failure semantics can be driven request by request.
 */
import type { Producer, ProducerBatch } from "kafkajs";
import { ProducerSlot } from "../../functions/shared/kafka.ts";

export interface Call {
  /** Which producer of the slot sent it (a new one after a failure). */
  producer: number;
  compression: number | undefined;
  /** "topic:source.offset" of each message, in order. */
  offsets: string[];
  /** The source coordinates of each message, in order. */
  sources: { topic: string; partition: string; offset: number }[];
}

export function fakeSlot(behaviour: (call: Call, n: number) => Error | undefined) {
  const calls: Call[] = [];
  let made = 0;
  const slot = new ProducerSlot(async () => {
    const id = ++made;
    return {
      async sendBatch(batch: ProducerBatch) {
        const messages = (batch.topicMessages ?? []).flatMap((t) =>
          t.messages.map((m) => ({ topic: t.topic, headers: m.headers as Record<string, unknown> })),
        );
        const call: Call = {
          producer: id,
          compression: batch.compression,
          offsets: messages.map((m) => `${m.topic}:${String(m.headers["source.offset"])}`),
          sources: messages.map((m) => ({
            topic: m.topic,
            partition: String(m.headers["source.partition"]),
            offset: Number(m.headers["source.offset"]),
          })),
        };
        calls.push(call);
        const error = behaviour(call, calls.length);
        if (error) throw error;
        return [];
      },
      async disconnect() {},
    } as unknown as Producer;
  });
  return { slot, calls };
}
