/**
 * The web console: a local stand-in for Kafdrop or Kafka UI, with the pipeline's own views. Pipeline (live charts of
 * the CloudWatch dashboard's signals, over Server-Sent Events), Topics (partitions, end offsets, groups and lag, the
 * latest records decoded and masked) and Dead letters (counts, the records, redrive with a dry-run preview).
 *
 * Safe by default: it binds 127.0.0.1, answers only requests whose Host names the address it serves (so a web page
 * cannot reach it through DNS rebinding), sends no CORS headers, and a state-changing request must be a POST with
 * this session's token (in the page, readable only by a page of the console's own origin) and, when the browser sends
 * one, the console's Origin. Redrive is off unless enabled. Logs name the method, path and status only, never a
 * record. Every asset is served from this folder or node_modules: the page loads nothing from elsewhere.
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Kafka } from "kafkajs";
import { type DeadLetter, dlqStats, type PeekLine, peekLine, readDeadLetters, redrive } from "../local/dlq.ts";
import { readTopic, type TopicRecord } from "../local/read-topic.ts";
import { topicOverview } from "../local/topic-overview.ts";
import type { PipelineSample, PipelineSource } from "./pipeline-metrics.ts";

const WEB_DIR = join(dirname(fileURLToPath(import.meta.url)), "web");
const UPLOT_DIR = dirname(createRequire(import.meta.url).resolve("uplot"));

/** The only files served: name -> path and type. */
const ASSETS: Record<string, { path: string; type: string }> = {
  "app.js": { path: join(WEB_DIR, "app.js"), type: "text/javascript; charset=utf-8" },
  "app.css": { path: join(WEB_DIR, "app.css"), type: "text/css; charset=utf-8" },
  "uPlot.iife.min.js": { path: join(UPLOT_DIR, "uPlot.iife.min.js"), type: "text/javascript; charset=utf-8" },
  "uPlot.min.css": { path: join(UPLOT_DIR, "uPlot.min.css"), type: "text/css; charset=utf-8" },
};

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

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1"]);
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

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new HttpError(413, `request body over ${MAX_BODY} bytes`));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

/** An ISO-8601 time or epoch ms from the page, as epoch ms; "" or absent: undefined. */
function timeParam(value: unknown, name: string): number | undefined {
  if (value === undefined || value === null || value === "") return undefined;
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

/** A record for the page: masked as dlq peek masks it, its value cut to MAX_VALUE_CHARS. */
function recordLine(record: TopicRecord, unmask: boolean): PeekLine {
  const line = peekLine(record, unmask);
  if (line.value !== null && line.value.length > MAX_VALUE_CHARS) {
    const more = line.value.length - MAX_VALUE_CHARS;
    line.value = `${line.value.slice(0, MAX_VALUE_CHARS)}… (${more} more characters)`;
  }
  return line;
}

/** A dead letter for the page, with its code and reason. */
const letterLine = (letter: DeadLetter, unmask: boolean) => ({
  ...recordLine(letter, unmask),
  code: letter.code,
  message: letter.message,
});

export const isLoopback = (host: string) => LOOPBACK.has(host);

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
  const allowedHosts = () => new Set([...LOOPBACK, host].map((h) => `${h.includes(":") ? `[${h}]` : h}:${port}`));

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
    if (path === "/api/dlq/redrive") {
      if (method !== "POST") {
        res.setHeader("allow", "POST");
        throw new HttpError(405, "redrive changes the cluster: POST only");
      }
      if (!sameToken(req.headers[TOKEN_HEADER], token)) throw new HttpError(403, "missing or wrong console token");
      const origin = req.headers.origin;
      if (origin !== undefined && !allowedHosts().has(origin.replace(/^https?:\/\//, "")))
        throw new HttpError(403, "request from another origin");
      if (!/^application\/json\b/.test(req.headers["content-type"] ?? ""))
        throw new HttpError(415, "send application/json");
      if (!allowRedrive) throw new HttpError(403, "this console is read-only: start it with --allow-redrive");
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(await readBody(req)) as Record<string, unknown>;
      } catch (error) {
        if (error instanceof HttpError) throw error;
        throw new HttpError(400, "the body is not JSON");
      }
      if (body === null || typeof body !== "object") throw new HttpError(400, "the body must be a JSON object");
      const dryRun = body.dryRun !== false;
      if (!dryRun && body.confirm !== true) throw new HttpError(400, "a redrive needs confirm: true");
      const code = typeof body.code === "string" && body.code !== "" ? body.code : undefined;
      const since = timeParam(body.since, "since");
      const until = timeParam(body.until, "until");
      const result = await redrive(kafka, {
        from: topics.deadLetter,
        to: topics.source,
        group: redriveGroup,
        dryRun,
        code,
        since,
        until,
      });
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
        to: topics.source,
        group: redriveGroup,
        letters: result.letters.slice(0, 50).map((letter) => letterLine(letter, unmask)),
      });
    }
    if (method !== "GET" && method !== "HEAD") {
      res.setHeader("allow", "GET");
      throw new HttpError(405, "read-only endpoint: GET only");
    }
    if (path === "/" || path === "/index.html") return send(res, 200, indexHtml, "text/html; charset=utf-8");
    if (path.startsWith("/assets/")) {
      const asset = ASSETS[path.slice("/assets/".length)];
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
      const records = (await readTopic(kafka, topic, 15_000, limit))
        .sort((a, b) => b.timestamp - a.timestamp || b.offset - a.offset)
        .slice(0, limit);
      return sendJson(res, 200, { topic, records: records.map((record) => recordLine(record, unmask)) });
    }
    if (path === "/api/dlq") {
      const code = query.get("code") || undefined;
      const limit = Math.min(MAX_RECORDS, Math.max(1, Number(query.get("limit") ?? 50) || 50));
      const letters = await readDeadLetters(kafka, topics.deadLetter);
      const shown = letters
        .filter((letter) => code === undefined || letter.code === code)
        .sort((a, b) => b.timestamp - a.timestamp || b.offset - a.offset)
        .slice(0, limit);
      return sendJson(res, 200, {
        topic: topics.deadLetter,
        stats: dlqStats(letters),
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
    if (LOOPBACK.has(host) && !allowedHosts().has(req.headers.host ?? "")) {
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
