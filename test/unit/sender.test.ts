/**
 * The sender's failure semantics with a substituted kafkajs producer: retries with a new producer, gzip for an output
 * over its topic's limit, and an unwritable output holding up only its own source partition.
 */
import { CompressionTypes, type Producer, type ProducerBatch } from "kafkajs";
import { describe, expect, it } from "vitest";
import { type OutputRecord, processRecord } from "../../functions/core/process.ts";
import { kafkaSender, OutputTooLargeError } from "../../functions/processor/sender.ts";
import { ProducerSlot } from "../../functions/shared/kafka.ts";
import { fakeSlot } from "../support/fake-producer.ts";
import { mskRecord, validLogin } from "../support/msk.ts";

const options = {
  topics: { processed: "processed", deadLetter: "dlq" },
  processedAt: "2026-11-26T00:00:00.000Z",
};
const output = (partition: number, offset: number, value: string): OutputRecord =>
  processRecord(mskRecord({ partition, offset, value }), options);
const valid = (partition: number, offset: number) =>
  output(partition, offset, JSON.stringify(validLogin({ user_id: `u-${partition}-${offset}` })));

const limits = { requestBytes: 1024 * 1024, maxMessageBytes: { processed: 4096, dlq: 4096 } };

describe("kafkaSender", () => {
  it("reports an unwritable output as refused even when a later failure ends the send", async () => {
    const tooLarge = Object.assign(new Error("too large"), { type: "MESSAGE_TOO_LARGE" });
    const denied = Object.assign(new Error("denied"), { type: "TOPIC_AUTHORIZATION_FAILED" });
    const { slot } = fakeSlot((call) =>
      call.offsets.includes("processed:1") ? tooLarge : call.offsets.includes("processed:3") ? denied : undefined,
    );
    const result = await kafkaSender(slot, limits, { backoffMs: 1 }).send([valid(0, 1), valid(1, 2), valid(1, 3)]);
    expect(result.written).toBe(1);
    expect(result.error).toBe(denied);
    expect(result.refused).toBeInstanceOf(OutputTooLargeError);
  });

  it("retries a failed request with a new producer, then succeeds", async () => {
    const { slot, calls } = fakeSlot((_call, n) => (n === 1 ? new Error("connection reset") : undefined));
    const result = await kafkaSender(slot, limits, { backoffMs: 1 }).send([valid(0, 1), valid(0, 2)]);
    expect(result).toEqual({ written: 2, unwritten: [], error: undefined });
    expect(calls.map((c) => c.producer)).toEqual([1, 2]);
    expect(slot.discards).toBe(1);
  });

  it("gives up after the attempts, reporting everything from the failed request on as unwritten", async () => {
    const outputs = [valid(0, 1), output(1, 2, "x".repeat(3000)), valid(0, 3), valid(1, 4)];
    const { slot, calls } = fakeSlot((_call, n) => (n >= 2 ? new Error("broker gone") : undefined));
    // One record per request.
    const oneEach = { ...limits, requestBytes: 1 };
    const result = await kafkaSender(slot, oneEach, { attempts: 3, backoffMs: 1 }).send(outputs);
    expect(calls[0]?.offsets).toEqual(["processed:1"]);
    expect(calls.slice(1).map((c) => c.offsets)).toEqual([["dlq:2"], ["dlq:2"], ["dlq:2"]]);
    expect(calls).toHaveLength(4);
    expect(result.written).toBe(1);
    expect(result.unwritten).toEqual([1, 2, 3]);
    expect(result.error?.message).toBe("broker gone");
  });

  it("does not retry what cannot succeed (an authorization refusal)", async () => {
    const denied = Object.assign(new Error("denied"), { type: "TOPIC_AUTHORIZATION_FAILED" });
    const { slot, calls } = fakeSlot(() => denied);
    const result = await kafkaSender(slot, limits, { backoffMs: 1 }).send([valid(0, 1)]);
    expect(calls).toHaveLength(1);
    expect(result.unwritten).toEqual([0]);
  });

  it("sends an output over its topic's limit alone and gzip-compressed (the broker checks the compressed batch)", async () => {
    const big = output(0, 2, "y".repeat(10_000));
    const { slot, calls } = fakeSlot(() => undefined);
    const result = await kafkaSender(slot, limits).send([valid(0, 1), big, valid(0, 3)]);
    expect(result).toEqual({ written: 3, unwritten: [], error: undefined });
    expect(calls.map((c) => [c.offsets, c.compression])).toEqual([
      [["processed:1"], CompressionTypes.None],
      [["dlq:2"], CompressionTypes.GZIP],
      [["processed:3"], CompressionTypes.None],
    ]);
  });

  it("sends with the configured codec (OUTPUT_COMPRESSION), an output over its limit still alone and gzip-compressed", async () => {
    const big = output(0, 2, "y".repeat(10_000));
    const { slot, calls } = fakeSlot(() => undefined);
    const sender = kafkaSender(slot, limits, {}, { compression: CompressionTypes.ZSTD });
    const result = await sender.send([valid(0, 1), big, valid(0, 3), valid(0, 4)]);
    expect(result).toEqual({ written: 4, unwritten: [], error: undefined });
    expect(calls.map((c) => [c.offsets, c.compression])).toEqual([
      [["processed:1"], CompressionTypes.ZSTD],
      [["dlq:2"], CompressionTypes.GZIP],
      [["processed:3", "processed:4"], CompressionTypes.ZSTD],
    ]);
  });

  it("falls back to gzip for an output the broker refuses as too large with the configured codec", async () => {
    const tooLarge = Object.assign(new Error("too large"), { type: "MESSAGE_TOO_LARGE" });
    const { slot, calls } = fakeSlot((call) => (call.compression === CompressionTypes.LZ4 ? tooLarge : undefined));
    const sender = kafkaSender(slot, limits, { backoffMs: 1 }, { compression: CompressionTypes.LZ4 });
    const result = await sender.send([valid(0, 1)]);
    expect(result).toEqual({ written: 1, unwritten: [], error: undefined });
    expect(calls.map((c) => [c.offsets, c.compression])).toEqual([
      [["processed:1"], CompressionTypes.LZ4],
      [["processed:1"], CompressionTypes.LZ4],
      [["processed:1"], CompressionTypes.GZIP],
    ]);
  });

  it("holds up only the source partition of an output the broker refuses as too large", async () => {
    const tooLarge = Object.assign(new Error("too large"), { type: "MESSAGE_TOO_LARGE" });
    const big = output(0, 2, "z".repeat(10_000));
    const outputs = [valid(0, 1), big, valid(1, 7), valid(0, 3), valid(1, 8)];
    const { slot, calls } = fakeSlot((call) => (call.compression === CompressionTypes.GZIP ? tooLarge : undefined));
    const result = await kafkaSender(slot, limits, { backoffMs: 1 }).send(outputs);
    expect(result.written).toBe(3);
    expect(result.unwritten).toEqual([1, 3]);
    expect(result.error).toBeInstanceOf(OutputTooLargeError);
    expect(result.error?.message).toMatch(/is too large for dlq even compressed \(limit configured here: 4096 bytes\)/);
    // Tried once (too large is not retried); partition 1's records after it still went out, partition 0's did not.
    expect(calls.flatMap((c) => c.offsets)).toEqual(["processed:1", "dlq:2", "processed:7", "processed:8"]);
  });

  it("finds the record a broker with a lower limit refuses, one at a time, and passes the others", async () => {
    const tooLarge = Object.assign(new Error("too large"), { type: "MESSAGE_TOO_LARGE" });
    // The broker takes at most ~1000 bytes a request on "processed", whatever the configuration says.
    const big = output(1, 5, JSON.stringify(validLogin({ note: "n".repeat(1200) })));
    const outputs = [valid(0, 1), big, valid(0, 2), valid(1, 6)];
    const { slot, calls } = fakeSlot((call) =>
      call.offsets.includes("processed:5") || call.offsets.length > 1 ? tooLarge : undefined,
    );
    const result = await kafkaSender(slot, limits, { backoffMs: 1 }).send(outputs);
    expect(result.written).toBe(2);
    expect(result.unwritten).toEqual([1, 3]);
    expect(calls.map((c) => [c.offsets.join(","), c.compression])).toEqual([
      ["processed:1,processed:5,processed:2,processed:6", CompressionTypes.None],
      ["processed:1", CompressionTypes.None],
      ["processed:5", CompressionTypes.None],
      ["processed:5", CompressionTypes.GZIP],
      ["processed:2", CompressionTypes.None],
    ]);
  });

  it("starts no attempt after the deadline and reports the rest unwritten, so the response beats the timeout", async () => {
    const { slot, calls } = fakeSlot((_call, n) => (n === 1 ? new Error("connection reset") : undefined));
    const sender = kafkaSender(slot, { ...limits, requestBytes: 1 }, { backoffMs: 20 });
    const result = await sender.send([valid(0, 1), valid(0, 2)], { deadline: Date.now() + 10 });
    expect(calls).toHaveLength(1);
    expect(result.written).toBe(0);
    expect(result.unwritten).toEqual([0, 1]);
    expect(result.error?.name).toBe("SendDeadlineError");
    // No deadline: the same failure is retried and everything is written.
    const again = fakeSlot((_call, n) => (n === 1 ? new Error("connection reset") : undefined));
    expect((await kafkaSender(again.slot, limits, { backoffMs: 1 }).send([valid(0, 1)])).written).toBe(1);
  });

  it("keeps the producer after a refusal the broker answered, when the slot is told to", async () => {
    const tooLarge = Object.assign(new Error("too large"), { type: "MESSAGE_TOO_LARGE" });
    let made = 0;
    const slot = new ProducerSlot(
      async () => {
        made++;
        return {
          sendBatch: async () => {
            throw tooLarge;
          },
          disconnect: async () => {},
        } as unknown as Producer;
      },
      { keepAfter: (error) => error === tooLarge },
    );
    await kafkaSender(slot, limits).send([valid(0, 1)]);
    expect(made).toBe(1);
    expect(slot.discards).toBe(0);
  });
});
