/**
 * The web console: a local stand-in for Kafdrop or Kafka UI, with the pipeline's own views. Pipeline (live charts of
 * the CloudWatch dashboard's signals, over Server-Sent Events), Topics (partitions, end offsets, groups and lag, the
 * latest records decoded and masked) and Dead letters (counts, the records, redrive with a dry-run preview).
 *
 * Safe by default: it binds 127.0.0.1, answers only requests whose Host names the address it serves (a loopback name,
 * the bound address, or for a wildcard bind this machine's addresses: so a web page cannot reach it through DNS
 * rebinding), sends no CORS headers, refuses any /api/ request a browser marks as coming from another site
 * (Sec-Fetch-Site), and every JSON request must carry this session's token (in the page, readable only by a page of
 * the console's own origin); a state-changing request must also be a POST of JSON with, when the browser sends one,
 * the console's Origin. Redrive is off unless enabled, runs one at a time, and a confirmed redrive publishes only what
 * its preview showed. Logs name the method, path and status only, never a record. Every asset is served from this
 * folder or node_modules: the page loads nothing from elsewhere.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createRequire } from "node:module";
import { type AddressInfo, isIP } from "node:net";
import { networkInterfaces } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Kafka } from "kafkajs";
import {
  type DeadLetter,
  dlqStats,
  maskPersonalData,
  type PeekLine,
  peekLine,
  RedriveBusyError,
  RedriveConflictError,
  readDeadLetters,
  redrive,
} from "../local/dlq.ts";
import { readTopic, type TopicRecord } from "../local/read-topic.ts";
import { topicOverview } from "../local/topic-overview.ts";
import type { PipelineSample, PipelineSource } from "./pipeline-metrics.ts";

const WEB_DIR = join(dirname(fileURLToPath(import.meta.url)), "web");
const UPLOT_DIR = dirname(createRequire(import.meta.url).resolve("uplot"));

/** The only files served: name -> path and type. */
const ASSETS = new Map<string, { path: string; type: string }>([
  ["app.js", { path: join(WEB_DIR, "app.js"), type: "text/javascript; charset=utf-8" }],
  ["app.css", { path: join(WEB_DIR, "app.css"), type: "text/css; charset=utf-8" }],
  ["uPlot.iife.min.js", { path: join(UPLOT_DIR, "uPlot.iife.min.js"), type: "text/javascript; charset=utf-8" }],
  ["uPlot.min.css", { path: join(UPLOT_DIR, "uPlot.min.css"), type: "text/css; charset=utf-8" }],
]);

export const TOKEN_HEADER = "x-console-token";

export interface ConsoleOptions {
  readonly kafka: Kafka;
  readonly topics: { readonly source: string; readonly processed: string; readonly deadLetter: string };
  /** The event source mapping's consumer group (shown on the Pipeline page). */
  readonly groupId: string;
  readonly pipeline: PipelineSource;
  /** @default "127.0.0.1" */
  readonly host?: string;
  /** 0: any free port (tests). @default 8080 */
  readonly port?: number;
  /** Redrive may change the cluster. @default false (read-only) */
  readonly allowRedrive?: boolean;
  /** Show personal data unmasked. @default false */
  readonly unmask?: boolean;
  /** @default `${deadLetter}-redrive`, as npm run dlq -- redrive */
  readonly redriveGroup?: string;
  /** What the page says it is connected to (bootstrap servers). */
  readonly cluster?: string;
  /** Redrives (counts only) and failures; with `logRequests`, also each request's method, path and status. */
  readonly log?: (line: string) => void;
  /** @default false */
  readonly logRequests?: boolean;
  /** @default 1000 */
  readonly sampleIntervalMs?: number;
}

export interface ConsoleServer {
  readonly url: string;
  readonly port: number;
  /** This session's token (the page carries it; tests use it). */
  readonly token: string;
  close(): Promise<void>;
}

export class ConsolePortInUseError extends Error {
  constructor(
    readonly host: string,
    readonly port: number,
  ) {
    super(`the console's port ${port} on ${host} is in use`);
    this.name = "ConsolePortInUseError";
  }
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const LOOPBACK_NAMES = new Set(["localhost", "::1"]);
const WILDCARDS = new Set(["0.0.0.0", "::"]);
const HISTORY = 600;
const MAX_BODY = 16 * 1024;

/** Latest records per topic page: at most this many. */
export const MAX_RECORDS = 200;

const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

function send(res: ServerResponse, status: number, body: string | Buffer, type: string): void {
  res.writeHead(status, { ...SECURITY_HEADERS, "content-type": type, "content-length": Buffer.byteLength(body) });
  res.end(body);
}

const sendJson = (res: ServerResponse, status: number, value: unknown) =>
  send(res, status, JSON.stringify(value), "application/json; charset=utf-8");

/** The body, at most MAX_BODY bytes: a larger one is drained (not kept) and refused with 413, not a reset. */
function readBody(req: IncomingMessage, res: ServerResponse): Promise<string> {
  const tooLarge = () => {
    res.setHeader("connection", "close");
    return new HttpError(413, `request body over ${MAX_BODY} bytes`);
  };
  if (Number(req.headers["content-length"] ?? 0) > MAX_BODY) {
    req.resume();
    return Promise.reject(tooLarge());
  }
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY) chunks.push(chunk);
    });
    req.on("end", () => (size > MAX_BODY ? reject(tooLarge()) : resolve(Buffer.concat(chunks).toString("utf8"))));
    req.on("error", reject);
  });
}

/** The redrive request's fields; any other is refused. */
const REDRIVE_FIELDS = new Set(["code", "since", "until", "dryRun", "confirm", "ends", "count"]);

/** A preview's per-partition end offsets, as the page sends them back. */
function endsParam(value: unknown): Record<number, number> {
  if (value === null || typeof value !== "object" || Array.isArray(value))
    throw new HttpError(400, "ends must be the preview's {partition: end offset}");
  const ends: Record<number, number> = {};
  for (const [partition, offset] of Object.entries(value)) {
    if (!/^\d+$/.test(partition) || !Number.isSafeInteger(offset) || (offset as number) < 0)
      throw new HttpError(400, "ends must be the preview's {partition: end offset}");
    ends[Number(partition)] = offset as number;
  }
  return ends;
}

/** An ISO-8601 time or epoch ms from the page, as epoch ms; "" or absent: undefined. */
function timeParam(value: unknown, name: string): number | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string" && typeof value !== "number")
    throw new HttpError(400, `${name} must be an ISO-8601 time or epoch milliseconds`);
  const text = String(value);
  const ms = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isFinite(ms)) throw new HttpError(400, `${name} must be an ISO-8601 time or epoch milliseconds`);
  return ms;
}

function sameToken(given: string | string[] | undefined, token: string): boolean {
  if (typeof given !== "string") return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Characters of a value a page shows; a record can hold a megabyte. */
export const MAX_VALUE_CHARS = 4000;
/** Bytes of a value kept as it is read for a page: enough for MAX_VALUE_CHARS characters of any UTF-8. */
export const MAX_VALUE_BYTES = 4 * MAX_VALUE_CHARS;

/** A record for the page: masked as dlq peek masks it, its value cut to MAX_VALUE_CHARS. */
function recordLine(record: TopicRecord, unmask: boolean): PeekLine {
  const line = peekLine(record, unmask);
  const bytes = record.valueBytes ?? record.value?.length ?? 0;
  if (line.value !== null && (line.value.length > MAX_VALUE_CHARS || record.valueBytes !== undefined)) {
    line.value = `${line.value.slice(0, MAX_VALUE_CHARS)}… (cut: ${bytes} bytes in all)`;
  }
  return line;
}

/** A dead letter for the page, with its code and reason (masked as the value is). */
const letterLine = (letter: DeadLetter, unmask: boolean) => ({
  ...recordLine(letter, unmask),
  code: letter.code,
  message: unmask ? letter.message : maskPersonalData(letter.message),
});

/** localhost, ::1 and all of 127.0.0.0/8. */
export const isLoopback = (host: string) =>
  LOOPBACK_NAMES.has(host.toLowerCase()) || (isIP(host) === 4 && host.startsWith("127."));

/** The host names a request may use for a console bound to `host`: a wildcard bind adds this machine's addresses. */
export function allowedHostNames(host: string): (name: string) => boolean {
  const names = new Set([host.toLowerCase()]);
  if (WILDCARDS.has(host)) {
    for (const addresses of Object.values(networkInterfaces())) {
      for (const address of addresses ?? []) names.add(address.address.toLowerCase());
    }
  }
  return (name) => isLoopback(name) || names.has(name.toLowerCase());
}

/** A Host header (or an Origin's host) as name and port; undefined when it is not one. */
function parseHost(value: string): { name: string; port: number } | undefined {
  const match = /^(?:\[([0-9a-f:.]+)\]|([a-z0-9.-]+))(?::(\d{1,5}))?$/i.exec(value);
  if (!match) return undefined;
  return { name: (match[1] ?? match[2] ?? "").toLowerCase(), port: match[3] === undefined ? 80 : Number(match[3]) };
}

/** What to print when the console binds an address other machines can reach. */
export function exposureWarning(host: string, allowRedrive: boolean): string | undefined {
  if (isLoopback(host)) return undefined;
  return (
    `warning: --console-host ${host}: the console is reachable from other machines, without authentication` +
    (allowRedrive ? ", and it can redrive dead letters" : "")
  );
}

/** Fails now, with ConsolePortInUseError, when the port is taken (before a long start-up that would end in it). */
export async function checkPortFree(host: string, port: number): Promise<void> {
  const probe = createServer();
  await new Promise<void>((resolve, reject) => {
    probe.once("error", (error: NodeJS.ErrnoException) =>
      reject(error.code === "EADDRINUSE" ? new ConsolePortInUseError(host, port) : error),
    );
    probe.listen(port, host, () => probe.close(() => resolve()));
  });
}

export async function startConsole(options: ConsoleOptions): Promise<ConsoleServer> {
  const host = options.host ?? "127.0.0.1";
  const { kafka, topics, pipeline } = options;
  const unmask = options.unmask === true;
  const allowRedrive = options.allowRedrive === true;
  const redriveGroup = options.redriveGroup ?? `${topics.deadLetter}-redrive`;
  const log = options.log ?? (() => {});
  const token = randomBytes(24).toString("base64url");
  const indexHtml = readFileSync(join(WEB_DIR, "index.html"), "utf8").replace("__CONSOLE_TOKEN__", token);

  // Samples every second into a ring, pushed to every open event stream.
  const history: PipelineSample[] = [];
  const streams = new Set<ServerResponse>();
  let sampleError: string | undefined;
  let sampling = false;
  const tick = async () => {
    if (sampling) return;
    sampling = true;
    try {
      const sample = await pipeline.sample();
      sampleError = undefined;
      history.push(sample);
      if (history.length > HISTORY) history.splice(0, history.length - HISTORY);
      for (const res of streams) res.write(`event: sample\ndata: ${JSON.stringify(sample)}\n\n`);
    } catch (error) {
      const message = (error as Error).message;
      if (message !== sampleError) log(`console: pipeline signals unavailable: ${message}`);
      sampleError = message;
      for (const res of streams) res.write(`event: problem\ndata: ${JSON.stringify({ message })}\n\n`);
    } finally {
      sampling = false;
    }
  };
  let timer: NodeJS.Timeout | undefined;

  let port = 0;
  const allowedName = allowedHostNames(host);
  /** A Host header or Origin host naming this console: an allowed name and its port (DNS rebinding sends another). */
  const ownHost = (value: string | undefined) => {
    const parsed = value === undefined ? undefined : parseHost(value);
    return parsed !== undefined && parsed.port === port && allowedName(parsed.name);
  };

  // One read of the DLQ at a time: concurrent requests share it (a DLQ can hold many large letters).
  let dlqRead: Promise<DeadLetter[]> | undefined;
  const deadLetters = () => {
    dlqRead ??= readDeadLetters(kafka, topics.deadLetter, {}, { maxValueBytes: MAX_VALUE_BYTES }).finally(() => {
      dlqRead = undefined;
    });
    return dlqRead;
  };
  let redriving = false;

  const config = () => ({
    topics,
    groupId: options.groupId,
    redriveGroup,
    allowRedrive,
    unmask,
    cluster: options.cluster ?? "",
    pipelineSource: pipeline.kind,
  });

  async function route(req: IncomingMessage, res: ServerResponse, path: string, query: URLSearchParams) {
    const method = req.method ?? "GET";
    // A browser says where a request comes from: /api/ answers only the console's own page (or a typed address).
    const site = req.headers["sec-fetch-site"];
    if (path.startsWith("/api/") && site !== undefined && site !== "same-origin" && site !== "none")
      throw new HttpError(403, `request from another site (Sec-Fetch-Site: ${site})`);
    if (path === "/api/dlq/redrive") {
      if (method !== "POST") {
        res.setHeader("allow", "POST");
        throw new HttpError(405, "redrive changes the cluster: POST only");
      }
      if (!sameToken(req.headers[TOKEN_HEADER], token)) throw new HttpError(403, "missing or wrong console token");
      const origin = req.headers.origin;
      if (origin !== undefined && !(origin.startsWith("http://") && ownHost(origin.slice("http://".length))))
        throw new HttpError(403, "request from another origin");
      if (!/^application\/json\s*(?:;\s*charset=[\w-]+\s*)?$/i.test(req.headers["content-type"] ?? ""))
        throw new HttpError(415, "send application/json");
      if (!allowRedrive) throw new HttpError(403, "this console is read-only: start it with --allow-redrive");
      let body: Record<string, unknown>;
      const text = await readBody(req, res);
      try {
        body = JSON.parse(text) as Record<string, unknown>;
      } catch {
        throw new HttpError(400, "the body is not JSON");
      }
      if (body === null || typeof body !== "object" || Array.isArray(body))
        throw new HttpError(400, "the body must be a JSON object");
      const unknown = Object.keys(body).filter((key) => !REDRIVE_FIELDS.has(key));
      if (unknown.length > 0) throw new HttpError(400, `unknown fields: ${unknown.join(", ")}`);
      if (body.dryRun !== undefined && typeof body.dryRun !== "boolean")
        throw new HttpError(400, "dryRun must be true or false");
      const dryRun = body.dryRun !== false;
      if (!dryRun && body.confirm !== true) throw new HttpError(400, "a redrive needs confirm: true");
      if (body.code !== undefined && body.code !== null && typeof body.code !== "string")
        throw new HttpError(400, "code must be a string");
      const code = typeof body.code === "string" && body.code !== "" ? body.code : undefined;
      const since = timeParam(body.since, "since");
      const until = timeParam(body.until, "until");
      if (since !== undefined && until !== undefined && since >= until)
        throw new HttpError(400, "since must be before until");
      // A confirmed redrive publishes what its preview showed: up to the preview's end offsets, and only if the
      // count is still the preview's (dead letters that arrived since wait for the next preview).
      let upTo: Record<number, number> | undefined;
      let expectCount: number | undefined;
      if (!dryRun) {
        if (body.ends === undefined || body.count === undefined)
          throw new HttpError(400, "a confirmed redrive needs its preview's ends and count: preview first");
        upTo = endsParam(body.ends);
        if (!Number.isSafeInteger(body.count) || (body.count as number) < 0)
          throw new HttpError(400, "count must be the preview's number of dead letters");
        expectCount = body.count as number;
      } else if (body.ends !== undefined || body.count !== undefined) {
        throw new HttpError(400, "ends and count belong to a confirmed redrive");
      }
      if (redriving) throw new HttpError(409, "a redrive is already running");
      redriving = true;
      let result: Awaited<ReturnType<typeof redrive>>;
      try {
        result = await redrive(kafka, {
          from: topics.deadLetter,
          to: topics.source,
          group: redriveGroup,
          dryRun,
          code,
          since,
          until,
          upTo,
          expectCount,
        });
      } catch (error) {
        if (error instanceof RedriveConflictError || error instanceof RedriveBusyError)
          throw new HttpError(409, error.message);
        throw error;
      } finally {
        redriving = false;
      }
      log(
        `console: ${dryRun ? "redrive preview" : "redrive"}: ${result.redriven} of ${result.scanned} new dead letters ` +
          `from ${topics.deadLetter} to ${topics.source} ${JSON.stringify(result.byCode)}`,
      );
      return sendJson(res, 200, {
        dryRun,
        scanned: result.scanned,
        redriven: result.redriven,
        byCode: result.byCode,
        positions: result.positions,
        ends: result.ends,
        to: topics.source,
        group: redriveGroup,
        letters: result.letters.slice(0, 50).map((letter) => letterLine(letter, unmask)),
      });
    }
    if (!sameToken(req.headers[TOKEN_HEADER], token) && path !== "/api/events" && path.startsWith("/api/"))
      throw new HttpError(403, "missing or wrong console token");
    if (method !== "GET" && method !== "HEAD") {
      res.setHeader("allow", "GET");
      throw new HttpError(405, "read-only endpoint: GET only");
    }
    if (path === "/" || path === "/index.html") return send(res, 200, indexHtml, "text/html; charset=utf-8");
    if (path.startsWith("/assets/")) {
      const asset = ASSETS.get(path.slice("/assets/".length));
      if (!asset) throw new HttpError(404, "no such asset");
      return send(res, 200, readFileSync(asset.path), asset.type);
    }
    if (path === "/api/config") return sendJson(res, 200, config());
    if (path === "/api/pipeline") return sendJson(res, 200, { samples: history, problem: sampleError ?? null });
    if (path === "/api/events") {
      res.writeHead(200, {
        ...SECURITY_HEADERS,
        "content-type": "text/event-stream; charset=utf-8",
        connection: "keep-alive",
      });
      res.write(`retry: 2000\nevent: history\ndata: ${JSON.stringify(history)}\n\n`);
      streams.add(res);
      req.on("close", () => streams.delete(res));
      return;
    }
    if (path === "/api/topics") return sendJson(res, 200, { topics: await topicOverview(kafka) });
    if (path === "/api/records") {
      const topic = query.get("topic") ?? "";
      const limit = Math.min(MAX_RECORDS, Math.max(1, Number(query.get("limit") ?? 20) || 20));
      const admin = kafka.admin();
      await admin.connect();
      try {
        // Kafka's own topics (__consumer_offsets) are not shown, as on the topics page.
        if (topic.startsWith("__") || !(await admin.listTopics()).includes(topic))
          throw new HttpError(404, "no such topic");
      } finally {
        await admin.disconnect();
      }
      const records = (await readTopic(kafka, topic, 15_000, limit, { maxValueBytes: MAX_VALUE_BYTES }))
        .sort((a, b) => b.timestamp - a.timestamp || b.offset - a.offset)
        .slice(0, limit);
      return sendJson(res, 200, { topic, records: records.map((record) => recordLine(record, unmask)) });
    }
    if (path === "/api/dlq") {
      const code = query.get("code") || undefined;
      const limit = Math.min(MAX_RECORDS, Math.max(1, Number(query.get("limit") ?? 50) || 50));
      const letters = await deadLetters();
      const stats = dlqStats(letters);
      if (!unmask) {
        for (const entry of stats.topMessages) entry.message = maskPersonalData(entry.message);
      }
      const shown = letters
        .filter((letter) => code === undefined || letter.code === code)
        .sort((a, b) => b.timestamp - a.timestamp || b.offset - a.offset)
        .slice(0, limit);
      return sendJson(res, 200, {
        topic: topics.deadLetter,
        stats,
        letters: shown.map((letter) => letterLine(letter, unmask)),
      });
    }
    throw new HttpError(404, "not found");
  }

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://console.invalid");
    const path = url.pathname;
    if (options.logRequests) res.on("finish", () => log(`console: ${req.method} ${path} ${res.statusCode}`));
    // DNS rebinding: a page of another site that resolves its own name to 127.0.0.1 sends its own Host.
    if (!ownHost(req.headers.host)) {
      sendJson(res, 421, { error: "this console answers only to its own address" });
      return;
    }
    route(req, res, path, url.searchParams).catch((error: unknown) => {
      const status = error instanceof HttpError ? error.status : 502;
      const message = error instanceof Error ? error.message : String(error);
      if (!(error instanceof HttpError)) log(`console: ${req.method} ${path} failed: ${message}`);
      if (res.headersSent) res.end();
      else sendJson(res, status, { error: message });
    });
  });

  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", (error: NodeJS.ErrnoException) =>
        reject(error.code === "EADDRINUSE" ? new ConsolePortInUseError(host, options.port ?? 8080) : error),
      );
      server.listen(options.port ?? 8080, host, () => resolve());
    });
  } catch (error) {
    await pipeline.close();
    throw error;
  }
  timer = setInterval(() => void tick(), options.sampleIntervalMs ?? 1000);
  void tick();
  port = (server.address() as AddressInfo).port;
  const shown = host.includes(":") ? `[${host}]` : host;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${shown}:${port}/`,
    port,
    token,
    close() {
      closing ??= (async () => {
        clearInterval(timer);
        for (const res of streams) res.end();
        streams.clear();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        await pipeline.close();
      })();
      return closing;
    },
  };
}
