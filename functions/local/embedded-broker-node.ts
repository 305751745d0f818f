/**
 * One more broker for a running EmbeddedKafka: a broker-only KRaft node (`process.roles=broker`, node.id N) that
 * joins the EmbeddedKafka's cluster, for tests that need more than one broker (partition leaders on different
 * brokers, a leader that moves when a broker stops).
 *
 * It reads the cluster's `server.properties` (controller.quorum.voters and the broker settings, which it copies) and
 * `logs/meta.properties` (cluster.id), formats storage of its own with that cluster id in its own temporary folder, and
 * binds to 127.0.0.1 on free ports. The cluster's node stays the only controller.
 *
 * Listeners follow the cluster's: PLAINTEXT (direct: advertised as its own port) and, when the EmbeddedKafka has a
 * `proxiedListener`, PROXIED too. With this node's own `proxiedListener` option PROXIED is advertised at the
 * FaultProxy's port, so clients that bootstrap at the cluster's proxy reach this node only through its proxy, while
 * clients that bootstrap at `cluster.brokers` reach it directly:
 *
 *   const proxy1 = new FaultProxy({ targetPort: () => kafka.proxiedPort });
 *   const kafka = new EmbeddedKafka({ proxiedListener: { advertisedPort: await proxy1.start() } });
 *   await kafka.start();
 *   const proxy2 = new FaultProxy({ targetPort: () => node.proxiedPort });
 *   const node = new EmbeddedBrokerNode({
 *     cluster: kafka,
 *     nodeId: 2,
 *     proxiedListener: { advertisedPort: await proxy2.start() },
 *   });
 *   await node.start(); // resolves once the cluster lists broker 2
 *
 * Plaintext clusters only (not the EmbeddedKafka `authorization` or `saslSsl` options). `stop()` and `kill()` keep
 * the data (start() again restarts the same broker); `destroy()` stops it and removes its folder. The broker stays
 * registered (fenced) in the cluster's metadata after it is gone, as a crashed broker would.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKafka } from "../shared/kafka.ts";
import {
  BrokerJvm,
  type EmbeddedKafka,
  EmbeddedKafkaError,
  ensureKafkaJars,
  freePort,
  writeBrokerFiles,
} from "./embedded-kafka.ts";

export interface EmbeddedBrokerNodeOptions {
  /** The running cluster to join. */
  readonly cluster: Pick<EmbeddedKafka, "dataDir" | "brokers">;
  /** This broker's node.id; must differ from the cluster's (1) and from every other node's. */
  readonly nodeId: number;
  /** Client (PLAINTEXT) port. @default a free port */
  readonly port?: number;
  /** PROXIED advertised as `127.0.0.1:<advertisedPort>`, where a FaultProxy forwards to `proxiedPort`. */
  readonly proxiedListener?: { readonly advertisedPort: number };
  /** Maximum JVM heap. @default "512m" */
  readonly heap?: string;
  /** How long start() waits until the cluster lists the broker. @default 90000 */
  readonly startTimeoutMs?: number;
  /** Extra server.properties lines. */
  readonly extraProperties?: Readonly<Record<string, string>>;
}

/** Properties of the cluster's node that are its own, not the cluster's: never copied. */
const NODE_KEYS = new Set([
  "process.roles",
  "node.id",
  "listeners",
  "advertised.listeners",
  "listener.security.protocol.map",
  "log.dirs",
]);

function readProperties(file: string): Map<string, string> {
  const properties = new Map<string, string>();
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const match = /^\s*([^#=\s][^=]*?)\s*=(.*)$/.exec(line);
    if (match?.[1]) properties.set(match[1], match[2] ?? "");
  }
  return properties;
}

export class EmbeddedBrokerNode {
  private readonly jvm = new BrokerJvm();
  private port = 0;
  private proxiedListenerPort = 0;
  readonly dataDir: string;

  constructor(private readonly options: EmbeddedBrokerNodeOptions) {
    if (!Number.isInteger(options.nodeId) || options.nodeId < 0) {
      throw new EmbeddedKafkaError(`nodeId must be a non-negative integer, got ${options.nodeId}`);
    }
    this.dataDir = mkdtempSync(join(tmpdir(), `user-login-kafka-node${options.nodeId}-`));
  }

  get nodeId(): number {
    return this.options.nodeId;
  }

  /** `127.0.0.1:PORT` of this broker's own PLAINTEXT listener (0 before start()). */
  get brokers(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The PROXIED listener's real port, the one a FaultProxy must target (0 before start()). */
  get proxiedPort(): number {
    return this.proxiedListenerPort;
  }

  get logFile(): string {
    return join(this.dataDir, "server.log");
  }

  get pid(): number | undefined {
    return this.jvm.pid;
  }

  get running(): boolean {
    return this.jvm.running;
  }

  /** Formats the storage on first start, starts the JVM and waits until the cluster lists this broker. */
  async start(): Promise<void> {
    if (this.running) return;
    const libs = ensureKafkaJars();
    const cluster = readProperties(join(this.options.cluster.dataDir, "server.properties"));
    const protocols = cluster.get("listener.security.protocol.map") ?? "";
    if (/SASL|SSL/.test(protocols)) {
      throw new EmbeddedKafkaError(`EmbeddedBrokerNode joins plaintext clusters only; this one has ${protocols}`);
    }
    if (cluster.get("node.id") === String(this.options.nodeId)) {
      throw new EmbeddedKafkaError(`node.id ${this.options.nodeId} is the cluster's own node`);
    }
    const clusterProxied = /(^|,)PROXIED:/.test(protocols);
    if (this.options.proxiedListener && !clusterProxied) {
      throw new EmbeddedKafkaError(
        "proxiedListener needs an EmbeddedKafka with a proxiedListener: otherwise no client reaches PROXIED",
      );
    }
    if (this.port === 0) this.port = this.options.port ?? (await freePort());
    if (clusterProxied && this.proxiedListenerPort === 0) this.proxiedListenerPort = await freePort();
    const config = this.writeConfig(cluster, clusterProxied);
    if (!existsSync(join(this.dataDir, "logs", "meta.properties"))) {
      const clusterLogDir = (cluster.get("log.dirs") ?? "").split(",")[0] ?? "";
      const meta = readProperties(join(clusterLogDir, "meta.properties"));
      const clusterId = meta.get("cluster.id");
      if (!clusterId) throw new EmbeddedKafkaError(`no cluster.id in ${clusterLogDir}/meta.properties`);
      const format = spawnSync(
        "java",
        [
          ...this.jvmArgs(),
          "-cp",
          join(libs, "*"),
          "kafka.tools.StorageTool",
          "format",
          `--cluster-id=${clusterId}`,
          "--config",
          config,
        ],
        { encoding: "utf8" },
      );
      if (format.status !== 0) {
        throw new EmbeddedKafkaError(`formatting KRaft storage failed:\n${format.stdout}${format.stderr}`);
      }
    }
    // Its own process group, as EmbeddedKafka's; killed when this process exits.
    this.jvm.spawn([...this.jvmArgs(), "-cp", join(libs, "*"), "kafka.Kafka", config]);
    try {
      await this.waitUntilListed(() => this.jvm.stderrTail);
    } catch (error) {
      await this.kill();
      throw error;
    }
  }

  /** Polls the cluster's metadata (describeCluster, as any client sees it) until it lists this broker. */
  private async waitUntilListed(stderr: () => string): Promise<void> {
    const admin = createKafka({ brokers: [this.options.cluster.brokers], clientId: "embedded-broker-node" }).admin();
    await admin.connect();
    try {
      const deadline = Date.now() + (this.options.startTimeoutMs ?? 90_000);
      while (Date.now() < deadline) {
        if (!this.running) {
          throw new EmbeddedKafkaError(
            `broker ${this.nodeId} exited during start-up (code ${this.jvm.exitCode}). See ${this.logFile}.\n` +
              `${stderr()}${this.tail()}`,
          );
        }
        const listed = await admin.describeCluster().then(
          (c) => c.brokers.some((b) => b.nodeId === this.nodeId),
          () => false,
        );
        if (listed) return;
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await admin.disconnect();
    }
    throw new EmbeddedKafkaError(`the cluster did not list broker ${this.nodeId} in time. See ${this.logFile}.`);
  }

  /** Clean shutdown (SIGTERM: controlled shutdown, leaders move; SIGKILL after `graceMs`). Data stays. */
  stop(graceMs = 15_000): Promise<void> {
    return this.jvm.stop(graceMs);
  }

  /** Hard crash, as a lost broker would. Data stays. */
  kill(): Promise<void> {
    return this.jvm.kill();
  }

  /** Stops the broker and removes its folder. */
  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  private jvmArgs(): string[] {
    return [
      `-Xmx${this.options.heap ?? "512m"}`,
      "-Xms128m",
      "-XX:+UseG1GC",
      "-Djava.awt.headless=true",
      `-Dlog4j2.configurationFile=${join(this.dataDir, "log4j2.properties")}`,
      `-Dkafka.logs.dir=${this.dataDir}`,
    ];
  }

  private tail(): string {
    if (!existsSync(this.logFile)) return "";
    return readFileSync(this.logFile, "utf8").split("\n").slice(-30).join("\n");
  }

  /** The cluster's broker settings, with this node's role, id, listeners and log folder. */
  private writeConfig(cluster: ReadonlyMap<string, string>, proxied: boolean): string {
    mkdirSync(this.dataDir, { recursive: true });
    const listeners = [`PLAINTEXT://127.0.0.1:${this.port}`];
    const advertised = [`PLAINTEXT://127.0.0.1:${this.port}`];
    const protocols = ["PLAINTEXT:PLAINTEXT"];
    if (proxied) {
      listeners.push(`PROXIED://127.0.0.1:${this.proxiedListenerPort}`);
      const advertisedPort = this.options.proxiedListener?.advertisedPort ?? this.proxiedListenerPort;
      advertised.push(`PROXIED://127.0.0.1:${advertisedPort}`);
      protocols.push("PROXIED:PLAINTEXT");
    }
    const properties: Record<string, string> = {
      ...Object.fromEntries([...cluster].filter(([key]) => !NODE_KEYS.has(key))),
      "process.roles": "broker",
      "node.id": String(this.nodeId),
      listeners: listeners.join(","),
      "advertised.listeners": advertised.join(","),
      "listener.security.protocol.map": [...protocols, "CONTROLLER:PLAINTEXT"].join(","),
      "inter.broker.listener.name": "PLAINTEXT",
      "log.dirs": join(this.dataDir, "logs"),
      ...this.options.extraProperties,
    };
    return writeBrokerFiles(this.dataDir, properties, this.logFile);
  }
}
