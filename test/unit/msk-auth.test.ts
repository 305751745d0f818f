import { describe, expect, it } from "vitest";
import { loadConnectionConfig } from "../../functions/shared/config.ts";
import { kafkaSecurity, resolveBrokers } from "../../functions/shared/kafka.ts";
import {
  clearDiscoveredBrokers,
  discoverBrokers,
  iamTokenProvider,
  scramSecret,
} from "../../functions/shared/msk-auth.ts";

const CLUSTER = "arn:aws:kafka:eu-west-1:123456789012:cluster/user-login/6b4e0d3a-1c2b-4d5e-8f9a-0b1c2d3e4f50-s1";

function fakeCredentials(expiration?: Date) {
  const provider = async () => ({
    accessKeyId: "AKIDEXAMPLE",
    secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    sessionToken: "session-token-example",
    expiration,
  });
  const counted = Object.assign(
    async () => {
      counted.calls++;
      return provider();
    },
    { calls: 0 },
  );
  return counted;
}

function decode(token: string): URL {
  return new URL(Buffer.from(token, "base64url").toString("utf8"));
}

describe("the MSK IAM token provider", () => {
  it("signs a presigned kafka-cluster:Connect URL offline for the configured region", async () => {
    const provider = iamTokenProvider({ region: "eu-west-1", credentials: fakeCredentials() });
    const url = decode((await provider()).value);
    expect(url.host).toBe("kafka.eu-west-1.amazonaws.com");
    expect(url.searchParams.get("Action")).toBe("kafka-cluster:Connect");
    expect(url.searchParams.get("X-Amz-Algorithm")).toBe("AWS4-HMAC-SHA256");
    expect(url.searchParams.get("X-Amz-Credential")).toMatch(
      /^AKIDEXAMPLE\/\d{8}\/eu-west-1\/kafka-cluster\/aws4_request$/,
    );
    expect(url.searchParams.get("X-Amz-Expires")).toBe("900");
    expect(url.searchParams.get("X-Amz-Security-Token")).toBe("session-token-example");
    expect(url.searchParams.get("X-Amz-Signature")).toMatch(/^[0-9a-f]{64}$/);
  });

  it("caps the token's life at the credentials' own expiry", async () => {
    const provider = iamTokenProvider({
      region: "us-east-1",
      credentials: fakeCredentials(new Date(Date.now() + 300_000)),
    });
    const expires = Number(decode((await provider()).value).searchParams.get("X-Amz-Expires"));
    expect(expires).toBeGreaterThan(290);
    expect(expires).toBeLessThanOrEqual(300);
  });

  it("reuses a token until shortly before it expires, then signs a new one", async () => {
    let now = Date.now();
    const credentials = fakeCredentials();
    const provider = iamTokenProvider({ region: "us-east-1", credentials, now: () => now, refreshMarginMs: 60_000 });
    const first = await provider();
    now += 10 * 60_000;
    expect(await provider()).toEqual(first);
    expect(credentials.calls).toBe(1);
    now += 5 * 60_000;
    await provider();
    expect(credentials.calls).toBe(2);
  });

  it("signs once for concurrent callers", async () => {
    const credentials = fakeCredentials();
    const provider = iamTokenProvider({ region: "us-east-1", credentials });
    const tokens = await Promise.all([provider(), provider(), provider()]);
    expect(new Set(tokens.map((t) => t.value)).size).toBe(1);
    expect(credentials.calls).toBe(1);
  });

  it("explains a signing failure without leaking anything secret", async () => {
    const provider = iamTokenProvider({
      region: "us-east-1",
      credentials: async () => {
        throw new Error("Could not load credentials from any providers");
      },
    });
    await expect(provider()).rejects.toThrow(
      /could not sign an MSK IAM token in us-east-1: Could not load credentials/,
    );
  });
});

describe("bootstrap broker discovery", () => {
  const response = {
    BootstrapBrokerString: "b-1.plain:9092,b-2.plain:9092",
    BootstrapBrokerStringTls: "b-1.tls:9094,b-2.tls:9094",
    BootstrapBrokerStringSaslIam: "b-1.iam:9098,b-2.iam:9098",
  };
  const fakeClient = () => {
    const client = {
      calls: 0,
      send: async (command: { input: { ClusterArn?: string } }) => {
        client.calls++;
        expect(command.input.ClusterArn).toBe(CLUSTER);
        return response;
      },
    };
    return client as typeof client & { send: never };
  };

  it.each([
    ["iam", false, ["b-1.iam:9098", "b-2.iam:9098"]],
    ["none", false, ["b-1.plain:9092", "b-2.plain:9092"]],
    ["none", true, ["b-1.tls:9094", "b-2.tls:9094"]],
  ] as const)("picks the bootstrap string for KAFKA_AUTH=%s (tls %s)", async (auth, tls, expected) => {
    clearDiscoveredBrokers();
    expect(await discoverBrokers(fakeClient(), CLUSTER, auth, tls)).toEqual(expected);
  });

  it("asks AWS once per container", async () => {
    clearDiscoveredBrokers();
    const client = fakeClient();
    await discoverBrokers(client, CLUSTER, "iam", true);
    await discoverBrokers(client, CLUSTER, "iam", true);
    expect(client.calls).toBe(1);
  });

  it("says clearly when the cluster has no endpoint for the chosen mode", async () => {
    clearDiscoveredBrokers();
    await expect(discoverBrokers(fakeClient(), CLUSTER, "scram", true)).rejects.toThrow(
      /has no endpoint for KAFKA_AUTH=scram \(BootstrapBrokerStringSaslScram is empty\)/,
    );
  });

  it("uses KAFKA_BROKERS first, then MSK_CLUSTER_ARN, then the event's bootstrapServers", async () => {
    clearDiscoveredBrokers();
    const aws = { kafka: fakeClient() };
    const env = { AWS_REGION: "eu-west-1", KAFKA_AUTH: "iam" };
    expect(await resolveBrokers(loadConnectionConfig({ ...env, KAFKA_BROKERS: "h:1" }), aws, ["e:1"])).toEqual(["h:1"]);
    expect(await resolveBrokers(loadConnectionConfig({ ...env, MSK_CLUSTER_ARN: CLUSTER }), aws, ["e:1"])).toEqual([
      "b-1.iam:9098",
      "b-2.iam:9098",
    ]);
    expect(await resolveBrokers(loadConnectionConfig(env), aws, ["e:1"])).toEqual(["e:1"]);
    await expect(resolveBrokers(loadConnectionConfig(env), aws)).rejects.toThrow(
      /KAFKA_BROKERS environment variable is not set/,
    );
  });
});

describe("SCRAM secrets", () => {
  const client = (secretString: string) => ({ send: async () => ({ SecretString: secretString }) }) as never;

  it("reads an MSK SCRAM secret's username and password", async () => {
    expect(await scramSecret(client('{"username":"alice","password":"s3cret"}'), "arn:secret")).toEqual({
      username: "alice",
      password: "s3cret",
    });
  });

  it("rejects a secret of another shape without repeating its contents", async () => {
    const run = scramSecret(client('{"user":"alice","pass":"s3cret-value"}'), "arn:secret");
    await expect(run).rejects.toThrow(/secret arn:secret is not an MSK SCRAM secret/);
    await expect(run).rejects.not.toThrow(/s3cret-value/);
  });

  it("builds SCRAM-SHA-512 over TLS from the secret", async () => {
    const config = loadConnectionConfig({
      KAFKA_AUTH: "scram",
      KAFKA_SASL_SECRET_ARN: "arn:secret",
      AWS_REGION: "eu-west-1",
    });
    const security = await kafkaSecurity(config, { secretsManager: client('{"username":"bob","password":"pw"}') });
    expect(security).toEqual({ ssl: true, sasl: { mechanism: "scram-sha-512", username: "bob", password: "pw" } });
  });
});

describe("connection settings", () => {
  it("defaults to IAM over TLS inside AWS and to plaintext elsewhere", () => {
    expect(loadConnectionConfig({ AWS_EXECUTION_ENV: "AWS_Lambda_nodejs22.x", AWS_REGION: "eu-west-1" })).toMatchObject(
      {
        auth: "iam",
        tls: true,
        region: "eu-west-1",
      },
    );
    expect(loadConnectionConfig({})).toMatchObject({ auth: "none", tls: false });
  });

  it.each([
    [{ KAFKA_AUTH: "kerberos" }, /KAFKA_AUTH must be one of iam, scram, none, got "kerberos"/],
    [{ KAFKA_AUTH: "iam" }, /AWS_REGION environment variable is not set: KAFKA_AUTH=iam needs the cluster's region/],
    [
      { KAFKA_AUTH: "scram" },
      /KAFKA_AUTH=scram needs KAFKA_SASL_SECRET_ARN .* or both KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD/,
    ],
    [{ MSK_CLUSTER_ARN: "my-cluster", AWS_REGION: "eu-west-1" }, /MSK_CLUSTER_ARN must be an MSK cluster ARN/],
    [{ KAFKA_TLS: "sometimes" }, /KAFKA_TLS must be "true" or "false", got "sometimes"/],
  ])("rejects %j with a message naming the variable and the fix", (env, message) => {
    expect(() => loadConnectionConfig(env)).toThrow(message);
  });

  it("says which file it cannot read for KAFKA_TLS_CA_FILE", async () => {
    const config = loadConnectionConfig({ KAFKA_TLS: "true", KAFKA_TLS_CA_FILE: "/nonexistent/ca.pem" });
    await expect(kafkaSecurity(config)).rejects.toThrow(/KAFKA_TLS_CA_FILE \/nonexistent\/ca.pem cannot be read/);
  });
});
