/**
 * kafkajs 2.2.4's DefaultPartitioner (Java's murmur2 on the key, as Apache Kafka's own clients), computed in 32-bit
 * integer arithmetic. kafkajs computes the same hash with its own 64-bit `Long` objects (node_modules/kafkajs/src/
 * producer/partitioners/default/murmur2.js: a few objects allocated per byte quad) and, for every message, filters the
 * partition list for available leaders (node_modules/kafkajs/src/producer/partitioners/legacy/partitioner.js) even
 * when the message has a key: together about a tenth of the producer's CPU time for the processor's records.
 *
 * The partition of every message is the same as kafkajs's: only the low 32 bits of kafkajs's Long arithmetic reach its
 * result (each step is a multiplication, an xor, or a shift of `toInt()`, the low 32 bits), which is what Math.imul and
 * `^` compute; test/unit/partitioner.test.ts compares the two on random keys. The rules are kafkajs's:
 *  - a message's own `partition`, when it has one;
 *  - else, with a key, toPositive(murmur2(key)) % the topic's partition count (a key that is not a Buffer is hashed as
 *    the UTF-8 bytes of String(key));
 *  - else round robin over the partitions that have a leader (all of them when none has), from a random start per
 *    topic.
 */
import { randomBytes } from "node:crypto";
import type { ICustomPartitioner, PartitionerArgs } from "kafkajs";

const SEED = 0x9747b28c;
const M = 0x5bd1e995;

/** Java's (and kafkajs's) murmur2 of the bytes, as a signed 32-bit integer. */
export function murmur2(data: Uint8Array): number {
  const length = data.length;
  let h = SEED ^ length;
  const length4 = length >>> 2;
  for (let i = 0; i < length4; i++) {
    const i4 = i * 4;
    let k = (data[i4] as number) | ((data[i4 + 1] as number) << 8) | ((data[i4 + 2] as number) << 16);
    k |= (data[i4 + 3] as number) << 24;
    k = Math.imul(k, M);
    k ^= k >>> 24;
    k = Math.imul(k, M);
    h = Math.imul(h, M) ^ k;
  }
  // The last one to three bytes (Java's switch falls through from case 3 to case 1).
  const tail = length & ~3;
  const rest = length & 3;
  if (rest > 0) {
    if (rest === 3) h ^= (data[tail + 2] as number) << 16;
    if (rest >= 2) h ^= (data[tail + 1] as number) << 8;
    h ^= data[tail] as number;
    h = Math.imul(h, M);
  }
  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}

const toPositive = (x: number) => x & 0x7fffffff;

/** The partitioner factory for kafkajs's `createPartitioner`: kafkajs's DefaultPartitioner, faster. */
export const FastDefaultPartitioner: ICustomPartitioner = () => {
  const counters = new Map<string, number>();
  return ({ topic, partitionMetadata, message }: PartitionerArgs): number => {
    if (message.partition !== null && message.partition !== undefined) return message.partition;
    const numPartitions = partitionMetadata.length;
    const key = message.key;
    if (key !== null && key !== undefined) {
      return toPositive(murmur2(Buffer.isBuffer(key) ? key : Buffer.from(String(key)))) % numPartitions;
    }
    let counter = counters.get(topic) ?? randomBytes(4).readUInt32BE(0);
    counter++;
    counters.set(topic, counter);
    const available = partitionMetadata.filter((p) => p.leader >= 0);
    if (available.length > 0)
      return (available[toPositive(counter) % available.length] as { partitionId: number }).partitionId;
    return toPositive(counter) % numPartitions;
  };
};
