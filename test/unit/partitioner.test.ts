import { createRequire } from "node:module";
import fc from "fast-check";
import { Partitioners } from "kafkajs";
import { describe, expect, it } from "vitest";
import { FastDefaultPartitioner, murmur2 } from "../../functions/shared/partitioner.ts";

const kafkajsMurmur2 = createRequire(import.meta.url)("kafkajs/src/producer/partitioners/default/murmur2.js") as (
  key: Buffer | string,
) => number;

const metadata = (count: number, leaderless: number[] = []) =>
  Array.from({ length: count }, (_, partitionId) => ({
    partitionId,
    leader: leaderless.includes(partitionId) ? -1 : 0,
    partitionErrorCode: 0,
    replicas: [0],
    isr: [0],
  }));

describe("FastDefaultPartitioner", () => {
  it("hashes every key as kafkajs's murmur2 does", () => {
    for (const key of ["", "a", "ab", "abc", "abcd", "21", "user-1", "caf\u00e9", "😀"])
      expect(murmur2(Buffer.from(key))).toBe(kafkajsMurmur2(Buffer.from(key)));
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
        const key = Buffer.from(bytes);
        expect(murmur2(key)).toBe(kafkajsMurmur2(key));
      }),
      { numRuns: 5000 },
    );
  });

  it("picks the partition kafkajs's DefaultPartitioner picks for any key, Buffer or text", () => {
    const fast = FastDefaultPartitioner();
    const reference = Partitioners.DefaultPartitioner();
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
          fc.string(),
          fc.uuid(),
        ),
        fc.integer({ min: 1, max: 200 }),
        (key, partitions) => {
          const args = { topic: "t", partitionMetadata: metadata(partitions), message: { key, value: "v" } };
          expect(fast(args)).toBe(reference(args));
        },
      ),
      { numRuns: 5000 },
    );
  });

  it("keeps a message's own partition, and spreads key-less messages round robin over partitions with a leader", () => {
    const fast = FastDefaultPartitioner();
    expect(fast({ topic: "t", partitionMetadata: metadata(3), message: { key: "k", value: "v", partition: 2 } })).toBe(
      2,
    );
    const seen = new Set<number>();
    for (let i = 0; i < 12; i++)
      seen.add(fast({ topic: "t", partitionMetadata: metadata(4, [1]), message: { key: null, value: "v" } }));
    expect([...seen].sort()).toEqual([0, 2, 3]);
    const counts = [0, 0, 0];
    for (let i = 0; i < 30; i++) {
      const p = fast({ topic: "u", partitionMetadata: metadata(3), message: { value: "v" } });
      counts[p] = (counts[p] ?? 0) + 1;
    }
    expect(counts).toEqual([10, 10, 10]);
  });
});
