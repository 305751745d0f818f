import type { Admin, Kafka } from "kafkajs";

export interface TopicSpec {
  readonly topic: string;
  /** @default 1 */
  readonly numPartitions?: number;
  /** @default -1, the broker's default.replication.factor */
  readonly replicationFactor?: number;
  /** Topic configs, e.g. { "retention.ms": "604800000" }. */
  readonly configs?: Readonly<Record<string, string>>;
}

/**
 * Creates the topics that do not exist yet (auto-creation is off, as on MSK) and waits for their leaders; adds
 * partitions to existing topics that have fewer than asked (Kafka cannot remove partitions). Returns the created names.
 */
export async function ensureTopics(kafka: Kafka, topics: readonly TopicSpec[]): Promise<string[]> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await ensureTopicsWith(admin, topics);
  } finally {
    await admin.disconnect();
  }
}

/** ensureTopics through an admin client that is already connected. */
export async function ensureTopicsWith(admin: Admin, topics: readonly TopicSpec[]): Promise<string[]> {
  const existing = new Set(await admin.listTopics());
  const missing = topics.filter((t) => !existing.has(t.topic));
  if (missing.length > 0) {
    // Not kafkajs's waitForLeaders: it gives up on UNKNOWN_TOPIC_OR_PARTITION (it retries only LEADER_NOT_AVAILABLE,
    // node_modules/kafkajs/src/admin/index.js createTopics), which a broker still deleting other topics answers
    // for a while; the topic exists all the same. Poll until every partition answers instead.
    await admin.createTopics({
      waitForLeaders: false,
      topics: missing.map((t) => ({
        topic: t.topic,
        numPartitions: t.numPartitions ?? 1,
        replicationFactor: t.replicationFactor ?? -1,
        configEntries: Object.entries(t.configs ?? {}).map(([name, value]) => ({ name, value })),
      })),
    });
    await waitForPartitions(admin, missing);
  }
  const present = topics.filter((t) => existing.has(t.topic) && t.numPartitions !== undefined);
  if (present.length > 0) {
    const metadata = await admin.fetchTopicMetadata({ topics: present.map((t) => t.topic) });
    const grow = present
      .map((t) => ({ topic: t.topic, count: t.numPartitions as number }))
      .filter((t) => (metadata.topics.find((m) => m.name === t.topic)?.partitions.length ?? t.count) < t.count);
    if (grow.length > 0) await admin.createPartitions({ topicPartitions: grow });
  }
  return missing.map((t) => t.topic);
}

/** Polls until every partition of `topics` has a leader that answers offset requests (at most `timeoutMs`). */
async function waitForPartitions(admin: Admin, topics: readonly TopicSpec[], timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const spec of topics) {
    for (;;) {
      try {
        const offsets = await admin.fetchTopicOffsets(spec.topic);
        if (offsets.length >= (spec.numPartitions ?? 1)) break;
      } catch (error) {
        // A refusal is final (a role without DescribeTopic): say so now, not after the deadline.
        if (Date.now() > deadline || /AUTHORIZATION_FAILED/.test(String((error as { type?: string }).type)))
          throw error;
      }
      if (Date.now() > deadline) throw new Error(`topic ${spec.topic} has no leaders after ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/**
 * A consumer group's lag on a topic: over its partitions, end offset minus the committed offset (or the log start,
 * when nothing is committed or retention deleted past it).
 */
export async function groupLag(kafka: Kafka, groupId: string, topic: string): Promise<number> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await groupLagWith(admin, groupId, topic);
  } finally {
    await admin.disconnect();
  }
}

/** groupLag through an admin client that is already connected. */
export async function groupLagWith(admin: Admin, groupId: string, topic: string): Promise<number> {
  const ends = await admin.fetchTopicOffsets(topic);
  const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
  let lag = 0;
  for (const end of ends) {
    const at = Number(committed?.partitions.find((p) => p.partition === end.partition)?.offset ?? -1);
    lag += Number(end.high) - Math.max(at, Number(end.low));
  }
  return lag;
}
