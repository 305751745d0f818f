/**
 * A real Apache Kafka broker (KRaft, single combined broker+controller node) for laptops and CI.
 *
 * The jars come from Maven Central through `kafka/pom.xml` into the git-ignored `.cache/kafka/<version>/libs`;
 * the broker binds to 127.0.0.1 only, on free ports, with its own data directory and a log file.
 *
 * Fault-injection tests route clients through a `FaultProxy` (fault-proxy.ts) with the `proxiedListener` option: the
 * broker gets a third listener, PROXIED, bound to a free port of its own (`proxiedPort`, the proxy's target) and
 * advertised as the proxy's address (`proxiedBrokers`). Kafka answers Metadata with the addresses of the listener the
 * client came in on, so clients that bootstrap at the proxy reach the broker only through it, and clients that
 * bootstrap at `brokers` stay direct. Either start order works:
 *
 *   // broker first
 *   const proxyPort = await freePort();
 *   const kafka = new EmbeddedKafka({ proxiedListener: { advertisedPort: proxyPort } });
 *   await kafka.start();
 *   const proxy = new FaultProxy({ targetPort: kafka.proxiedPort, port: proxyPort });
 *   await proxy.start();
 *
 *   // proxy first (it holds its port, so nothing can take it in between); the target is read per connection
 *   const proxy = new FaultProxy({ targetPort: () => kafka.proxiedPort });
 *   const kafka = new EmbeddedKafka({ proxiedListener: { advertisedPort: await proxy.start() } });
 *   await kafka.start();
 *
 * Authorization tests and `npm start -- --enforce-iam` use the `authorization` option: every client listener then
 * authenticates with SCRAM-SHA-512 (the main one becomes SASL_PLAINTEXT, PROXIED too, SASL_SSL already is), the
 * controller listener with SASL/PLAIN and a random password only the broker knows, and an authorizer as strict as
 * MSK's IAM access control (kafka/MskLikeAuthorizer.java, compiled with javac into .cache on first use) allows nothing
 * without an ACL. No listener is left where an unauthenticated client (principal User:ANONYMOUS) could connect.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { kafkaVersion } from "../shared/kafka-version.ts";

/** The Kafka version pinned in kafka/pom.xml (re-exported for existing callers). */
export { kafkaVersion };

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const POM = join(REPO_ROOT, "kafka", "pom.xml");
/** The MSK-like authorizer's source (see its comment) and class name. */
const AUTHORIZER_SOURCE = join(REPO_ROOT, "kafka", "MskLikeAuthorizer.java");
const AUTHORIZER_CLASS = "userlogin.local.MskLikeAuthorizer";
/** The broker's own principal on the controller listener (SASL/PLAIN); not a SCRAM user. */
const CONTROLLER_USER = "kraft-controller";
/** SCRAM user names kafka-storage's --add-scram can take, and ACL principals can name, unquoted. */
const SCRAM_NAME = /^[A-Za-z0-9._-]{1,64}$/;

export class EmbeddedKafkaError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "EmbeddedKafkaError";
  }
}

function requireTool(command: string, args: string[], install: string): void {
  const result = spawnSync(command, args, { stdio: "ignore" });
  if (result.error) {
    throw new EmbeddedKafkaError(
      `The embedded Kafka broker needs '${command}' on PATH, and it was not found. ${install} ` +
        "Or set KAFKA_BROKERS to a broker you already run.",
    );
  }
}

/** Resolves the broker's jars with Maven into the cache (once) and returns the folder that holds them. */
export function ensureKafkaJars(log: (line: string) => void = () => {}): string {
  const version = kafkaVersion();
  const libs = join(REPO_ROOT, ".cache", "kafka", version, "libs");
  const marker = join(libs, ".complete");
  if (existsSync(marker)) return libs;
  requireTool("java", ["-version"], "Install Java 17 or newer (for example: apt-get install openjdk-17-jre-headless).");
  requireTool("mvn", ["--version"], "Install Apache Maven (for example: apt-get install maven).");
  log(`Resolving Apache Kafka ${version} with Maven into ${libs} (first run only)...`);
  mkdirSync(libs, { recursive: true });
  const mvn = spawnSync(
    "mvn",
    ["-B", "-q", "-f", POM, "dependency:copy-dependencies", `-DoutputDirectory=${libs}`, "-DincludeScope=runtime"],
    { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
  );
  if (mvn.status !== 0) {
    throw new EmbeddedKafkaError(
      `mvn could not resolve Apache Kafka ${version} (exit ${mvn.status}):\n${mvn.stdout}${mvn.stderr}`,
    );
  }
  writeFileSync(marker, `${version}\n`);
  return libs;
}

/**
 * Compiles kafka/MskLikeAuthorizer.java against the broker's jars into the git-ignored cache (once per source and
 * Kafka version, like the jars) and returns the classes folder to put on the broker's classpath.
 */
export function compileAuthorizer(libs: string, log: (line: string) => void = () => {}): string {
  const source = readFileSync(AUTHORIZER_SOURCE, "utf8");
  const hash = createHash("sha256").update(source).update(kafkaVersion()).digest("hex").slice(0, 16);
  const classes = join(REPO_ROOT, ".cache", "kafka", kafkaVersion(), `authorizer-${hash}`);
  const marker = join(classes, ".complete");
  if (existsSync(marker)) return classes;
  requireTool("javac", ["-version"], "Install a Java 17 JDK (for example: apt-get install openjdk-17-jdk-headless).");
  log(`Compiling ${AUTHORIZER_SOURCE} into ${classes} (first run only)...`);
  mkdirSync(classes, { recursive: true });
  const javac = spawnSync("javac", ["-nowarn", "-cp", join(libs, "*"), "-d", classes, AUTHORIZER_SOURCE], {
    encoding: "utf8",
  });
  if (javac.status !== 0) {
    throw new EmbeddedKafkaError(`javac could not compile ${AUTHORIZER_SOURCE}:\n${javac.stdout}${javac.stderr}`);
  }
  writeFileSync(marker, `${hash}\n`);
  return classes;
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === "object") resolvePort(address.port);
        else reject(new EmbeddedKafkaError("could not find a free port"));
      });
    });
  });
}

/** Resolves true once something accepts TCP connections on host:port. */
function canConnect(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolveConnect) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolveConnect(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("error", () => done(false));
    socket.connect(port, "127.0.0.1", () => done(true));
  });
}

/** Blocks until `pid` is a zombie or gone (Linux /proc; elsewhere it waits `timeoutMs`), at most `timeoutMs`. */
function waitForDeath(pid: number, timeoutMs: number): void {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if (/^\d+ \(.*\) [ZX]/s.test(readFileSync(`/proc/${pid}/stat`, "utf8"))) return;
    } catch {
      if (existsSync("/proc/self/stat")) return; // no such process any more
    }
    Atomics.wait(pause, 0, 0, 10);
  }
}

/**
 * Writes a broker's `server.properties` and a log4j2 configuration that logs to `logFile` (INFO, state changes and
 * requests at WARN) into `dataDir`; returns the path of `server.properties`.
 */
export function writeBrokerFiles(
  dataDir: string,
  properties: Readonly<Record<string, string>>,
  logFile: string,
): string {
  const config = join(dataDir, "server.properties");
  writeFileSync(
    config,
    `${Object.entries(properties)
      .map(([k, v]) => `${k}=${v}`)
      .join("\n")}\n`,
  );
  writeFileSync(
    join(dataDir, "log4j2.properties"),
    [
      "status = warn",
      "appender.file.type = File",
      "appender.file.name = FILE",
      `appender.file.fileName = ${logFile}`,
      "appender.file.layout.type = PatternLayout",
      "appender.file.layout.pattern = [%d] %p %m (%c)%n",
      "rootLogger.level = INFO",
      "rootLogger.appenderRef.file.ref = FILE",
      "logger.state.name = state.change.logger",
      "logger.state.level = WARN",
      "logger.request.name = kafka.request.logger",
      "logger.request.level = WARN",
      "",
    ].join("\n"),
  );
  return config;
}

export interface EmbeddedKafkaOptions {
  /** Client port. @default a free port */
  readonly port?: number;
  /** Data and config folder; kept across restarts. @default a new temporary folder, removed by stop() */
  readonly dataDir?: string;
  /** Maximum JVM heap. @default "1g" */
  readonly heap?: string;
  /** How long start() waits for the broker. @default 90000 */
  readonly startTimeoutMs?: number;
  /** A second listener, SASL_SSL with SCRAM-SHA-512, as MSK's SCRAM endpoint. @default none */
  readonly saslSsl?: {
    /** PKCS12 keystore with the broker's key and certificate chain. */
    readonly keystore: string;
    readonly password: string;
    /** SCRAM-SHA-512 users created at format time: name -> password. */
    readonly users: Readonly<Record<string, string>>;
  };
  /**
   * A third listener, PROXIED (plaintext), bound to a free port of its own (`proxiedPort`) and advertised as
   * `127.0.0.1:<advertisedPort>`, where a FaultProxy forwards to `proxiedPort`. @default none
   */
  readonly proxiedListener?: {
    readonly advertisedPort: number;
  };
  /**
   * Authentication and ACLs on every listener, as on MSK with IAM access control (see the file comment). The ACLs
   * themselves are the caller's: create them as `superUser` (functions/local/iam-acl.ts derives them from the stack).
   * @default none (PLAINTEXT, no authorizer)
   */
  readonly authorization?: {
    /** SCRAM-SHA-512 users created at format time: name -> password. Merged with saslSsl's users. */
    readonly users: Readonly<Record<string, string>>;
    /** The one user (in `users`) that bypasses ACLs: test setup and ACL administration only. */
    readonly superUser: string;
  };
  /** Extra server.properties lines. */
  readonly extraProperties?: Readonly<Record<string, string>>;
  /** Progress messages (jar resolution). @default silent */
  readonly log?: (line: string) => void;
}

/**
 * A broker's JVM in a process group of its own (so that a terminal's Ctrl-C reaches this process, which stops the
 * broker after draining), killed when this process exits without stopping it. For EmbeddedKafka and EmbeddedBrokerNode.
 */
export class BrokerJvm {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private stderr = "";

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  get exitCode(): number | null | undefined {
    return this.child?.exitCode;
  }

  /** The last 4,000 characters the JVM wrote to stderr. */
  get stderrTail(): string {
    return this.stderr;
  }

  /** Starts `java args`; `onProcessExit` also runs (synchronously) when this process exits with the JVM running. */
  spawn(args: string[], onProcessExit: (child: ChildProcess) => void = () => {}): void {
    const child = spawn("java", args, { stdio: ["ignore", "ignore", "pipe"], detached: true });
    const killOnExit = () => {
      child.kill("SIGKILL");
      onProcessExit(child);
    };
    process.once("exit", killOnExit);
    child.once("exit", () => process.off("exit", killOnExit));
    this.stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-4000);
    });
    this.child = child;
    this.exited = new Promise((done) => child.once("exit", () => done()));
  }

  /** Clean shutdown (SIGTERM: controlled shutdown; SIGKILL after `graceMs`). */
  async stop(graceMs = 15_000): Promise<void> {
    if (!this.running) return;
    this.child?.kill("SIGTERM");
    const timer = setTimeout(() => this.child?.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Hard crash, as a lost broker would. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.child?.kill("SIGKILL");
    await this.exited;
  }
}

export class EmbeddedKafka {
  private readonly jvm = new BrokerJvm();
  private port = 0;
  private controllerPort = 0;
  private saslSslPort = 0;
  private proxiedListenerPort = 0;
  /** The controller listener's SASL/PLAIN password (authorization only): random, in server.properties only. */
  private readonly controllerPassword = randomBytes(18).toString("base64url");
  private readonly ownsDataDir: boolean;
  readonly dataDir: string;

  constructor(private readonly options: EmbeddedKafkaOptions = {}) {
    const auth = options.authorization;
    if (auth && auth.users[auth.superUser] === undefined) {
      throw new EmbeddedKafkaError(`authorization.superUser "${auth.superUser}" is not one of authorization.users`);
    }
    for (const name of Object.keys({ ...options.saslSsl?.users, ...auth?.users })) {
      if (!SCRAM_NAME.test(name) || name === CONTROLLER_USER) {
        throw new EmbeddedKafkaError(
          `SCRAM user name "${name}" must match ${SCRAM_NAME} and not be "${CONTROLLER_USER}"`,
        );
      }
    }
    this.ownsDataDir = options.dataDir === undefined;
    this.dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "user-login-kafka-"));
  }

  /** `127.0.0.1:PORT`, the bootstrap servers string for clients (SASL_PLAINTEXT with `authorization`). */
  get brokers(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** `127.0.0.1:PORT` of the SASL_SSL listener, when configured. */
  get saslSslBrokers(): string {
    return `127.0.0.1:${this.saslSslPort}`;
  }

  /** The PROXIED listener's real port, the one a FaultProxy must target (0 before start()). */
  get proxiedPort(): number {
    return this.proxiedListenerPort;
  }

  /** `127.0.0.1:ADVERTISED_PORT`, the bootstrap servers string for clients that go through the proxy. */
  get proxiedBrokers(): string {
    if (!this.options.proxiedListener) throw new EmbeddedKafkaError("this broker has no proxiedListener");
    return `127.0.0.1:${this.options.proxiedListener.advertisedPort}`;
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

  /** Formats the storage on first start, starts the JVM and waits until it accepts connections. */
  async start(): Promise<string> {
    if (this.running) return this.brokers;
    const libs = ensureKafkaJars(this.options.log);
    if (this.port === 0) this.port = this.options.port ?? (await freePort());
    if (this.controllerPort === 0) this.controllerPort = await freePort();
    if (this.options.saslSsl && this.saslSslPort === 0) this.saslSslPort = await freePort();
    if (this.options.proxiedListener && this.proxiedListenerPort === 0) this.proxiedListenerPort = await freePort();
    const config = this.writeConfig();
    const classpath = this.options.authorization
      ? [join(libs, "*"), compileAuthorizer(libs, this.options.log)].join(delimiter)
      : join(libs, "*");
    if (!existsSync(join(this.dataDir, "logs", "meta.properties"))) {
      const clusterId = randomBytes(16).toString("base64url");
      // SCRAM users go into the bootstrap metadata, so they exist before the first client connects.
      const users = { ...this.options.saslSsl?.users, ...this.options.authorization?.users };
      const scram = Object.entries(users).flatMap(([name, password]) => [
        "--add-scram",
        `SCRAM-SHA-512=[name=${name},password=${password}]`,
      ]);
      const format = spawnSync(
        "java",
        [
          ...this.jvmArgs(),
          "-cp",
          classpath,
          "kafka.tools.StorageTool",
          "format",
          `--cluster-id=${clusterId}`,
          "--config",
          config,
          ...scram,
        ],
        { encoding: "utf8" },
      );
      if (format.status !== 0) {
        throw new EmbeddedKafkaError(`formatting KRaft storage failed:\n${format.stdout}${format.stderr}`);
      }
    }
    // A process that exits without destroy() (an error, a forced Ctrl-C) takes the broker and its temporary folder
    // with it. Exit handlers run synchronously: wait (briefly) for the JVM to be gone before removing its folder.
    this.jvm.spawn([...this.jvmArgs(), "-cp", classpath, "kafka.Kafka", config], (child) => {
      if (!this.ownsDataDir || child.pid === undefined) return;
      waitForDeath(child.pid, 2000);
      rmSync(this.dataDir, { recursive: true, force: true });
    });
    const deadline = Date.now() + (this.options.startTimeoutMs ?? 90_000);
    while (Date.now() < deadline) {
      if (!this.running) {
        throw new EmbeddedKafkaError(
          `Kafka exited during start-up (code ${this.jvm.exitCode}). See ${this.logFile}.\n${this.jvm.stderrTail}${this.tail()}`,
        );
      }
      if (await canConnect(this.port, 500)) {
        if (await this.isServing()) return this.brokers;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    await this.kill();
    throw new EmbeddedKafkaError(`Kafka did not accept connections on ${this.brokers} in time. See ${this.logFile}.`);
  }

  /** Clean shutdown (SIGTERM, then SIGKILL after a grace period); the data directory stays until destroy(). */
  stop(graceMs = 15_000): Promise<void> {
    return this.jvm.stop(graceMs);
  }

  /** Hard crash, as a lost broker would. */
  kill(): Promise<void> {
    return this.jvm.kill();
  }

  /** Stops the broker and removes a temporary data directory. */
  async destroy(): Promise<void> {
    await this.stop();
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }

  private jvmArgs(): string[] {
    return [
      `-Xmx${this.options.heap ?? "1g"}`,
      "-Xms256m",
      "-XX:+UseG1GC",
      "-Djava.awt.headless=true",
      `-Dlog4j2.configurationFile=${join(this.dataDir, "log4j2.properties")}`,
      `-Dkafka.logs.dir=${this.dataDir}`,
    ];
  }

  private isServing(): Promise<boolean> {
    // The broker answers metadata requests once the KRaft controller has registered it; the log says so.
    return Promise.resolve(existsSync(this.logFile) && /Kafka Server started/.test(readFileSync(this.logFile, "utf8")));
  }

  private tail(): string {
    if (!existsSync(this.logFile)) return "";
    return readFileSync(this.logFile, "utf8").split("\n").slice(-30).join("\n");
  }

  /** listeners, advertised.listeners and their protocol map, for every listener configured. */
  private listenerProperties(): Record<string, string> {
    // With authorization the main listener authenticates too: no unauthenticated way in.
    const main = this.options.authorization ? "SASL_PLAINTEXT" : "PLAINTEXT";
    const listeners = [`${main}://127.0.0.1:${this.port}`];
    const advertised = [`${main}://127.0.0.1:${this.port}`];
    const protocols = [`${main}:${main}`];
    if (this.options.saslSsl) {
      listeners.push(`SASL_SSL://127.0.0.1:${this.saslSslPort}`);
      advertised.push(`SASL_SSL://127.0.0.1:${this.saslSslPort}`);
      protocols.push("SASL_SSL:SASL_SSL");
    }
    if (this.options.proxiedListener) {
      listeners.push(`PROXIED://127.0.0.1:${this.proxiedListenerPort}`);
      advertised.push(`PROXIED://127.0.0.1:${this.options.proxiedListener.advertisedPort}`);
      protocols.push(`PROXIED:${main}`);
    }
    listeners.push(`CONTROLLER://127.0.0.1:${this.controllerPort}`);
    protocols.push(`CONTROLLER:${this.options.authorization ? "SASL_PLAINTEXT" : "PLAINTEXT"}`);
    return {
      listeners: listeners.join(","),
      "advertised.listeners": advertised.join(","),
      "listener.security.protocol.map": protocols.join(","),
      "inter.broker.listener.name": main,
    };
  }

  /**
   * SCRAM on every client listener; the broker's own connections (inter-broker, as the super user; broker to
   * controller, as CONTROLLER_USER over SASL/PLAIN, since KRaft controllers cannot use SCRAM) authenticate too. Both are
   * super users: the controller listener carries broker registration and heartbeats (CLUSTER_ACTION). That is safe:
   * the controller listener is not advertised, and its PLAIN password is random per broker object and appears only in
   * server.properties in the broker's own data directory, so no component can connect there.
   */
  private authorizationProperties(): Record<string, string> {
    const auth = this.options.authorization;
    if (!auth) return {};
    const scramLogin = (username: string) =>
      `org.apache.kafka.common.security.scram.ScramLoginModule required username="${username}" password="${auth.users[username]}";`;
    const properties: Record<string, string> = {
      "sasl.enabled.mechanisms": "SCRAM-SHA-512",
      "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
      "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": scramLogin(auth.superUser),
      "sasl.mechanism.controller.protocol": "PLAIN",
      "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
      "listener.name.controller.plain.sasl.jaas.config":
        "org.apache.kafka.common.security.plain.PlainLoginModule required " +
        `username="${CONTROLLER_USER}" password="${this.controllerPassword}" user_${CONTROLLER_USER}="${this.controllerPassword}";`,
      "authorizer.class.name": AUTHORIZER_CLASS,
      "allow.everyone.if.no.acl.found": "false",
      "super.users": `User:${auth.superUser};User:${CONTROLLER_USER}`,
    };
    if (this.options.proxiedListener) {
      // Server side only: nothing of the broker's own connects through the proxy.
      properties["listener.name.proxied.scram-sha-512.sasl.jaas.config"] =
        "org.apache.kafka.common.security.scram.ScramLoginModule required;";
    }
    return properties;
  }

  private saslSslProperties(): Record<string, string> {
    const tls = this.options.saslSsl;
    if (!tls) return {};
    return {
      "sasl.enabled.mechanisms": "SCRAM-SHA-512",
      "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
      "ssl.keystore.type": "PKCS12",
      "ssl.keystore.location": tls.keystore,
      "ssl.keystore.password": tls.password,
      "ssl.key.password": tls.password,
    };
  }

  private writeConfig(): string {
    mkdirSync(this.dataDir, { recursive: true });
    const properties: Record<string, string> = {
      "process.roles": "broker,controller",
      "node.id": "1",
      "controller.quorum.voters": `1@127.0.0.1:${this.controllerPort}`,
      ...this.listenerProperties(),
      "controller.listener.names": "CONTROLLER",
      "log.dirs": join(this.dataDir, "logs"),
      "num.partitions": "1",
      // As on MSK: topics are created by the project, never by a typo in a producer.
      "auto.create.topics.enable": "false",
      "offsets.topic.replication.factor": "1",
      "offsets.topic.num.partitions": "1",
      "transaction.state.log.replication.factor": "1",
      "transaction.state.log.min.isr": "1",
      "share.coordinator.state.topic.replication.factor": "1",
      "share.coordinator.state.topic.min.isr": "1",
      "group.initial.rebalance.delay.ms": "0",
      ...this.saslSslProperties(),
      ...this.authorizationProperties(),
      ...this.options.extraProperties,
    };
    return writeBrokerFiles(this.dataDir, properties, this.logFile);
  }
}
