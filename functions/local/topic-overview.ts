/**
 * Topics with partitions and end offsets, and each consumer group's lag: a local stand-in for a Kafka UI.
 */
import type { Kafka } from "kafkajs";

export interface TopicOverview {
  topic: string;
  partitions: number;
  /** Sum of the partitions' end offsets (records ever written, less any deleted by retention). */
  endOffsets: number[];
  groups: { groupId: string; lag: number; lagByPartition: number[] }[];
}

export async function topicOverview(kafka: Kafka): Promise<TopicOverview[]> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const topics = (await admin.listTopics()).filter((topic) => !topic.startsWith("__")).sort();
    const { groups } = await admin.listGroups();
    const overview: TopicOverview[] = [];
    for (const topic of topics) {
      const offsets = (await admin.fetchTopicOffsets(topic)).sort((a, b) => a.partition - b.partition);
      const endOffsets = offsets.map((p) => Number(p.high));
      const entry: TopicOverview = { topic, partitions: offsets.length, endOffsets, groups: [] };
      for (const { groupId } of groups) {
        const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
        const positions = committed?.partitions ?? [];
        if (!positions.some((p) => Number(p.offset) >= 0)) continue;
        const lagByPartition = offsets.map((p) => {
          const at = Number(positions.find((c) => c.partition === p.partition)?.offset ?? -1);
          return Number(p.high) - Math.max(at, Number(p.low));
        });
        entry.groups.push({ groupId, lag: lagByPartition.reduce((a, b) => a + b, 0), lagByPartition });
      }
      overview.push(entry);
    }
    return overview;
  } finally {
    await admin.disconnect();
  }
}

export function overviewText(overview: readonly TopicOverview[]): string {
  const lines: string[] = [];
  for (const topic of overview) {
    const total = topic.endOffsets.reduce((a, b) => a + b, 0);
    lines.push(
      `${topic.topic}  partitions ${topic.partitions}  end offsets ${topic.endOffsets.join(",")} (total ${total})`,
    );
    for (const group of topic.groups) {
      lines.push(`  group ${group.groupId}  lag ${group.lag} (${group.lagByPartition.join(",")})`);
    }
  }
  return lines.join("\n");
}
