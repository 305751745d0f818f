/**
 * The at-least-once ledger: every source offset must have at least one output that names it: a processed record or a
 * dead letter (source.* headers), or a record the event source mapping parked on its on-failure topic after its
 * retries (esm-failure.* headers); no output may name a source that does not exist; duplicates are counted.
 */
import type { Kafka } from "kafkajs";
import { HEADER } from "../core/process.ts";
import { groupLag } from "../shared/topics.ts";
import { FAILURE_HEADER } from "./harness.ts";
import { headerText, readTopic, type TopicRecord } from "./read-topic.ts";

export interface Accounting {
  inputs: number;
  outputs: number;
  processed: number;
  deadLettered: number;
  /** Records of this source on the on-failure topic (when one was given). */
  parked: number;
  /** Source records with no output: data loss. */
  missing: string[];
  /** Outputs whose source.* names no source record. */
  orphans: string[];
  /** Outputs beyond the first for a source record (at-least-once redelivery). */
  duplicates: number;
  /** The consumer group's lag on the source topic. */
  lag: number;
  /** True when nothing is missing, nothing is orphaned and the lag is zero. */
  ok: boolean;
}

/**
 * `earlier`: outputs read before their topic was deleted and re-created (a snapshot of the old topic), counted as if
 * the topic still held them.
 */
export async function account(
  kafka: Kafka,
  topics: { source: string; processed: string; deadLetter: string; esmFailures?: string },
  groupId: string,
  earlier: { readonly processed?: readonly TopicRecord[]; readonly deadLetter?: readonly TopicRecord[] } = {},
): Promise<Accounting> {
  const [inputs, processedNow, deadNow, parkedAll] = await Promise.all([
    readTopic(kafka, topics.source),
    readTopic(kafka, topics.processed),
    readTopic(kafka, topics.deadLetter),
    topics.esmFailures ? readTopic(kafka, topics.esmFailures) : [],
  ]);
  // The failure topic may be shared by several sources (tests share the default one): only this source's count.
  const parked = parkedAll.filter((r) => headerText(r.headers, FAILURE_HEADER.topic) === topics.source);
  const processed = [...(earlier.processed ?? []), ...processedNow];
  const dead = [...(earlier.deadLetter ?? []), ...deadNow];
  const seen = new Map<string, number>();
  const orphans: string[] = [];
  const sources = new Set(inputs.map((r) => `${r.partition}/${r.offset}`));
  for (const output of [...processed, ...dead]) {
    if (headerText(output.headers, HEADER.sourceTopic) !== topics.source) continue;
    const id = `${headerText(output.headers, HEADER.sourcePartition)}/${headerText(output.headers, HEADER.sourceOffset)}`;
    if (!sources.has(id)) orphans.push(id);
    seen.set(id, (seen.get(id) ?? 0) + 1);
  }
  for (const record of parked) {
    const id = `${headerText(record.headers, FAILURE_HEADER.partition)}/${headerText(record.headers, FAILURE_HEADER.offset)}`;
    if (!sources.has(id)) orphans.push(id);
    seen.set(id, (seen.get(id) ?? 0) + 1);
  }
  const missing = [...sources].filter((id) => !seen.has(id));
  let duplicates = 0;
  for (const count of seen.values()) duplicates += count - 1;
  const lag = await groupLag(kafka, groupId, topics.source);
  return {
    inputs: inputs.length,
    outputs: processed.length + dead.length + parked.length,
    processed: processed.length,
    deadLettered: dead.length,
    parked: parked.length,
    missing,
    orphans,
    duplicates,
    lag,
    ok: missing.length === 0 && orphans.length === 0 && lag === 0,
  };
}

export function accountingText(result: Accounting): string {
  return (
    `accounting: ${result.inputs} inputs, ${result.outputs} outputs (${result.processed} processed, ` +
    `${result.deadLettered} dead-lettered, ${result.parked} parked), ${result.missing.length} missing, ${result.orphans.length} orphans, ` +
    `${result.duplicates} duplicates, lag ${result.lag} -> ${result.ok ? "OK" : "FAILED"}`
  );
}
