/**
 * The size of a record on the wire, in Kafka's record format v2 (KIP-98), as the broker measures it against a topic's
 * `max.message.bytes`: the broker compares each record *batch* (all of one produce request's records for one
 * partition, plus RECORD_BATCH_OVERHEAD) with that limit (Apache Kafka `LogValidator` / `UnifiedLog.analyzeAndValidateRecords`,
 * RecordTooLargeException). Pure arithmetic: UTF-8 bytes of text, varint length prefixes.
 */

/** `DefaultRecordBatch.RECORD_BATCH_OVERHEAD`: base offset, length, epoch, magic, CRC, attributes, ... */
export const RECORD_BATCH_OVERHEAD = 61;

export type Bytes = Buffer | string | null | undefined;

/** Bytes of a zigzag varint (Kafka's varint for lengths). */
export function varintBytes(value: number): number {
  const zigzag = value >= 0 ? value * 2 : -value * 2 - 1;
  if (zigzag < 0x80) return 1;
  if (zigzag < 0x4000) return 2;
  if (zigzag < 0x200000) return 3;
  if (zigzag < 0x10000000) return 4;
  return 5;
}

/** UTF-8 length of text, length of bytes. */
export function byteLength(value: Buffer | string): number {
  return typeof value === "string" ? Buffer.byteLength(value, "utf8") : value.length;
}

/** A varint-prefixed byte field: -1 (one byte) for null. */
function field(value: Bytes): number {
  if (value == null) return 1;
  const length = byteLength(value);
  return varintBytes(length) + length;
}

/** The bytes one header takes in a record: its name and its value, each varint-prefixed. */
export const headerBytes = (name: string, value: Bytes): number => field(name) + field(value);

/**
 * recordBytes with the headers already summed (`headersBytes` of `headerCount` headers, each as headerBytes gives
 * it): for a caller that sums them as it builds the headers.
 */
export function recordBytesWith(key: Bytes, value: Bytes, headersBytes: number, headerCount: number): number {
  const size = 1 + 10 + 5 + field(key) + field(value) + headersBytes + varintBytes(headerCount);
  return size + varintBytes(size);
}

/**
 * An upper bound of one record's bytes inside a batch: exact for key, value and headers, the worst case (10 + 5
 * bytes) for the timestamp and offset deltas, which the client fills in.
 */
export function recordBytes(
  key: Bytes,
  value: Bytes,
  headers: Readonly<Record<string, Bytes | readonly Bytes[]>> | undefined,
): number {
  let size = 0;
  let count = 0;
  if (headers) {
    for (const name in headers) {
      const entry = headers[name];
      if (Array.isArray(entry)) {
        for (const v of entry) {
          size += headerBytes(name, v);
          count++;
        }
      } else {
        size += headerBytes(name, entry as Bytes);
        count++;
      }
    }
  }
  return recordBytesWith(key, value, size, count);
}
