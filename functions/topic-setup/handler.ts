/**
 * CloudFormation custom resource (CDK Provider framework onEvent handler) that creates the pipeline's topics on an
 * MSK cluster where AWS::MSK::Topic does not apply (MSK Serverless). It connects like every other component
 * (functions/shared/kafka.ts, IAM auth, MSK_CLUSTER_ARN discovery). Delete leaves the topics: the data is the user's.
 */
import type { CloudFormationCustomResourceEvent } from "aws-lambda";
import { loadConnectionConfig } from "../shared/config.ts";
import { connectKafka } from "../shared/kafka.ts";
import { log } from "../shared/log.ts";
import { ensureTopics, type TopicSpec } from "../shared/topics.ts";

interface TopicProperty {
  Name: string;
  Partitions: string | number;
  Configs?: Record<string, string>;
}

export function topicSpecs(properties: Record<string, unknown>): TopicSpec[] {
  const topics = properties.Topics;
  if (!Array.isArray(topics) || topics.length === 0) throw new Error("Topics must be a non-empty list");
  return (topics as TopicProperty[]).map((topic) => {
    const partitions = Number(topic.Partitions);
    if (typeof topic.Name !== "string" || !Number.isInteger(partitions) || partitions < 1) {
      throw new Error(`each topic needs a Name and a positive whole Partitions, got ${JSON.stringify(topic)}`);
    }
    return { topic: topic.Name, numPartitions: partitions, configs: topic.Configs };
  });
}

export async function handler(event: CloudFormationCustomResourceEvent): Promise<{ PhysicalResourceId: string }> {
  const physicalId = "PhysicalResourceId" in event ? event.PhysicalResourceId : `topics-${event.LogicalResourceId}`;
  if (event.RequestType === "Delete") return { PhysicalResourceId: physicalId };
  const topics = topicSpecs(event.ResourceProperties);
  const { kafka } = await connectKafka(loadConnectionConfig(process.env), "user-login-topic-setup");
  const created = await ensureTopics(kafka, topics);
  log("INFO", "topics ensured", { created, topics: topics.map((t) => t.topic) });
  return { PhysicalResourceId: physicalId };
}
