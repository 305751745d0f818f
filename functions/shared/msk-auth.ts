/**
 * Credentials for Amazon MSK: IAM tokens (SASL/OAUTHBEARER, signed by aws-msk-iam-sasl-signer-js), SCRAM secrets
 * from AWS Secrets Manager, and bootstrap-broker discovery with @aws-sdk/client-kafka. AWS clients are passed in, so
 * tests substitute them; nothing here logs a token, a password or a secret's contents.
 */
import type { GetBootstrapBrokersResponse, KafkaClient } from "@aws-sdk/client-kafka";
import type { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";
import type { AwsCredentialIdentityProvider } from "@aws-sdk/types";
import {
  type GenerateAuthTokenResponse,
  generateAuthToken,
  generateAuthTokenFromCredentialsProvider,
} from "aws-msk-iam-sasl-signer-js";
import type { KafkaAuth } from "./config.ts";

export class MskAuthError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "MskAuthError";
  }
}

export interface IamTokenProviderOptions {
  readonly region: string;
  /** @default the AWS default credential provider chain (Lambda's and ECS's role) */
  readonly credentials?: AwsCredentialIdentityProvider;
  /** Refresh this long before the token expires. @default 60000 */
  readonly refreshMarginMs?: number;
  /** @default Date.now */
  readonly now?: () => number;
}

/**
 * kafkajs's oauthBearerProvider for MSK IAM: a token (15 minutes, capped by the credentials' own lifetime) cached
 * and reused until `refreshMarginMs` before it expires; concurrent callers share one signing.
 */
export function iamTokenProvider(options: IamTokenProviderOptions): () => Promise<{ value: string }> {
  const now = options.now ?? Date.now;
  const margin = options.refreshMarginMs ?? 60_000;
  let current: GenerateAuthTokenResponse | undefined;
  let pending: Promise<GenerateAuthTokenResponse> | undefined;
  const sign = () =>
    options.credentials
      ? generateAuthTokenFromCredentialsProvider({
          region: options.region,
          awsCredentialsProvider: options.credentials,
        })
      : generateAuthToken({ region: options.region });
  return async () => {
    if (!current || now() >= current.expiryTime - margin) {
      pending ??= sign().finally(() => {
        pending = undefined;
      });
      try {
        current = await pending;
      } catch (error) {
        throw new MskAuthError(
          `could not sign an MSK IAM token in ${options.region}: ${(error as Error).message}. ` +
            "Check that the function or task has AWS credentials (an execution role) and AWS_REGION is right.",
          { cause: error },
        );
      }
    }
    return { value: current.token };
  };
}

/** Which bootstrap string of GetBootstrapBrokers serves each auth mode. */
export const BOOTSTRAP_FIELD = {
  iam: "BootstrapBrokerStringSaslIam",
  scram: "BootstrapBrokerStringSaslScram",
  none: "BootstrapBrokerString",
  tls: "BootstrapBrokerStringTls",
} as const satisfies Record<string, keyof GetBootstrapBrokersResponse>;

const discovered = new Map<string, string[]>();

/** Bootstrap brokers of an MSK cluster for the auth mode, looked up once per container. */
export async function discoverBrokers(
  client: Pick<KafkaClient, "send">,
  clusterArn: string,
  auth: KafkaAuth,
  tls: boolean,
): Promise<string[]> {
  const field = auth === "none" && tls ? BOOTSTRAP_FIELD.tls : BOOTSTRAP_FIELD[auth];
  const cacheKey = `${clusterArn} ${field}`;
  const cached = discovered.get(cacheKey);
  if (cached) return cached;
  let response: GetBootstrapBrokersResponse;
  try {
    const { GetBootstrapBrokersCommand } = await import("@aws-sdk/client-kafka");
    response = await client.send(new GetBootstrapBrokersCommand({ ClusterArn: clusterArn }));
  } catch (error) {
    throw new MskAuthError(
      `GetBootstrapBrokers failed for MSK_CLUSTER_ARN ${clusterArn}: ${(error as Error).message}. ` +
        "Check the ARN and that the role may call kafka:GetBootstrapBrokers.",
      { cause: error },
    );
  }
  const value = response[field];
  if (!value) {
    throw new MskAuthError(
      `MSK cluster ${clusterArn} has no endpoint for KAFKA_AUTH=${auth} (${field} is empty): turn that client ` +
        "authentication on for the cluster, or set KAFKA_AUTH to a mode it offers.",
    );
  }
  const brokers = value.split(",").map((broker) => broker.trim());
  discovered.set(cacheKey, brokers);
  return brokers;
}

/** Forgets discovered brokers (tests). */
export function clearDiscoveredBrokers(): void {
  discovered.clear();
}

/** An MSK SCRAM secret (`{"username", "password"}`, as MSK requires) from Secrets Manager. */
export async function scramSecret(
  client: Pick<SecretsManagerClient, "send">,
  secretArn: string,
): Promise<{ username: string; password: string }> {
  let text: string | undefined;
  try {
    const { GetSecretValueCommand } = await import("@aws-sdk/client-secrets-manager");
    text = (await client.send(new GetSecretValueCommand({ SecretId: secretArn }))).SecretString;
  } catch (error) {
    throw new MskAuthError(
      `could not read KAFKA_SASL_SECRET_ARN ${secretArn}: ${(error as Error).message}. ` +
        "Check the ARN and that the role may call secretsmanager:GetSecretValue (and kms:Decrypt on its key).",
      { cause: error },
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text ?? "");
  } catch {
    parsed = undefined;
  }
  const secret = parsed as { username?: unknown; password?: unknown } | undefined;
  if (typeof secret?.username !== "string" || typeof secret.password !== "string") {
    throw new MskAuthError(
      `secret ${secretArn} is not an MSK SCRAM secret: its SecretString must be JSON {"username": "...", "password": "..."}`,
    );
  }
  return { username: secret.username, password: secret.password };
}
