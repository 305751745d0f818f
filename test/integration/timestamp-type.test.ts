/**
 * timestampType as Lambda reports it: from the record batch's attributes, so a topic with
 * message.timestamp.type=LogAppendTime gives LOG_APPEND_TIME and the broker's append time, a CreateTime topic
 * CREATE_TIME and the producer's timestamp. On the shared real broker, through the harness.
 */
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { MskEvent, MskRecord } from "../../functions/core/msk.ts";
import { createProducer } from "../../functions/shared/kafka.ts";
import { ensureTopics } from "../../functions/shared/topics.ts";
import { drain, testKafka } from "../support/kafka.ts";

const { kafka } = testKafka("timestamp-type-test");
/** A producer-set CreateTime far from now, so an append time cannot be mistaken for it. */
const CREATE_TIME = Date.parse("2021-03-04T05:06:07.000Z");

async function recordsFrom(timestampType: "CreateTime" | "LogAppendTime"): Promise<{
  records: MskRecord[];
  before: number;
  after: number;
}> {
  const topic = `timestamp-${timestampType}-${randomUUID().slice(0, 8)}`;
  await ensureTopics(kafka, [{ topic, numPartitions: 2, configs: { "message.timestamp.type": timestampType } }]);
  const producer = createProducer(kafka);
  await producer.connect();
  const before = Date.now();
  try {
    await producer.send({
      topic,
      acks: -1,
      messages: Array.from({ length: 10 }, (_, i) => ({
        key: `k${i}`,
        value: `v${i}`,
        timestamp: String(CREATE_TIME + i),
      })),
    });
  } finally {
    await producer.disconnect();
  }
  const after = Date.now();
  const events: MskEvent[] = [];
  await drain({
    topic,
    batchSize: 100,
    batchWindowMs: 50,
    // Records from 2021 are far past the deployed maximum age (1 day), which would park them uninvoked.
    maxRecordAgeSeconds: -1,
    invoke: async (event) => {
      events.push(event);
      return {};
    },
  });
  return { records: events.flatMap((event) => Object.values(event.records).flat()), before, after };
}

describe("timestampType from the record batch attributes", () => {
  it("reports LOG_APPEND_TIME and the broker's append time for a LogAppendTime topic", async () => {
    const { records, before, after } = await recordsFrom("LogAppendTime");
    expect(records).toHaveLength(10);
    for (const record of records) {
      expect(record.timestampType).toBe("LOG_APPEND_TIME");
      expect(record.timestamp).toBeGreaterThanOrEqual(before);
      expect(record.timestamp).toBeLessThanOrEqual(after);
    }
  });

  it("reports CREATE_TIME and the producer's timestamp for a CreateTime topic", async () => {
    const { records } = await recordsFrom("CreateTime");
    expect(records).toHaveLength(10);
    for (const record of records) {
      expect(record.timestampType).toBe("CREATE_TIME");
      const i = Number(
        Buffer.from(record.key as string, "base64")
          .toString()
          .slice(1),
      );
      expect(record.timestamp).toBe(CREATE_TIME + i);
    }
  });
});
