/**
 * Alarms (to an SNS topic, optionally emailed) and a dashboard for the pipeline.
 */
import { Duration } from "aws-cdk-lib";
import * as cloudwatch from "aws-cdk-lib/aws-cloudwatch";
import * as actions from "aws-cdk-lib/aws-cloudwatch-actions";
import * as iam from "aws-cdk-lib/aws-iam";
import * as kms from "aws-cdk-lib/aws-kms";
import type * as lambda from "aws-cdk-lib/aws-lambda";
import * as sns from "aws-cdk-lib/aws-sns";
import * as subscriptions from "aws-cdk-lib/aws-sns-subscriptions";
import { Construct } from "constructs";
import { ERROR_CODES } from "../functions/core/process.ts";
import {
  ERROR_CODE_DIMENSION,
  METRIC,
  METRICS_NAMESPACE,
  METRICS_SERVICE,
  SERVICE_DIMENSION,
} from "../functions/shared/metrics.ts";
import type { GeneratorService } from "./generator.ts";
import { checkInteger, type MskCluster, PropsError } from "./msk.ts";

export interface AlarmProps {
  /** Subscribe this address to the alarm topic. @default no subscription */
  readonly email?: string;
  /** Alarm when the ESM's OffsetLag stays above this many records... @default 10000 */
  readonly offsetLagThreshold?: number;
  /** ...for this many minutes. @default 5 */
  readonly offsetLagMinutes?: number;
  /** Alarm when dead-lettered / records in exceeds this share over 5 minutes. @default 0.1 */
  readonly dlqShareThreshold?: number;
  /** Alarm when p99 duration exceeds this share of the function timeout. @default 0.8 */
  readonly durationShareOfTimeout?: number;
}

interface MonitoringProps extends AlarmProps {
  readonly fn: lambda.IFunction;
  readonly timeout: Duration;
  readonly eventSourceMappingId: string;
  readonly cluster: MskCluster;
  readonly topics: { source: string; processed: string; deadLetter: string };
  readonly generator: GeneratorService;
}

const FIVE_MINUTES = Duration.minutes(5);

export function pipelineMetric(
  name: string,
  statistic = "Sum",
  dimensions: Record<string, string> = {},
): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: METRICS_NAMESPACE,
    metricName: name,
    statistic,
    period: Duration.minutes(1),
    dimensionsMap: { [SERVICE_DIMENSION]: METRICS_SERVICE, ...dimensions },
  });
}

export class PipelineMonitoring extends Construct {
  readonly alarmTopic: sns.Topic;
  readonly dashboard: cloudwatch.Dashboard;
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const lagThreshold = checkInteger("alarms.offsetLagThreshold", props.offsetLagThreshold ?? 10_000, 1, 1e12);
    const lagMinutes = checkInteger("alarms.offsetLagMinutes", props.offsetLagMinutes ?? 5, 1, 1440);
    const dlqShare = props.dlqShareThreshold ?? 0.1;
    if (!(dlqShare > 0 && dlqShare <= 1))
      throw new PropsError(`alarms.dlqShareThreshold must be in (0, 1], got ${dlqShare}`);
    const durationShare = props.durationShareOfTimeout ?? 0.8;
    if (!(durationShare > 0 && durationShare <= 1)) {
      throw new PropsError(`alarms.durationShareOfTimeout must be in (0, 1], got ${durationShare}`);
    }

    const key = new kms.Key(this, "AlarmTopicKey", {
      enableKeyRotation: true,
      description: "Encrypts the pipeline alarm topic",
    });
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        principals: [new iam.ServicePrincipal("cloudwatch.amazonaws.com")],
        actions: ["kms:Decrypt", "kms:GenerateDataKey*"],
        resources: ["*"],
      }),
    );
    this.alarmTopic = new sns.Topic(this, "AlarmTopic", { masterKey: key, enforceSSL: true });
    if (props.email) this.alarmTopic.addSubscription(new subscriptions.EmailSubscription(props.email));

    const fn = props.fn;
    const recordsIn = pipelineMetric(METRIC.recordsIn);
    const processed = pipelineMetric(METRIC.processed);
    const deadLettered = pipelineMetric(METRIC.deadLettered);
    const offsetLag = fn.metric("OffsetLag", { statistic: "Maximum", period: Duration.minutes(1) });
    const esmMetric = (name: string) =>
      new cloudwatch.Metric({
        namespace: "AWS/Lambda",
        metricName: name,
        statistic: "Sum",
        period: Duration.minutes(1),
        dimensionsMap: { EventSourceMappingUUID: props.eventSourceMappingId },
      });
    const parked = esmMetric("OnFailureDestinationDeliveredEventCount");
    const runningTasks = new cloudwatch.Metric({
      namespace: "ECS/ContainerInsights",
      metricName: "RunningTaskCount",
      statistic: "Minimum",
      period: Duration.minutes(1),
      dimensionsMap: {
        ClusterName: props.generator.ecsCluster.clusterName,
        ServiceName: props.generator.service.serviceName,
      },
    });
    const dlqShareMetric = new cloudwatch.MathExpression({
      expression: "IF(recordsIn > 0, deadLettered / recordsIn, 0)",
      usingMetrics: {
        recordsIn: recordsIn.with({ period: FIVE_MINUTES }),
        deadLettered: deadLettered.with({ period: FIVE_MINUTES }),
      },
      period: FIVE_MINUTES,
      label: "DLQ share",
    });

    const alarm = (
      name: string,
      options: cloudwatch.CreateAlarmOptions,
      metric: cloudwatch.Metric | cloudwatch.MathExpression,
    ) => {
      const created = metric.createAlarm(this, name, options);
      created.addAlarmAction(new actions.SnsAction(this.alarmTopic));
      this.alarms.push(created);
      return created;
    };
    alarm(
      "Errors",
      {
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription:
          "The processor function failed invocations (produce failures are retried by the event source mapping)",
      },
      fn.metricErrors({ period: FIVE_MINUTES }),
    );
    alarm(
      "Throttles",
      {
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: "The processor function was throttled",
      },
      fn.metricThrottles({ period: FIVE_MINUTES }),
    );
    alarm(
      "DurationNearTimeout",
      {
        threshold: props.timeout.toMilliseconds() * durationShare,
        evaluationPeriods: 3,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: `p99 duration above ${Math.round(durationShare * 100)}% of the ${props.timeout.toSeconds()} s timeout`,
      },
      fn.metricDuration({ statistic: "p99", period: FIVE_MINUTES }),
    );
    alarm(
      "OffsetLag",
      {
        threshold: lagThreshold,
        evaluationPeriods: lagMinutes,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: `Consumer lag on ${props.topics.source} above ${lagThreshold} records for ${lagMinutes} minutes`,
      },
      offsetLag,
    );
    alarm(
      "DeadLetterShare",
      {
        threshold: dlqShare,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: `More than ${dlqShare * 100}% of records went to ${props.topics.deadLetter} over 5 minutes`,
      },
      dlqShareMetric,
    );
    alarm(
      "RecordsParked",
      {
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription: "Records exhausted their retries and were parked in the event source mapping's failure topic",
      },
      parked.with({ period: FIVE_MINUTES }),
    );
    alarm(
      "UnwritableRecords",
      {
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        alarmDescription:
          "A record is larger than its destination topic's max.message.bytes: the batch cannot pass it until the topic's " +
          "limit (and the processor's PROCESSED_MAX_MESSAGE_BYTES / DLQ_MAX_MESSAGE_BYTES) is raised",
      },
      pipelineMetric(METRIC.unwritable).with({ period: FIVE_MINUTES }),
    );
    if (props.generator.desiredCount > 0) {
      alarm(
        "GeneratorNotRunning",
        {
          threshold: props.generator.desiredCount,
          evaluationPeriods: 3,
          comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.BREACHING,
          alarmDescription: "Fewer generator tasks are running than desired",
        },
        runningTasks,
      );
    }

    const mskMetric = (name: string) =>
      new cloudwatch.Metric({
        namespace: "AWS/Kafka",
        metricName: name,
        statistic: "Sum",
        period: Duration.minutes(1),
        dimensionsMap: { "Cluster Name": props.cluster.clusterName, Topic: props.topics.source },
      });
    const wide = (title: string, left: cloudwatch.IMetric[], right: cloudwatch.IMetric[] = []) =>
      new cloudwatch.GraphWidget({ title, left, right, width: 12, height: 6 });
    this.dashboard = new cloudwatch.Dashboard(this, "Dashboard", {
      defaultInterval: Duration.hours(3),
      widgets: [
        [
          wide("Throughput: records in, processed, dead-lettered (per minute)", [recordsIn, processed, deadLettered]),
          wide(
            "DLQ share and dead letters by error code",
            [dlqShareMetric],
            ERROR_CODES.map((code) =>
              pipelineMetric(METRIC.deadLettered, "Sum", { [ERROR_CODE_DIMENSION]: code }).with({ label: code }),
            ),
          ),
        ],
        [
          wide("Offset lag (records) and parked records", [offsetLag], [parked]),
          wide("Duration p50 / p99 (ms)", [
            fn.metricDuration({ statistic: "p50", period: Duration.minutes(1) }),
            fn.metricDuration({ statistic: "p99", period: Duration.minutes(1) }),
          ]),
        ],
        [
          wide(
            "Errors, throttles, concurrency",
            [fn.metricErrors({ period: Duration.minutes(1) }), fn.metricThrottles({ period: Duration.minutes(1) })],
            [fn.metric("ConcurrentExecutions", { statistic: "Maximum", period: Duration.minutes(1) })],
          ),
          wide("Generator: running tasks", [runningTasks]),
        ],
        [
          wide(
            `MSK ${props.topics.source}: bytes in / out per second`,
            [mskMetric("BytesInPerSec")],
            [mskMetric("BytesOutPerSec")],
          ),
          new cloudwatch.AlarmStatusWidget({ title: "Alarms", alarms: this.alarms, width: 12, height: 6 }),
        ],
      ],
    });
  }
}
