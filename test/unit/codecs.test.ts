/**
 * The LZ4 frames the project writes keep the LZ4 block format's end-of-block rules, which lz4js's compressBlock alone
 * breaks on some blocks (and Kafka's Java reader then refuses them; the Java check is in
 * test/integration/codecs.test.ts).
 */
import { createRequire } from "node:module";
import { compressBlock } from "lz4js";
import { describe, expect, it } from "vitest";
import { GeneratorModel } from "../../functions/generator/model.ts";
import { lz4Frame, lz4LastSequence, lz4Unframe } from "../../functions/shared/codecs.ts";

const require = createRequire(import.meta.url);
// kafkajs's own record encoder: the bytes a record batch compresses.
const Record = require("kafkajs/src/protocol/recordBatch/record/v0");
const Encoder = require("kafkajs/src/protocol/encoder");

/** The uncompressed records part of a batch of `count` generated logins, as kafkajs encodes it. */
function recordSet(model: GeneratorModel, count: number): Buffer {
  const records = Array.from({ length: count }, (_, i) => {
    const r = model.next();
    return Record({ offsetDelta: i, timestampDelta: i, key: Buffer.from(String(r.key)), value: r.value, headers: {} });
  });
  return new Encoder().writeEncoderArray(records).buffer as Buffer;
}

/** The blocks of a frame written by lz4Frame (7-byte header, no checksums): [compressed?, bytes]. */
function blocksOf(frame: Buffer): { compressed: boolean; bytes: Buffer }[] {
  const blocks: { compressed: boolean; bytes: Buffer }[] = [];
  let at = 7;
  for (let size = frame.readUInt32LE(at); size !== 0; size = frame.readUInt32LE(at)) {
    const length = size & 0x7fffffff;
    blocks.push({ compressed: (size & 0x80000000) === 0, bytes: frame.subarray(at + 4, at + 4 + length) });
    at += 4 + length;
  }
  return blocks;
}

describe("LZ4 frames", () => {
  it("keep the end-of-block rules in every compressed block, where lz4js alone breaks them, and round-trip", () => {
    const model = new GeneratorModel({ seed: 42 });
    let brokenByLz4js = 0;
    let compressedBlocks = 0;
    for (let batch = 0; batch < 60; batch++) {
      const data = recordSet(model, 300 + ((batch * 37) % 300));
      const frame = lz4Frame(data);
      expect(lz4Unframe(frame).equals(data)).toBe(true);
      let start = 0;
      for (const block of blocksOf(frame)) {
        const decoded = Math.min(64 * 1024, data.length - start);
        if (block.compressed) {
          compressedBlocks++;
          expect(lz4LastSequence(block.bytes, decoded)).toBeGreaterThanOrEqual(0);
          // What lz4js would have written for the same block.
          const raw = Buffer.alloc(block.bytes.length + decoded + 64);
          const size = compressBlock(data.subarray(start, start + decoded), raw, 0, decoded, new Uint32Array(1 << 16));
          if (size > 0 && lz4LastSequence(raw.subarray(0, size), decoded) < 0) brokenByLz4js++;
        }
        start += decoded;
      }
      expect(start).toBe(data.length);
    }
    expect(compressedBlocks).toBeGreaterThan(60);
    // The rewrite is exercised: realistic data makes lz4js break the rules in some blocks.
    expect(brokenByLz4js).toBeGreaterThan(0);
  });

  it("finds a match too close to the end of a block", () => {
    // 20 literals "abcd..." then a match of 8 bytes at offset 4 ending 0 bytes before the end: breaks both rules.
    const literals = Buffer.from("abcdefghijklmnopqrst");
    const block = Buffer.concat([Buffer.from([0xf0 | 4, 20 - 15]), literals, Buffer.from([4, 0])]);
    expect(lz4LastSequence(block, 28)).toBe(-1);
    // Literals only: valid, the last sequence starts at 0.
    expect(lz4LastSequence(Buffer.concat([Buffer.from([0xf0, 5]), literals]), 20)).toBe(0);
  });
});
