/** lz4js's xxHash32 (node_modules/lz4js/xxh32.js), which @types/lz4js leaves out: the LZ4 frame header checksum. */
declare module "lz4js/xxh32.js" {
  export function hash(seed: number, src: Uint8Array, index: number, length: number): number;
}
