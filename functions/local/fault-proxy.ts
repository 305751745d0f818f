/**
 * A fault-injecting TCP proxy for Kafka traffic, for tests that need the network to misbehave between a client and
 * a real broker. It reads the Kafka framing in both directions (node:net only) and forwards byte-exact unless a fault
 * applies.
 *
 * What each fault models:
 * - `drop-request`: the connection dies while a request is on the wire (a TCP reset mid-request, a NAT or load
 *   balancer cutting a flow). Half of the request's bytes reach the broker, then both sockets are reset: the broker
 *   never sees a whole request, so it never applies it, and the client gets a network error.
 * - `drop-response`: the request reaches the broker whole and is applied (records written, offsets committed), but the
 *   connection dies before the response reaches the client (a lost response). The client sees a network error for a
 *   request that did happen: the case that makes a non-idempotent retry write duplicates.
 * - `delay-response`: the response is held for `ms` and then delivered (a slow or paused broker, a GC pause, a
 *   congested link), long enough to exceed a client's request timeout. Later responses on the same connection queue
 *   behind it, as they would on one TCP stream. Nothing is delivered if the connection closes meanwhile.
 * - `close-after-bytes`: the next new connection that matches is cut after `bytes` client-to-broker bytes (a
 *   connection that dies during its handshake or after a given amount of traffic).
 * - `refuseConnections(true)`: every new connection is accepted and immediately reset (a broker that is down, or a
 *   port that no longer leads anywhere). `dropAll()` resets every live connection at once (a network partition, a
 *   broker restart as the clients see it).
 *
 * Faults are matched per request on `apiKey` (0 Produce, 1 Fetch, 8 OffsetCommit, ...) and `clientId` (exact string or
 * RegExp), and fire `times` times (default 1; Infinity allowed). The decision is made when the request arrives: a
 * `drop-response` or `delay-response` then applies to that request's response, matched by correlation id. A Produce
 * with acks=0 has no response, so response faults never fire for it. `close-after-bytes` ignores `apiKey`; with a
 * `clientId` filter it is matched on the connection's first request (no bytes have been forwarded before that).
 *
 * Sockets are cut with a TCP reset (`resetAndDestroy`), so both peers see ECONNRESET rather than an orderly close.
 *
 * Routing clients through it: see `EmbeddedKafka`'s `proxiedListener` option. The broker advertises the proxy's
 * address on a listener of its own, so clients that bootstrap at the proxy stay on the proxy for every connection.
 */
import { createServer, type Server, Socket } from "node:net";

export type FaultKind = "drop-request" | "drop-response" | "delay-response" | "close-after-bytes";

interface FaultFilter {
  /** Only requests with this API key (0 Produce, 1 Fetch, 8 OffsetCommit, ...). Ignored by close-after-bytes. */
  readonly apiKey?: number;
  /** Only requests from this client id (exact) or matching this pattern. */
  readonly clientId?: string | RegExp;
  /** How many times the fault fires before it is used up. @default 1 */
  readonly times?: number;
}

export type Fault =
  | (FaultFilter & { readonly kind: "drop-request" })
  | (FaultFilter & { readonly kind: "drop-response" })
  | (FaultFilter & { readonly kind: "delay-response"; readonly ms: number })
  | (FaultFilter & { readonly kind: "close-after-bytes"; readonly bytes: number });

export interface FaultProxyOptions {
  /** @default "127.0.0.1" */
  readonly targetHost?: string;
  /** The broker port to forward to; a function is read at each new connection (so the proxy may start first). */
  readonly targetPort: number | (() => number);
  /** Port to listen on (127.0.0.1). @default a free port */
  readonly port?: number;
}

export interface FaultProxyStats {
  /** Connections accepted (refused ones included). */
  connections: number;
  /** Connections reset at once by refuseConnections(true). */
  refused: number;
  /** Requests seen, by API key. */
  requests: Record<number, number>;
  /** Responses delivered or held, matched to a request. */
  responses: number;
  /** Faults fired, by kind. */
  faults: Record<FaultKind, number>;
  /** Bytes forwarded client -> broker and broker -> client. */
  bytesToBroker: number;
  bytesToClient: number;
}

interface ActiveFault {
  readonly id: number;
  readonly fault: Fault;
  remaining: number;
}

interface RequestInfo {
  readonly apiKey: number;
  readonly clientId: string | null;
  readonly fault?: Fault;
}

const REQUEST_HEADER = 14; // size, apiKey, apiVersion, correlationId, clientId length
const RESPONSE_HEADER = 8; // size, correlationId

function matches(fault: Fault, apiKey: number | undefined, clientId: string | null | undefined): boolean {
  if (fault.apiKey !== undefined && fault.kind !== "close-after-bytes" && fault.apiKey !== apiKey) return false;
  if (fault.clientId === undefined) return true;
  if (clientId === null || clientId === undefined) return false;
  return typeof fault.clientId === "string" ? fault.clientId === clientId : fault.clientId.test(clientId);
}

function reset(socket: Socket): void {
  if (socket.destroyed) return;
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}

/** One client connection and its broker connection. */
class ProxiedConnection {
  private closed = false;
  /** A drop-response cut is under way: nothing more goes to the client. */
  private closing = false;
  /** Client -> broker: bytes of the current request frame still to forward unparsed. */
  private requestRemaining = 0;
  private requestPending: Buffer | undefined;
  /** Client -> broker bytes left before the connection is cut, once a fault has armed it. */
  private killAfter: number | undefined;
  /** close-after-bytes with a clientId filter, decided on the first request. */
  private firstRequest = true;
  private responseRemaining = 0;
  private responsePending: Buffer | undefined;
  private readonly inFlight = new Map<number, RequestInfo>();
  /** Broker -> client output held behind a delayed response: buffers and release times. */
  private held: Array<Buffer | number> | undefined;
  private holdTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly proxy: FaultProxy,
    private readonly client: Socket,
    private readonly broker: Socket,
  ) {
    client.setNoDelay(true);
    broker.setNoDelay(true);
    client.on("data", (chunk: Buffer) => this.onRequestData(chunk));
    broker.on("data", (chunk: Buffer) => this.onResponseData(chunk));
    client.on("error", () => this.kill());
    broker.on("error", () => this.kill());
    // An orderly close on one side closes the other after what was written has been flushed.
    client.on("close", () => this.closeFrom(broker));
    broker.on("close", () => this.closeFrom(client));
  }

  /** close-after-bytes: cut the connection after `bytes` more client -> broker bytes. */
  arm(bytes: number): void {
    if (bytes <= 0) this.kill();
    else this.killAfter = bytes;
  }

  /** Cuts both sockets now (TCP reset). */
  kill(): void {
    if (this.closed) return;
    this.closed = true;
    this.stopHolding();
    reset(this.client);
    reset(this.broker);
    this.proxy.forget(this);
  }

  /** Destroys both sockets without a reset (proxy shutdown). */
  destroy(): void {
    this.closed = true;
    this.stopHolding();
    this.client.destroy();
    this.broker.destroy();
  }

  private closeFrom(other: Socket): void {
    if (this.closed) return;
    this.closed = true;
    this.stopHolding();
    other.end();
    // Do not wait for a peer that never answers the FIN.
    setTimeout(() => other.destroy(), 1000).unref();
    this.proxy.forget(this);
  }

  private stopHolding(): void {
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    this.held = undefined;
  }

  private onRequestData(chunk: Buffer): void {
    // Once the cut has begun (killAfter 0), nothing more goes to the broker.
    if (this.closed || this.killAfter === 0) return;
    let data = chunk;
    if (this.requestPending) {
      data = Buffer.concat([this.requestPending, chunk]);
      this.requestPending = undefined;
    }
    let offset = 0;
    while (offset < data.length) {
      if (this.requestRemaining > 0) {
        const n = Math.min(this.requestRemaining, data.length - offset);
        this.requestRemaining -= n;
        offset += n;
        continue;
      }
      // Past the point where an armed cut falls, nothing more reaches the broker: stop parsing.
      if (this.killAfter !== undefined && this.killAfter <= offset) break;
      const available = data.length - offset;
      if (available < REQUEST_HEADER) {
        this.requestPending = data.subarray(offset);
        break;
      }
      const frame = 4 + data.readInt32BE(offset);
      const apiKey = data.readInt16BE(offset + 4);
      const correlationId = data.readInt32BE(offset + 8);
      const clientIdLength = data.readInt16BE(offset + 12);
      const headerLength = REQUEST_HEADER + Math.max(0, clientIdLength);
      if (frame < headerLength) {
        // Not a request header we understand (or no client id): forward as is.
        this.requestRemaining = Math.max(frame, 4);
        continue;
      }
      if (available < headerLength) {
        this.requestPending = data.subarray(offset);
        break;
      }
      const clientId =
        clientIdLength < 0 ? null : data.toString("utf8", offset + REQUEST_HEADER, offset + headerLength);
      this.proxy.stats.requests[apiKey] = (this.proxy.stats.requests[apiKey] ?? 0) + 1;
      if (this.firstRequest) {
        this.firstRequest = false;
        const armed = this.proxy.takeConnectionFault(clientId, true);
        if (armed && this.killAfter === undefined) this.killAfter = offset + armed.bytes;
      }
      const fault = this.proxy.takeRequestFault(apiKey, clientId);
      if (fault?.kind === "drop-request") {
        // Half the frame goes out, then the cut; the loop stops at the next frame (past the cut).
        const cut = offset + Math.max(1, Math.floor(frame / 2));
        this.killAfter = this.killAfter === undefined ? cut : Math.min(this.killAfter, cut);
      } else {
        this.inFlight.set(correlationId, fault ? { apiKey, clientId, fault } : { apiKey, clientId });
      }
      this.requestRemaining = frame;
    }
    // Everything before `offset` (or before the pending header) is forwarded in one write.
    const end = this.requestPending ? data.length - this.requestPending.length : data.length;
    this.toBroker(data.subarray(0, end));
  }

  private toBroker(data: Buffer): void {
    if (this.killAfter === undefined) {
      if (data.length > 0) this.writeBroker(data);
      return;
    }
    const n = Math.min(this.killAfter, data.length);
    this.killAfter -= n;
    if (this.killAfter > 0) {
      if (n > 0) this.writeBroker(data.subarray(0, n));
      return;
    }
    // The cut: what is allowed goes out, then both sockets are reset. Nothing else is read from the client.
    this.client.pause();
    this.requestPending = undefined;
    if (n === 0) {
      this.kill();
      return;
    }
    this.proxy.stats.bytesToBroker += n;
    this.broker.write(data.subarray(0, n), () => this.kill());
  }

  private writeBroker(data: Buffer): void {
    this.proxy.stats.bytesToBroker += data.length;
    if (!this.broker.write(data)) {
      this.client.pause();
      this.broker.once("drain", () => this.client.resume());
    }
  }

  private onResponseData(chunk: Buffer): void {
    if (this.closed || this.closing) return;
    let data = chunk;
    if (this.responsePending) {
      data = Buffer.concat([this.responsePending, chunk]);
      this.responsePending = undefined;
    }
    let start = 0;
    let offset = 0;
    while (offset < data.length) {
      if (this.responseRemaining > 0) {
        const n = Math.min(this.responseRemaining, data.length - offset);
        this.responseRemaining -= n;
        offset += n;
        continue;
      }
      if (data.length - offset < RESPONSE_HEADER) {
        this.responsePending = data.subarray(offset);
        break;
      }
      const frame = 4 + data.readInt32BE(offset);
      const correlationId = data.readInt32BE(offset + 4);
      const request = this.inFlight.get(correlationId);
      this.inFlight.delete(correlationId);
      if (request) this.proxy.stats.responses++;
      if (request?.fault?.kind === "drop-response") {
        this.proxy.stats.faults["drop-response"]++;
        // Earlier responses in this chunk still go out (unless held); this one never does.
        const before = data.subarray(start, offset);
        this.broker.pause();
        this.responsePending = undefined;
        if (this.held || before.length === 0) {
          this.kill();
        } else {
          this.closing = true;
          this.proxy.stats.bytesToClient += before.length;
          this.client.write(before, () => this.kill());
        }
        return;
      }
      if (request?.fault?.kind === "delay-response") {
        this.proxy.stats.faults["delay-response"]++;
        this.toClient(data.subarray(start, offset));
        start = offset;
        this.hold(Date.now() + request.fault.ms);
      }
      this.responseRemaining = Math.max(frame, 4);
    }
    const end = this.responsePending ? data.length - this.responsePending.length : data.length;
    this.toClient(data.subarray(start, end));
  }

  private toClient(data: Buffer): void {
    if (data.length === 0 || this.closed) return;
    if (this.held) {
      this.held.push(data);
      return;
    }
    this.proxy.stats.bytesToClient += data.length;
    if (!this.client.write(data)) {
      this.broker.pause();
      this.client.once("drain", () => this.broker.resume());
    }
  }

  /** Output from here on waits until `releaseAt`. */
  private hold(releaseAt: number): void {
    if (!this.held) this.held = [];
    this.held.push(releaseAt);
    if (!this.holdTimer) this.pump();
  }

  private pump(): void {
    this.holdTimer = undefined;
    const queue = this.held;
    if (!queue || this.closed) return;
    while (queue.length > 0) {
      const next = queue[0] as Buffer | number;
      if (typeof next === "number") {
        const wait = next - Date.now();
        if (wait > 0) {
          this.holdTimer = setTimeout(() => this.pump(), wait);
          return;
        }
        queue.shift();
        continue;
      }
      queue.shift();
      this.proxy.stats.bytesToClient += next.length;
      this.client.write(next);
    }
    this.held = undefined;
  }
}

/**
 * A TCP proxy on 127.0.0.1 in front of one broker port that can drop requests, drop or delay responses, cut
 * connections and refuse new ones. Start it, point clients at `port` (see EmbeddedKafka's `proxiedListener`), inject
 * faults, and stop it when done.
 */
export class FaultProxy {
  readonly stats: FaultProxyStats = FaultProxy.emptyStats();
  private server: Server | undefined;
  private listenPort = 0;
  private nextId = 1;
  private faults: ActiveFault[] = [];
  private refusing = false;
  private readonly connections = new Set<ProxiedConnection>();
  private readonly sockets = new Set<Socket>();

  constructor(private readonly options: FaultProxyOptions) {}

  private static emptyStats(): FaultProxyStats {
    return {
      connections: 0,
      refused: 0,
      requests: {},
      responses: 0,
      faults: { "drop-request": 0, "drop-response": 0, "delay-response": 0, "close-after-bytes": 0 },
      bytesToBroker: 0,
      bytesToClient: 0,
    };
  }

  /** The port clients connect to (0 before start()). */
  get port(): number {
    return this.listenPort;
  }

  /** `127.0.0.1:PORT`. */
  get address(): string {
    return `127.0.0.1:${this.listenPort}`;
  }

  /** Live proxied connections. */
  get openConnections(): number {
    return this.connections.size;
  }

  /** Listens on 127.0.0.1 (the given port or a free one) and returns the port. */
  async start(): Promise<number> {
    if (this.server) return this.listenPort;
    const server = createServer((socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.options.port ?? 0, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    const address = server.address();
    this.listenPort = address && typeof address === "object" ? address.port : 0;
    this.server = server;
    return this.listenPort;
  }

  /** Closes the listener and destroys every socket, so nothing keeps the process alive. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const connection of this.connections) connection.destroy();
    this.connections.clear();
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Adds a fault; returns its id for clear(id). */
  inject(fault: Fault): number {
    const id = this.nextId++;
    this.faults.push({ id, fault, remaining: fault.times ?? 1 });
    return id;
  }

  /** Removes one fault, or all of them. */
  clear(id?: number): void {
    this.faults = id === undefined ? [] : this.faults.filter((f) => f.id !== id);
  }

  /** Faults not yet used up. */
  get activeFaults(): readonly Fault[] {
    return this.faults.map((f) => f.fault);
  }

  /** While on, new connections are accepted and reset at once, like a broker that is down. */
  refuseConnections(on: boolean): void {
    this.refusing = on;
  }

  /** Resets every live connection now. */
  dropAll(): void {
    for (const connection of [...this.connections]) connection.kill();
  }

  /** Zeroes the counters. */
  resetStats(): void {
    Object.assign(this.stats, FaultProxy.emptyStats());
  }

  /** @internal The first request-level fault that matches, used up by one. */
  takeRequestFault(apiKey: number, clientId: string | null): Fault | undefined {
    const active = this.faults.find(
      (f) => f.fault.kind !== "close-after-bytes" && f.remaining > 0 && matches(f.fault, apiKey, clientId),
    );
    if (!active) return undefined;
    this.use(active);
    if (active.fault.kind === "drop-request") this.stats.faults["drop-request"]++;
    return active.fault;
  }

  /**
   * @internal A close-after-bytes fault for a new connection: at accept time those without a clientId filter
   * (`withClientId` false), on the first request those with one.
   */
  takeConnectionFault(clientId: string | null, withClientId: boolean): { bytes: number } | undefined {
    const active = this.faults.find(
      (f) =>
        f.fault.kind === "close-after-bytes" &&
        f.remaining > 0 &&
        (f.fault.clientId !== undefined) === withClientId &&
        matches(f.fault, undefined, clientId),
    );
    if (active?.fault.kind !== "close-after-bytes") return undefined;
    this.use(active);
    this.stats.faults["close-after-bytes"]++;
    return { bytes: Math.max(0, active.fault.bytes) };
  }

  /** @internal */
  forget(connection: ProxiedConnection): void {
    this.connections.delete(connection);
  }

  private use(active: ActiveFault): void {
    active.remaining--;
    if (active.remaining <= 0) this.faults = this.faults.filter((f) => f !== active);
  }

  private accept(client: Socket): void {
    this.stats.connections++;
    if (this.refusing || !this.server) {
      this.stats.refused++;
      client.on("error", () => {});
      reset(client);
      return;
    }
    const targetPort =
      typeof this.options.targetPort === "function" ? this.options.targetPort() : this.options.targetPort;
    const broker = new Socket();
    this.track(client);
    this.track(broker);
    const connection = new ProxiedConnection(this, client, broker);
    this.connections.add(connection);
    broker.connect(targetPort, this.options.targetHost ?? "127.0.0.1");
    const armed = this.takeConnectionFault(null, false);
    if (armed) connection.arm(armed.bytes);
  }

  private track(socket: Socket): void {
    this.sockets.add(socket);
    socket.once("close", () => this.sockets.delete(socket));
  }
}
