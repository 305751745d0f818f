/**
 * Every Kafka compression codec for kafkajs, registered once for the whole process: importing this module (as
 * kafka.ts, the only kafkajs factory, does) lets every kafkajs client read and write gzip, snappy, lz4 and zstd record
 * batches, as Lambda's event source mapping reads them all.
 *
 * kafkajs 2.2.4's codec interface (node_modules/kafkajs/src/protocol/message/compression/index.js): `Codecs`, exported
 * as `CompressionCodecs`, maps a codec id (a record batch's `attributes & 0x07`: None 0, GZIP 1, Snappy 2, LZ4 3,
 * ZSTD 4) to a factory `() => codec`; only GZIP is built in (gzip.js beside it), the others throw
 * KafkaJSNotImplemented. A codec is `{ compress(encoder): Promise<Buffer>, decompress(buffer): Promise<Buffer> }`:
 * the producer passes the encoder of a batch's records (`codec.compress(recordsEncoder)` in
 * node_modules/kafkajs/src/protocol/recordBatch/v0/index.js, its bytes in `encoder.buffer`), the consumer the
 * compressed records of a fetched batch (`codec.decompress(compressedRecordsBuffer)` in
 * node_modules/kafkajs/src/protocol/recordBatch/v0/decoder.js, codec chosen by `lookupCodecByAttributes`).
 *
 * The codecs, none of which needs a native build:
 * - snappy: `snappyjs` (pure JavaScript). Writes raw snappy, as kafkajs-snappy and franz-go do; reads raw snappy and
 *   the xerial framing that the Java client writes (org.xerial.snappy.SnappyOutputStream), which the Java client's
 *   SnappyInputStream reads back along with raw snappy.
 * - lz4: `lz4js` (pure JavaScript) blocks in an LZ4 *frame* written here (see lz4Frame): Kafka uses the LZ4 frame
 *   format (magic v1+ with the correct header checksum, KafkaLZ4BlockOutputStream / KafkaLZ4BlockInputStream), and its
 *   reader refuses frames without the block-independence flag, which lz4js's own frame writer leaves unset: the
 *   broker answers such a produce request with UNKNOWN_SERVER_ERROR (tried with test/integration/codecs.test.ts).
 * - zstd: node:zlib where Node.js has it (22.15 and later, so the deployed nodejs22.x runtime), else `@bokuweb/zstd-wasm`
 *   (WebAssembly, compress) and `fzstd` (pure JavaScript, decompress: it reads frames without a content size, as the
 *   Java client's streaming writer makes them), loaded only then. Both are left out of the bundles (lib/bundling.ts).
 */
import zlib from "node:zlib";
import kafkajs from "kafkajs";
import { compressBlock, compressBound, decompress as lz4Decompress } from "lz4js";
import { hash as xxh32 } from "lz4js/xxh32.js";
import snappy from "snappyjs";
import { ConfigError, type OutputCompression } from "./config.ts";

// CommonJS: Node's named-export detection finds CompressionTypes in kafkajs's index.js but not CompressionCodecs.
const { CompressionCodecs, CompressionTypes } = kafkajs;
type CompressionTypes = kafkajs.CompressionTypes;

/** A codec as kafkajs calls it (see the module comment). */
export interface KafkaCodec {
  compress(encoder: { buffer: Buffer }): Promise<Buffer>;
  decompress(buffer: Buffer): Promise<Buffer>;
}

/** One codec over plain buffers, and what implements it here (for the bench). */
export interface Codec {
  readonly type: CompressionTypes;
  readonly implementation: string;
  compress(data: Buffer): Promise<Buffer>;
  decompress(data: Buffer): Promise<Buffer>;
}

const asBuffer = (data: Uint8Array): Buffer =>
  Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);

// --- snappy -------------------------------------------------------------------------------------------------------

/** The xerial snappy stream header: magic, then version and compatible version (int32 big-endian). */
const XERIAL_MAGIC = Buffer.from([0x82, 0x53, 0x4e, 0x41, 0x50, 0x50, 0x59, 0x00]);
const XERIAL_HEADER_BYTES = 16;

export function snappyDecompress(data: Buffer): Buffer {
  if (data.length < XERIAL_HEADER_BYTES || !data.subarray(0, XERIAL_MAGIC.length).equals(XERIAL_MAGIC)) {
    return asBuffer(snappy.uncompress(data));
  }
  // xerial framing: after the header, blocks of [int32 big-endian length][raw snappy].
  const chunks: Buffer[] = [];
  let offset = XERIAL_HEADER_BYTES;
  while (offset < data.length) {
    if (offset + 4 > data.length) throw new Error("truncated xerial snappy block length");
    const length = data.readInt32BE(offset);
    offset += 4;
    if (length < 0 || offset + length > data.length) throw new Error("truncated xerial snappy block");
    chunks.push(asBuffer(snappy.uncompress(data.subarray(offset, offset + length))));
    offset += length;
  }
  return Buffer.concat(chunks);
}

export const snappyCompress = (data: Buffer): Buffer => asBuffer(snappy.compress(data));

// --- lz4 ----------------------------------------------------------------------------------------------------------

const LZ4_MAGIC = 0x184d2204;
/** FLG: version 01, block independence set; no block checksum, content size or content checksum (as Kafka's Java writer). */
const LZ4_FLG = 0x60;
/** BD: 64 KB blocks, the Java client's size (KafkaLZ4BlockOutputStream.BLOCKSIZE_64KB). */
const LZ4_BD = 0x40;
const LZ4_BLOCK_BYTES = 64 * 1024;
const LZ4_UNCOMPRESSED = 0x80000000;

/**
 * An LZ4 frame (lz4 frame format 1.6) of `data`: each 64 KB block compressed on its own with a fresh hash table, so
 * that no block refers back to another (the block-independence flag is a promise), stored as is when it does not
 * shrink, then the end mark. The header checksum is xxh32 of FLG and BD, second byte, as the format (and Kafka from
 * magic 1 on) has it.
 */
export function lz4Frame(data: Buffer): Buffer {
  const blocks = Math.ceil(data.length / LZ4_BLOCK_BYTES);
  const out = Buffer.alloc(7 + blocks * (4 + compressBound(LZ4_BLOCK_BYTES)) + 4);
  out.writeUInt32LE(LZ4_MAGIC, 0);
  out[4] = LZ4_FLG;
  out[5] = LZ4_BD;
  out[6] = (xxh32(0, out, 4, 2) >>> 8) & 0xff;
  let at = 7;
  const table = new Uint32Array(1 << 16);
  for (let start = 0; start < data.length; start += LZ4_BLOCK_BYTES) {
    const block = data.subarray(start, Math.min(start + LZ4_BLOCK_BYTES, data.length));
    const size = lz4Block(block, out.subarray(at + 4), table);
    if (size > 0 && size < block.length) {
      out.writeUInt32LE(size, at);
      at += 4 + size;
    } else {
      out.writeUInt32LE((LZ4_UNCOMPRESSED | block.length) >>> 0, at);
      block.copy(out, at + 4);
      at += 4 + block.length;
    }
  }
  out.writeUInt32LE(0, at);
  return out.subarray(0, at + 4);
}

/** An LZ4 length: the 4-bit `base` and, when it is 15, the bytes from `at` that add to it (255 means more follow). */
function lz4Length(block: Uint8Array, at: number, base: number): [length: number, next: number] {
  let length = base;
  let i = at;
  if (length === 15) {
    let b: number;
    do {
      b = block[i++] as number;
      length += b;
    } while (b === 255 && i < block.length);
  }
  return [length, i];
}

/**
 * The LZ4 block format's end-of-block rules (lz4 Block_format.md, "End of block conditions"): the last match starts at
 * least 12 bytes (MFLIMIT) before the end of the block, and the last 5 bytes (LASTLITERALS) are literals. lz4js's
 * compressBlock may start a match 10 or 11 bytes before the end (node_modules/lz4js/lz4.js, its match loop bound);
 * liblz4's fast decoder, which Kafka's Java client uses (Lz4BlockInputStream decoding into a 64 KB buffer), rejects such
 * a full block. Returns where the last sequence (literals only) starts, or -1 when a rule is broken or `block` does not
 * parse.
 */
export function lz4LastSequence(block: Uint8Array, decodedLength: number): number {
  let i = 0;
  let out = 0;
  while (i < block.length) {
    const sequence = i;
    const token = block[i++] as number;
    const [literals, afterLength] = lz4Length(block, i, token >>> 4);
    i = afterLength + literals;
    out += literals;
    if (i === block.length) return out === decodedLength ? sequence : -1;
    if (i > block.length) return -1;
    // The 2-byte match offset, then the match length.
    const [match, afterMatch] = lz4Length(block, i + 2, token & 15);
    i = afterMatch;
    if (out > decodedLength - 12) return -1;
    out += match + 4;
    if (out > decodedLength - 5) return -1;
  }
  return -1;
}

/**
 * One LZ4 block of `data` into `out` (its size; 0 if it did not fit), keeping the end-of-block rules: when lz4js's
 * block breaks them, the block is made again from all but the last 12 bytes, which are appended to its final
 * literals-only sequence (its last match then ends well before the block's end).
 */
function lz4Block(data: Buffer, out: Buffer, table: Uint32Array): number {
  table.fill(0);
  const size = compressBlock(data, out, 0, data.length, table);
  if (size <= 0 || lz4LastSequence(out.subarray(0, size), data.length) >= 0) return size;
  if (data.length <= 32) return 0;
  const head = data.length - 12;
  table.fill(0);
  const headSize = compressBlock(data, out, 0, head, table);
  const last = headSize > 0 ? lz4LastSequence(out.subarray(0, headSize), head) : -1;
  if (last < 0) return 0;
  // The final sequence's literals, then the tail: one literals-only sequence with a new length.
  const [literals, i] = lz4Length(out, last + 1, (out[last] as number) >>> 4);
  const text = Buffer.concat([out.subarray(i, headSize), data.subarray(head)]);
  const total = literals + 12;
  const lengthBytes: number[] = [];
  if (total >= 15) {
    let rest = total - 15;
    while (rest >= 255) {
      lengthBytes.push(255);
      rest -= 255;
    }
    lengthBytes.push(rest);
  }
  const end = last + 1 + lengthBytes.length + text.length;
  if (end > out.length) return 0;
  out[last] = (Math.min(total, 15) << 4) & 0xff;
  Buffer.from(lengthBytes).copy(out, last + 1);
  text.copy(out, last + 1 + lengthBytes.length);
  return lz4LastSequence(out.subarray(0, end), data.length) >= 0 ? end : 0;
}

/** Any LZ4 frame (lz4js reads block and content checksums, content size and every block size, without checking them). */
export const lz4Unframe = (data: Buffer): Buffer => asBuffer(lz4Decompress(data));

// --- zstd ---------------------------------------------------------------------------------------------------------

/** Kafka's default zstd level (compression.zstd.level), also zstd's own default. */
const ZSTD_LEVEL = 3;

type Callback = (error: Error | null, result: Buffer) => void;
/** node:zlib's zstd (Node.js 22.15+, 23.8+): not in @types/node 20. */
interface ZlibZstd {
  zstdCompress?: (data: Buffer, options: { params: Record<number, number> }, callback: Callback) => void;
  zstdDecompress?: (data: Buffer, callback: Callback) => void;
  constants: Record<string, number>;
}
const nodeZstd = zlib as unknown as ZlibZstd;
export const ZSTD_IN_NODE =
  typeof nodeZstd.zstdCompress === "function" && typeof nodeZstd.zstdDecompress === "function";

interface ZstdImplementation {
  compress(data: Buffer): Promise<Buffer>;
  decompress(data: Buffer): Promise<Buffer>;
}

const callback =
  (resolve: (value: Buffer) => void, reject: (error: Error) => void): Callback =>
  (error, result) =>
    error ? reject(error) : resolve(result);

const zlibZstd: ZstdImplementation = {
  compress: (data) =>
    new Promise((resolve, reject) =>
      nodeZstd.zstdCompress?.(
        data,
        { params: { [nodeZstd.constants.ZSTD_c_compressionLevel as number]: ZSTD_LEVEL } },
        callback(resolve, reject),
      ),
    ),
  decompress: (data) => new Promise((resolve, reject) => nodeZstd.zstdDecompress?.(data, callback(resolve, reject))),
};

let zstdPackages: Promise<ZstdImplementation> | undefined;

/** The packages, loaded once, on first use. */
function loadZstdPackages(): Promise<ZstdImplementation> {
  zstdPackages ??= (async () => {
    const [wasm, fzstd] = await Promise.all([import("@bokuweb/zstd-wasm"), import("fzstd")]);
    await wasm.init();
    return {
      compress: async (data: Buffer) => asBuffer(wasm.compress(data, ZSTD_LEVEL)),
      decompress: async (data: Buffer) => asBuffer(fzstd.decompress(data)),
    };
  })().catch((error: Error) => {
    zstdPackages = undefined;
    throw new Error(
      `zstd needs Node.js 22.15 or later (node:zlib zstd; this is ${process.version}) or the packages ` +
        `@bokuweb/zstd-wasm and fzstd installed next to the code: ${error.message}`,
    );
  });
  return zstdPackages;
}

const zstdImplementation = (): Promise<ZstdImplementation> =>
  ZSTD_IN_NODE ? Promise.resolve(zlibZstd) : loadZstdPackages();

// --- registry -----------------------------------------------------------------------------------------------------

const gzip = CompressionCodecs[CompressionTypes.GZIP]() as KafkaCodec;

/** Each compressing codec by its OUTPUT_COMPRESSION name. */
export const CODECS: Readonly<Record<Exclude<OutputCompression, "none">, Codec>> = {
  gzip: {
    type: CompressionTypes.GZIP,
    implementation: "node:zlib (kafkajs built-in)",
    compress: (data) => gzip.compress({ buffer: data }),
    decompress: (data) => gzip.decompress(data),
  },
  snappy: {
    type: CompressionTypes.Snappy,
    implementation: "snappyjs",
    compress: async (data) => snappyCompress(data),
    decompress: async (data) => snappyDecompress(data),
  },
  lz4: {
    type: CompressionTypes.LZ4,
    implementation: "lz4js blocks, LZ4 frame (codecs.ts)",
    compress: async (data) => lz4Frame(data),
    decompress: async (data) => lz4Unframe(data),
  },
  zstd: {
    type: CompressionTypes.ZSTD,
    implementation: ZSTD_IN_NODE ? "node:zlib" : "@bokuweb/zstd-wasm (compress), fzstd (decompress)",
    compress: async (data) => (await zstdImplementation()).compress(data),
    decompress: async (data) => (await zstdImplementation()).decompress(data),
  },
};

/** The kafkajs compression type for an OUTPUT_COMPRESSION name. */
export function compressionType(name: OutputCompression): CompressionTypes {
  return name === "none" ? CompressionTypes.None : CODECS[name].type;
}

/**
 * Makes sure the OUTPUT_COMPRESSION codec can run here (zstd without node:zlib zstd: its packages load), else a
 * ConfigError naming the setting and what is missing. For a cold start to fail at once rather than at the first send.
 */
export async function ensureCodec(name: OutputCompression): Promise<void> {
  if (name !== "zstd") return;
  try {
    await zstdImplementation();
  } catch (error) {
    throw new ConfigError(
      `OUTPUT_COMPRESSION=zstd cannot run here: ${(error as Error).message}; or choose another codec`,
    );
  }
}

function register(codec: Codec): void {
  const kafkaCodec: KafkaCodec = {
    compress: (encoder) => codec.compress(encoder.buffer),
    decompress: (buffer) => codec.decompress(buffer),
  };
  (CompressionCodecs as Record<number, () => KafkaCodec>)[codec.type] = () => kafkaCodec;
}

register(CODECS.snappy);
register(CODECS.lz4);
register(CODECS.zstd);
