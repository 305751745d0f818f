/**
 * The pipeline's network rules: what the Kafka clients may reach (the brokers' IAM port, the interface endpoints, S3
 * for image layers) and what each VPC endpoint lets through (this account's principals, the actions and resources the
 * stack uses), instead of security groups open to everything and endpoints with full-access default policies.
 */
import { Aws, Stack } from "aws-cdk-lib";
import * as ec2 from "aws-cdk-lib/aws-ec2";
import * as iam from "aws-cdk-lib/aws-iam";
import type * as logs from "aws-cdk-lib/aws-logs";
import * as cr from "aws-cdk-lib/custom-resources";
import type { Construct } from "constructs";
import { lambdaRole } from "./functions.ts";
import { acknowledge } from "./nag.ts";

/**
 * MSK's port for IAM-authenticated clients (provisioned and Serverless alike; Serverless offers nothing else). The
 * stack turns on IAM client authentication only, so the SCRAM (9096) and TLS (9094) listeners are never opened.
 */
export const MSK_IAM_PORT = 9098;

/**
 * The interface endpoints the private subnets need, with no NAT and no internet route. No STS or Lambda endpoint:
 * those serve an MSK event source mapping in on-demand mode, and this stack's mapping always runs in provisioned mode
 * (minimumPollers >= 1): AWS Lambda Developer Guide, "Configuring your Amazon MSK cluster and Amazon VPC network for
 * Lambda" (with-msk-cluster-network.html: the network requirements depend on whether the mapping uses provisioned or
 * on-demand mode) and, for Kafka in general, "Configuring your self-managed Apache Kafka cluster and network for
 * Lambda" (with-kafka-cluster-network.html: "AWS PrivateLink VPC endpoints are required for functions with event
 * source mappings that use the default (on-demand) mode for event pollers. If your event source mapping uses
 * provisioned mode, you don't need" them). Nothing else here calls STS (the MSK IAM signer signs locally; it calls
 * sts:GetCallerIdentity only with awsDebugCreds, which is not set) or the Lambda API from the VPC.
 */
export const INTERFACE_ENDPOINTS = {
  /** kafka:GetBootstrapBrokers for the processor (MSK_CLUSTER_ARN), the generator and the topic setup. */
  Kafka: ec2.InterfaceVpcEndpointAwsService.KAFKA,
  /** The generator task (Fargate: through the task's own network interface): image pulls and its awslogs driver. */
  EcrApi: ec2.InterfaceVpcEndpointAwsService.ECR,
  EcrDocker: ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
  Logs: ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
} as const;
export type InterfaceEndpointName = keyof typeof INTERFACE_ENDPOINTS;

/** Only principals of this account, whatever the statement allows (aws:PrincipalAccount). */
function thisAccount(actions: string[], resources: string[]): iam.PolicyStatement {
  return new iam.PolicyStatement({
    principals: [new iam.AnyPrincipal()],
    actions,
    resources,
    conditions: { StringEquals: { "aws:PrincipalAccount": Aws.ACCOUNT_ID } },
  });
}

export interface EndpointScope {
  /** The MSK cluster whose bootstrap brokers the clients look up. */
  readonly clusterArn: string;
  /** The generator image's repository. */
  readonly repositoryArn: string;
  /** The generator's log group (its awslogs driver writes there). */
  readonly generatorLogGroup: logs.ILogGroup;
}

/**
 * Endpoint policies with exactly what the stack uses through each endpoint. The first statement added replaces the
 * default full-access policy (aws-cdk-lib VpcEndpoint.addToPolicy).
 */
export function scopeEndpointPolicies(
  endpoints: Record<InterfaceEndpointName, ec2.InterfaceVpcEndpoint>,
  s3: ec2.GatewayVpcEndpoint,
  scope: EndpointScope,
): void {
  endpoints.Kafka.addToPolicy(thisAccount(["kafka:GetBootstrapBrokers"], [scope.clusterArn]));
  // Pulling an image: a token (no resource-level permissions, hence "*"), then the manifest and layer URLs from the
  // asset repository. Amazon ECR User Guide, "Amazon ECR interface VPC endpoints" (vpc-endpoints.html).
  for (const endpoint of [endpoints.EcrApi, endpoints.EcrDocker]) {
    endpoint.addToPolicy(thisAccount(["ecr:GetAuthorizationToken"], ["*"]));
    endpoint.addToPolicy(
      thisAccount(
        ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
        [scope.repositoryArn],
      ),
    );
  }
  // The log group's ARN attribute ends in ":*", which covers its log streams.
  endpoints.Logs.addToPolicy(
    thisAccount(["logs:CreateLogStream", "logs:PutLogEvents"], [scope.generatorLogGroup.logGroupArn]),
  );
  // Image layers are S3 objects in ECR's own bucket, fetched with URLs ECR presigns: the request is signed by ECR,
  // not by a principal of this account, so no account condition here; the bucket is the whole scope. Amazon ECR User
  // Guide, "Minimum Amazon S3 bucket permissions for Amazon ECR": s3:GetObject on prod-REGION-starport-layer-bucket.
  s3.addToPolicy(
    new iam.PolicyStatement({
      principals: [new iam.AnyPrincipal()],
      actions: ["s3:GetObject"],
      resources: [`arn:${Aws.PARTITION}:s3:::prod-${Aws.REGION}-starport-layer-bucket/*`],
    }),
  );
}

/**
 * The region's S3 prefix list (what the S3 gateway endpoint routes), for a security group rule: CloudFormation has
 * no intrinsic for it and a CDK context lookup would need credentials at synth, so a custom resource reads it at
 * deploy time (ec2:DescribePrefixLists, which has no resource-level permissions).
 */
export function s3PrefixListId(scope: Construct, id: string, logGroup: logs.ILogGroup): string {
  // Its function writes only to its own log group (no AWSLambdaBasicExecutionRole); the lookup's policy is added.
  const role = lambdaRole(scope, `${id}Role`, { logGroups: [logGroup] });
  const lookup = new cr.AwsCustomResource(scope, id, {
    role,
    onUpdate: {
      service: "EC2",
      action: "describePrefixLists",
      parameters: { Filters: [{ Name: "prefix-list-name", Values: [`com.amazonaws.${Stack.of(scope).region}.s3`] }] },
      physicalResourceId: cr.PhysicalResourceId.of(`s3-prefix-list-${Stack.of(scope).region}`),
      outputPaths: ["PrefixLists.0.PrefixListId"],
    },
    policy: cr.AwsCustomResourcePolicy.fromStatements([
      new iam.PolicyStatement({ actions: ["ec2:DescribePrefixLists"], resources: ["*"] }),
    ]),
    installLatestAwsSdk: false,
    logGroup,
  });
  acknowledge(
    lookup,
    "AwsSolutions-IAM5[Resource::*]",
    "Its one statement is ec2:DescribePrefixLists, which has no resource-level permissions (Service Authorization Reference, Amazon EC2): it reads the region's S3 prefix list id, nothing else.",
  );
  return lookup.getResponseField("PrefixLists.0.PrefixListId");
}
