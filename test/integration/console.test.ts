/**
 * The web console in a real browser (Debian's Chromium through playwright-core, never a downloaded one) against the
 * shared broker: the generator, the emulated event source mapping and the real handler run in-process on topics of
 * this test's own, and the console serves their signals on a free port. Screenshots of each page go to the
 * git-ignored test-artifacts/console/.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { harnessSource, offsetsSource } from "../../functions/console/pipeline-metrics.ts";
import { type ConsoleServer, startConsole, TOKEN_HEADER } from "../../functions/console/server.ts";
import { kafkaSink, producerSlot } from "../../functions/generator/main.ts";
import { GeneratorModel } from "../../functions/generator/model.ts";
import { runGenerator } from "../../functions/generator/run.ts";
import { readDeadLetters } from "../../functions/local/dlq.ts";
import { REPO_ROOT } from "../../functions/local/embedded-kafka.ts";
import { MskEventSourceHarness } from "../../functions/local/harness.ts";
import { createProducer } from "../../functions/shared/kafka.ts";
import { ensureTopics } from "../../functions/shared/topics.ts";
import {
  createTopicTrio,
  type PipelineTopics,
  processorFor,
  produce,
  readTopic,
  testKafka,
  waitFor,
} from "../support/kafka.ts";

const CHROMIUM = "/usr/bin/chromium";
const ARTIFACTS = join(REPO_ROOT, "test-artifacts", "console");
const TSX = join(REPO_ROOT, "node_modules", ".bin", "tsx");

const { kafka, brokers } = testKafka("console-test");
let topics: PipelineTopics;
let groupId: string;
let harness: MskEventSourceHarness;
let server: ConsoleServer;
let browser: Browser;
let context: BrowserContext;
let page: Page;
const stopGenerator = new AbortController();
let generating: Promise<unknown>;
let generated = 0;
const serverLog: string[] = [];
/** Requests the page made to anywhere but the console. */
const external: string[] = [];
const pageErrors: string[] = [];
const closers: (() => Promise<unknown>)[] = [];

// A dead letter with personal data the page must mask.
const USER_ID = randomUUID();
const DEVICE_ID = randomUUID();
const IP = "10.203.40.77";
// Valid records too large for the processed topic's limit at first: OUTPUT_TOO_LARGE until the "fix".
const BIG_MARKER = `bigfield-${randomUUID()}`;
const BIG_COUNT = 3;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/** A raw HTTP request (fetch cannot send another Host). */
function rawRequest(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string; setHost?: boolean },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: options.method ?? "GET", headers: options.headers, setHost: options.setHost ?? true },
      (res) => {
        let body = "";
        res.on("data", (chunk: Buffer) => {
          body += chunk.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

/** The session token, as the page gets it (for a console started by a CLI). */
async function tokenOf(address: string): Promise<string> {
  const html = await (await fetch(address)).text();
  return /<meta name="console-token" content="([^"]+)">/.exec(html)?.[1] ?? "";
}

const tileValue = async (p: Page, name: string) =>
  Number(await p.locator(`[data-testid="total-${name}"] .value`).getAttribute("data-value"));

async function openPage(url: string): Promise<Page> {
  const opened = await context.newPage();
  opened.on("pageerror", (error) => pageErrors.push(error.message));
  opened.on("console", (message) => {
    if (message.type() === "error") pageErrors.push(message.text());
  });
  await opened.goto(url);
  return opened;
}

beforeAll(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (.ci/run does; no browser is downloaded)`);
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  topics = await createTopicTrio(kafka);
  groupId = `console-${randomUUID()}`;
  // The processed topic's limit starts too small for the big records; the "fix" is the default limit.
  const tooSmall = processorFor(topics, { PROCESSED_MAX_MESSAGE_BYTES: "1024" });
  const fixed = processorFor(topics);
  closers.push(tooSmall.close, fixed.close);
  let current = tooSmall;
  harness = new MskEventSourceHarness({
    kafka,
    bootstrapServers: brokers.join(","),
    topic: topics.source,
    groupId,
    batchWindowMs: 100,
    invoke: (event) => current.invoke(event),
  });
  await harness.start();
  closers.push(() => harness.stop());

  const big = (i: number) =>
    JSON.stringify({
      user_id: randomUUID(),
      app_version: "2.3.0",
      device_type: "android",
      ip: "192.0.2.1",
      locale: "CA",
      device_id: randomUUID(),
      timestamp: Math.floor(Date.now() / 1000),
      note: `${BIG_MARKER}-${i}-${"x".repeat(1500)}`,
    });
  await produce(kafka, topics.source, [
    ...Array.from({ length: BIG_COUNT }, (_, i) => ({ key: `big-${i}`, value: big(i) })),
    {
      key: USER_ID,
      // No device_type: a SCHEMA_VIOLATION, as 5% of the real generator's events.
      value: JSON.stringify({
        user_id: USER_ID,
        app_version: "2.3.0",
        ip: IP,
        locale: "CA",
        device_id: DEVICE_ID,
        timestamp: 1694479551,
      }),
    },
  ]);
  await waitFor(
    "the big records to be dead-lettered as OUTPUT_TOO_LARGE",
    async () => (await readDeadLetters(kafka, topics.deadLetter, { code: "OUTPUT_TOO_LARGE" })).length === BIG_COUNT,
    60_000,
    500,
  );
  current = fixed;

  const slot = producerSlot(kafka);
  const sink = kafkaSink(slot, topics.source);
  generating = runGenerator({
    model: new GeneratorModel({ invalidRatio: 0.1, seed: 16 }),
    rate: 40,
    signal: stopGenerator.signal,
    sink: {
      async send(records) {
        await sink.send(records);
        generated += records.length;
      },
    },
  });
  closers.unshift(async () => {
    stopGenerator.abort();
    await generating;
    await slot.close();
  });

  server = await startConsole({
    kafka,
    topics,
    groupId,
    pipeline: harnessSource(harness.stats, () => generated),
    port: 0,
    allowRedrive: true,
    cluster: brokers.join(","),
    sampleIntervalMs: 500,
    log: (line) => serverLog.push(line),
    logRequests: true,
  });
  closers.unshift(() => server.close());

  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
  closers.unshift(() => browser.close());
  context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  // Everything the page asks for must come from the console itself.
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.host.startsWith("127.0.0.1:")) return route.continue();
    external.push(url.href);
    return route.abort();
  });
  page = await openPage(server.url);
}, 180_000);

afterAll(async () => {
  for (const close of closers) await close().catch((error: unknown) => console.error(error));
});

describe("the console in a browser", () => {
  it("Pipeline: loads from its own assets, and the counts and charts rise while the generator runs", async () => {
    await page.waitForSelector('[data-testid="total-RecordsIn"]');
    await waitFor("records in", async () => (await tileValue(page, "RecordsIn")) > BIG_COUNT, 30_000);
    const before = {
      in: await tileValue(page, "RecordsIn"),
      processed: await tileValue(page, "RecordsProcessed"),
      generated: await tileValue(page, "generated"),
    };
    await page.waitForTimeout(3000);
    expect(await tileValue(page, "RecordsIn")).toBeGreaterThan(before.in);
    expect(await tileValue(page, "RecordsProcessed")).toBeGreaterThan(before.processed);
    expect(await tileValue(page, "generated")).toBeGreaterThan(before.generated);
    expect(await tileValue(page, "Invocations")).toBeGreaterThan(0);
    // Records parked on the ESM's failure topic, named as the dashboard's metric: none here.
    expect(
      await page
        .locator('[data-testid="total-OnFailureDestinationDeliveredEventCount"] .value')
        .getAttribute("data-value"),
    ).toBe("0");
    // The DLQ share as the dashboard computes it: RecordsDeadLettered / RecordsIn (one render, read at once).
    const share = (await page.evaluate(`(() => {
      const value = (name) => Number(document.querySelector('[data-testid="total-' + name + '"] .value').getAttribute("data-value"));
      const text = document.querySelector('[data-testid="total-RecordsDeadLettered"] .rate').textContent;
      return { text, dead: value("RecordsDeadLettered"), in: value("RecordsIn") };
    })()`)) as { text: string; dead: number; in: number };
    expect(share.dead).toBeGreaterThan(0);
    expect(share.text).toBe(`DLQ share ${((100 * share.dead) / share.in).toFixed(1)}%`);
    // The dashboard's names, and one uPlot canvas per chart.
    const titles = await page.locator(".chart h3").allTextContents();
    expect(titles.join("\n")).toMatch(/RecordsIn, RecordsProcessed, RecordsDeadLettered/);
    expect(titles.join("\n")).toMatch(/RecordsDeadLettered by ErrorCode/);
    expect(titles.join("\n")).toMatch(/OffsetLag by partition/);
    expect(titles.join("\n")).toMatch(/EndToEndAge p50 \/ p99/);
    expect(titles.join("\n")).toMatch(/Invocations and Errors/);
    expect(await page.locator(".chart canvas").count()).toBe(5);
    // Dead letters by their ErrorCode, as the dashboard splits them.
    const series = await page.locator('[data-chart="codes"] .u-legend .u-series').allTextContents();
    expect(series.join(" ")).toMatch(/OUTPUT_TOO_LARGE/);
    expect(series.join(" ")).toMatch(/SCHEMA_VIOLATION/);
    await page.screenshot({ path: join(ARTIFACTS, "pipeline.png") });
    expect(external).toEqual([]);
    expect(pageErrors).toEqual([]);
  });

  it("Topics: partitions, end offsets, the group's lag, and the latest records decoded with personal fields masked", async () => {
    await page.goto(`${server.url}#topics`);
    const sourceRow = page.locator(`#topics-table tr[data-topic="${topics.source}"]`);
    await sourceRow.waitFor();
    const cells = await sourceRow.locator("td").allTextContents();
    expect(cells[1]).toBe("3");
    expect(cells[2]).toMatch(/^\d+, \d+, \d+$/);
    expect(cells[4]).toContain(`${groupId}: lag`);
    expect(await page.locator(`#topics-table tr[data-topic="${topics.deadLetter}"] td`).nth(1).textContent()).toBe("1");
    await sourceRow.click();
    await page.locator("#records-table tbody tr td.value").first().waitFor();
    const values = await page.locator("#records-table tbody td.value").allTextContents();
    expect(values.length).toBe(20);
    // Decoded JSON with the personal fields masked: no full address or id in any cell.
    expect(values.join("\n")).toMatch(/"user_id":"\*{8}[0-9a-f-]{4}"/);
    const text = await page.locator("#records-table").textContent();
    expect(text).not.toMatch(/\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b/);
    expect(text).not.toMatch(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i);
    await page.screenshot({ path: join(ARTIFACTS, "topics.png") });
    expect(external).toEqual([]);
  });

  it("Dead letters: counts by code, and a dead letter with its code, reason and masked fields", async () => {
    await page.goto(`${server.url}#dlq`);
    await page.locator('#dlq-codes tr[data-code="OUTPUT_TOO_LARGE"]').waitFor();
    expect(await page.locator('#dlq-codes tr[data-code="OUTPUT_TOO_LARGE"] td.num').textContent()).toBe(
      String(BIG_COUNT),
    );
    // The generator keeps adding SCHEMA_VIOLATIONs, so ours may be past the latest 50: it is looked up by key.
    await page.selectOption("#dlq-filter", "SCHEMA_VIOLATION");
    await page.locator("#dlq-letters tbody tr td.key").first().waitFor();
    const text = (await page.locator("#dlq-letters").textContent()) as string;
    expect(text).toContain("SCHEMA_VIOLATION");
    expect(text).not.toMatch(/\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b/);
    expect(text).not.toMatch(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i);
    const page_ = (await page.content()) as string;
    expect(page_).not.toContain(USER_ID);
    await page.selectOption("#dlq-filter", "");
    await page.locator("#dlq-letters tbody tr").first().waitFor();
    await page.screenshot({ path: join(ARTIFACTS, "dead-letters.png"), fullPage: false });
  });

  it("redrive: a dry-run preview changes nothing, then the confirmed redrive moves the selected dead letters back and they come out processed", async () => {
    await page.goto(`${server.url}#dlq`);
    await page.locator('#redrive-code option[value="OUTPUT_TOO_LARGE"]').waitFor({ state: "attached" });
    await page.selectOption("#redrive-code", "OUTPUT_TOO_LARGE");
    await page.click("#redrive-preview");
    await expect
      .poll(() => page.locator("#redrive-result").textContent())
      .toMatch(new RegExp(`^dry run: would redrive ${BIG_COUNT} of \\d+ new dead letters`));
    expect(await page.locator("#redrive-letters tbody tr").count()).toBe(BIG_COUNT);
    await page.screenshot({ path: join(ARTIFACTS, "redrive-preview.png") });
    // The preview wrote nothing.
    await page.waitForTimeout(1000);
    const redrivenNow = async () =>
      (await readTopic(kafka, topics.processed)).filter((r) => r.headers["redrive.from"] !== undefined);
    expect(await redrivenNow()).toEqual([]);

    await page.click("#redrive-run");
    await expect.poll(() => page.locator("#confirm-dialog").getAttribute("open")).toBe("");
    expect(await page.locator("#confirm-text").textContent()).toContain(`Redrive ${BIG_COUNT} dead letters`);
    await page.click("#confirm-ok");
    await expect
      .poll(() => page.locator("#redrive-result").textContent(), { timeout: 30_000 })
      .toMatch(new RegExp(`^redrove ${BIG_COUNT} of \\d+ new dead letters to ${topics.source}`));

    await waitFor("the redriven records to come out processed", async () => (await redrivenNow()).length >= BIG_COUNT);
    const processed = await redrivenNow();
    expect(processed.map((r) => /"note":"(bigfield-[^"]+?)-(\d)-/.exec(r.value?.toString() ?? "")?.[2]).sort()).toEqual(
      ["0", "1", "2"],
    );
    expect(processed.every((r) => r.value?.toString().includes(BIG_MARKER))).toBe(true);
    expect(processed.every((r) => r.headers["redrive.from"]?.startsWith(`${topics.deadLetter}/0/`))).toBe(true);
    // None of them went back to the DLQ: the fix held.
    expect(await readDeadLetters(kafka, topics.deadLetter, { code: "OUTPUT_TOO_LARGE" })).toHaveLength(BIG_COUNT);
    // Nothing more to redrive for this group.
    await page.click("#redrive-preview");
    await expect.poll(() => page.locator("#redrive-result").textContent()).toMatch(/^dry run: would redrive 0 of/);
  });

  it("refuses a state-changing request without the session's token, by GET, from another origin or host", async () => {
    const url = `${server.url}api/dlq/redrive`;
    const body = JSON.stringify({ dryRun: false, confirm: true });
    const json = { "content-type": "application/json" };
    // From the page itself, without the token (as a script of another origin could only send).
    const fromPage = await page.evaluate(
      async ([target, payload]) => {
        const res = await fetch(target as string, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: payload as string,
        });
        return { status: res.status, body: await res.text() };
      },
      [url, body],
    );
    expect(fromPage.status).toBe(403);
    // Chromium reports the refused request on the page's console: expected here, and only here.
    const refusedAt = pageErrors.findIndex((e) => /status of 403/.test(e));
    if (refusedAt >= 0) pageErrors.splice(refusedAt, 1);
    expect(fromPage.body).toContain("missing or wrong console token");
    expect((await rawRequest(url, { method: "POST", headers: json, body })).status).toBe(403);
    expect(
      (await rawRequest(url, { method: "POST", headers: { ...json, [TOKEN_HEADER]: "not-the-token" }, body })).status,
    ).toBe(403);
    expect((await rawRequest(url, { headers: { [TOKEN_HEADER]: server.token } })).status).toBe(405);
    expect(
      (
        await rawRequest(url, {
          method: "POST",
          headers: { ...json, [TOKEN_HEADER]: server.token, origin: "http://evil.example" },
          body,
        })
      ).status,
    ).toBe(403);
    expect(
      (await rawRequest(server.url, { headers: { host: `evil.example:${server.port}` } })).status,
      "DNS rebinding: a foreign Host is refused",
    ).toBe(421);
    expect(
      (
        await rawRequest(`${server.url}api/records?topic=__consumer_offsets`, {
          headers: { [TOKEN_HEADER]: server.token },
        })
      ).status,
    ).toBe(404);
    // With the token a dry run passes: the refusals above were about the token, origin and method.
    const ok = await rawRequest(url, {
      method: "POST",
      headers: { ...json, [TOKEN_HEADER]: server.token },
      body: JSON.stringify({ dryRun: true }),
    });
    expect(ok.status).toBe(200);
    expect(external).toEqual([]);
    expect(pageErrors).toEqual([]);
  });

  it("a console on the cluster's offsets (npm run console) is read-only by default, and its counts rise too", async () => {
    const readOnly = await startConsole({
      kafka,
      topics,
      groupId,
      pipeline: offsetsSource({ kafka, topics, groupId }),
      port: 0,
      sampleIntervalMs: 500,
      log: (line) => serverLog.push(line),
    });
    try {
      const p = await openPage(readOnly.url);
      await waitFor("records in from offsets", async () => (await tileValue(p, "RecordsIn")) > 0, 30_000);
      const before = await tileValue(p, "RecordsIn");
      await waitFor("records in to rise", async () => (await tileValue(p, "RecordsIn")) > before, 15_000);
      // Dead letters by code from the DLQ's headers.
      await expect
        .poll(async () => (await p.locator('[data-chart="codes"] .u-legend').textContent()) ?? "", { timeout: 15_000 })
        .toMatch(/OUTPUT_TOO_LARGE/);
      expect(await p.locator('[data-testid="total-Invocations"] .value').textContent()).toBe("n/a");
      expect(
        await p.locator('[data-testid="total-OnFailureDestinationDeliveredEventCount"] .value').textContent(),
      ).toBe("n/a");
      await p.goto(`${readOnly.url}#dlq`);
      expect(await p.locator("#redrive-preview").isDisabled()).toBe(true);
      expect(await p.locator("#redrive-note").textContent()).toContain("--allow-redrive");
      const refused = await rawRequest(`${readOnly.url}api/dlq/redrive`, {
        method: "POST",
        headers: { "content-type": "application/json", [TOKEN_HEADER]: readOnly.token },
        body: JSON.stringify({ dryRun: true }),
      });
      expect(refused.status).toBe(403);
      expect(refused.body).toContain("read-only");
      await p.close();
    } finally {
      await readOnly.close();
    }
    expect(external).toEqual([]);
  });

  it("on a cluster without the pipeline's topics yet, says the signals are unavailable, and recovers once they exist", async () => {
    const id = randomUUID().slice(0, 8);
    const missing = {
      source: `user-login-${id}`,
      processed: `processed-user-login-${id}`,
      deadLetter: `user-login-dlq-${id}`,
    };
    const early = await startConsole({
      kafka,
      topics: missing,
      groupId,
      pipeline: offsetsSource({ kafka, topics: missing, groupId }),
      port: 0,
      sampleIntervalMs: 300,
    });
    try {
      const pipeline = async () =>
        (await (await fetch(`${early.url}api/pipeline`, { headers: { [TOKEN_HEADER]: early.token } })).json()) as {
          samples: unknown[];
          problem: string | null;
        };
      await waitFor("the problem to be reported", async () => (await pipeline()).problem !== null, 15_000);
      expect((await pipeline()).samples).toEqual([]);
      await ensureTopics(kafka, [
        { topic: missing.source, numPartitions: 2 },
        { topic: missing.processed, numPartitions: 2 },
        { topic: missing.deadLetter },
      ]);
      await waitFor("samples once the topics exist", async () => (await pipeline()).samples.length > 0, 15_000);
      expect((await pipeline()).problem).toBeNull();
    } finally {
      await early.close();
    }
  });

  it("writes no record value, key or personal field to its log", () => {
    const text = serverLog.join("\n");
    expect(text).toMatch(/console: redrive: 3 of \d+ new dead letters/);
    expect(text).toMatch(/console: GET \/api\/dlq 200/);
    for (const secret of [BIG_MARKER, USER_ID, DEVICE_ID, IP, '"user_id"']) expect(text).not.toContain(secret);
  });
});

describe("the console's guards, masking and redrive binding (topics of its own, no generator)", () => {
  let extra: PipelineTopics;
  let masked: ConsoleServer;
  let unmasked: ConsoleServer;
  /** Throw-away reader groups the masked console created (one per read of a topic). */
  let readers = 0;
  const guardLog: string[] = [];
  const MSG_IP = "10.9.8.7";
  const MSG_UUID = randomUUID();
  const KEY_ID = randomUUID();
  const LETTER_IP = "172.16.5.99";
  const XSS_KEY = `<img src=x onerror="window.__xss=1">`;
  const XSS_VALUE = `<script>window.__xss=2</script><img src=x onerror="window.__xss=3">`;
  const XSS_HEADER = `<svg onload="window.__xss=4"></svg>`;
  const noSignals = {
    kind: "offsets" as const,
    sample: async () => {
      throw new Error("no signals in this test");
    },
    close: async () => {},
  };
  const api = (target: ConsoleServer, path: string, headers: Record<string, string> = {}) =>
    rawRequest(`${target.url}${path}`, { headers: { [TOKEN_HEADER]: target.token, ...headers } });

  async function deadLetters(letters: { key: string; value: string; code: string; message?: string; x?: string }[]) {
    const producer = createProducer(kafka);
    await producer.connect();
    await producer.send({
      topic: extra.deadLetter,
      acks: -1,
      messages: letters.map((l) => ({
        key: l.key,
        value: l.value,
        headers: {
          "error.code": l.code,
          "error.message": l.message ?? "failed",
          ...(l.x === undefined ? {} : { "x-note": l.x }),
        },
      })),
    });
    await producer.disconnect();
  }

  beforeAll(async () => {
    extra = await createTopicTrio(kafka, 1);
    await deadLetters([
      {
        key: KEY_ID,
        value: JSON.stringify({ user_id: KEY_ID, ip: LETTER_IP, device_id: DEVICE_ID, app_version: "2.3.0" }),
        code: "SCHEMA_VIOLATION",
        message: "must have required property 'device_type'",
      },
      { key: "m", value: "{}", code: "LOOKUP", message: `lookup failed for ${MSG_IP} and user ${MSG_UUID}` },
      { key: XSS_KEY, value: XSS_VALUE, code: "XSS", x: XSS_HEADER },
      { key: "long", value: "v".repeat(20_000), code: "LONG" },
    ]);
    const counted = new Proxy(kafka, {
      get(target, name) {
        if (name === "consumer")
          return (config: Parameters<typeof kafka.consumer>[0]) => {
            if (config.groupId.startsWith("reader-")) readers++;
            return target.consumer(config);
          };
        const value = Reflect.get(target, name);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    masked = await startConsole({
      kafka: counted,
      topics: extra,
      groupId: `none-${randomUUID()}`,
      pipeline: noSignals,
      port: 0,
      allowRedrive: true,
      log: (line) => guardLog.push(line),
      logRequests: true,
    });
    closers.unshift(() => masked.close());
    unmasked = await startConsole({
      kafka,
      topics: extra,
      groupId: `none-${randomUUID()}`,
      pipeline: noSignals,
      port: 0,
      unmask: true,
    });
    closers.unshift(() => unmasked.close());
  });

  it("masks error.message (letters and top messages) and the personal fields, unless --unmask", async () => {
    const res = await api(masked, "api/dlq?limit=200");
    expect(res.status).toBe(200);
    for (const secret of [MSG_IP, MSG_UUID, KEY_ID, LETTER_IP, DEVICE_ID]) expect(res.body).not.toContain(secret);
    const body = JSON.parse(res.body) as {
      stats: { topMessages: { code: string; message: string }[] };
      letters: { code: string; message: string; key: string }[];
    };
    expect(body.stats.topMessages.find((m) => m.code === "LOOKUP")?.message).toMatch(/^lookup failed for \*+\.8\.7/);
    expect(body.letters.find((l) => l.code === "LOOKUP")?.message).toMatch(/^lookup failed for /);
    expect(body.letters.find((l) => l.code === "SCHEMA_VIOLATION")?.key).toBe(`********${KEY_ID.slice(-4)}`);
    // --unmask (the server option) shows them.
    const plain = await api(unmasked, "api/dlq?limit=200");
    for (const secret of [MSG_IP, MSG_UUID, KEY_ID, LETTER_IP, DEVICE_ID]) expect(plain.body).toContain(secret);
    expect(JSON.parse((await api(unmasked, "api/config")).body).unmask).toBe(true);

    // In the page: the dead letter with its code, reason and masked fields.
    const p = await openPage(`${masked.url}#dlq`);
    await p.locator('#dlq-filter option[value="SCHEMA_VIOLATION"]').waitFor({ state: "attached" });
    await p.selectOption("#dlq-filter", "SCHEMA_VIOLATION");
    const row = p.locator("#dlq-letters tbody tr", { hasText: `********${KEY_ID.slice(-4)}` });
    await row.waitFor();
    const text = (await row.textContent()) as string;
    expect(text).toContain("must have required property 'device_type'");
    expect(text).toContain(`"device_id":"********${DEVICE_ID.slice(-4)}"`);
    expect(text).toContain(`"ip":"*******${LETTER_IP.slice(-4)}"`);
    expect(await p.locator(".masking-note").first().textContent()).toContain("masked");
    const html = await p.content();
    for (const secret of [MSG_IP, MSG_UUID, KEY_ID, LETTER_IP, DEVICE_ID]) expect(html).not.toContain(secret);
    await p.close();
  });

  it("shows markup in a key, value and header as text: no element is made of it and no script runs", async () => {
    const p = await openPage(`${unmasked.url}#dlq`);
    await p.locator('#dlq-filter option[value="XSS"]').waitFor({ state: "attached" });
    await p.selectOption("#dlq-filter", "XSS");
    const row = p.locator("#dlq-letters tbody tr", { has: p.locator("span.code", { hasText: /^XSS$/ }) });
    await row.locator("td.key").waitFor();
    expect(await row.locator("td.key").textContent()).toBe(XSS_KEY);
    expect(await row.locator("td.value").textContent()).toBe(XSS_VALUE);
    expect(await row.locator("td.headers").textContent()).toContain(`x-note: ${XSS_HEADER}`);
    expect(await p.locator("#dlq-letters img, #dlq-letters script, #dlq-letters svg").count()).toBe(0);
    await p.waitForTimeout(500);
    expect(await p.evaluate("typeof window.__xss")).toBe("undefined");
    await p.close();
  });

  it("cuts a value to 4,000 characters, saying how large it was", async () => {
    const { letters } = JSON.parse((await api(masked, "api/dlq?code=LONG")).body) as { letters: { value: string }[] };
    expect(letters).toHaveLength(1);
    expect(letters[0]?.value).toBe(`${"v".repeat(4000)}… (cut: 20000 bytes in all)`);
  });

  it("reads the DLQ once for concurrent requests", async () => {
    readers = 0;
    const all = await Promise.all([1, 2, 3].map(() => api(masked, "api/dlq")));
    expect(all.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(readers).toBe(1);
    await api(masked, "api/dlq");
    expect(readers).toBe(2);
  });

  it("refuses /api/ requests from another site, and JSON requests without the token", async () => {
    expect((await rawRequest(`${masked.url}api/dlq`, {})).status).toBe(403);
    expect((await rawRequest(`${masked.url}api/config`, {})).status).toBe(403);
    for (const site of ["cross-site", "same-site"]) {
      expect((await api(masked, "api/dlq", { "sec-fetch-site": site })).status).toBe(403);
      expect((await rawRequest(`${masked.url}api/events`, { headers: { "sec-fetch-site": site } })).status).toBe(403);
    }
    expect((await api(masked, "api/config", { "sec-fetch-site": "same-origin" })).status).toBe(200);
    expect((await api(masked, "api/config", { "sec-fetch-site": "none" })).status).toBe(200);
    // The event stream (EventSource sends no headers) opens without the token from the page's own origin.
    const events = new AbortController();
    const stream = await fetch(`${masked.url}api/events`, { signal: events.signal });
    expect(stream.status).toBe(200);
    events.abort();

    // A page of another origin in the browser: its requests arrive marked as another site and are refused.
    const evil = createServer((_req, res) => {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(
        `<script>fetch(${JSON.stringify(`${masked.url}api/dlq`)}, { mode: "no-cors" }).finally(() => { document.title = "done"; });</script>`,
      );
    });
    await new Promise<void>((resolve) => evil.listen(0, "127.0.0.1", resolve));
    try {
      const p = await context.newPage();
      await p.goto(`http://127.0.0.1:${(evil.address() as AddressInfo).port}/`);
      await expect.poll(() => p.title()).toBe("done");
      await p.close();
    } finally {
      evil.close();
    }
    expect(guardLog).toContain("console: GET /api/dlq 403");
  });

  it("answers only to its own names: loopback ones and the bound address", async () => {
    const port = masked.port;
    const status = async (host: string) => (await rawRequest(masked.url, { headers: { host } })).status;
    expect(await status(`localhost:${port}`)).toBe(200);
    expect(await status(`[::1]:${port}`)).toBe(200);
    expect(await status(`127.0.0.2:${port}`)).toBe(200);
    expect(await status(`127.0.0.1:${port}.evil`)).toBe(421);
    expect(await status(`127.0.0.1:${port + 1}`)).toBe(421);
    // Without a Host at all: Node's HTTP server refuses it (400) before the console's own check (421) would.
    expect((await rawRequest(masked.url, { setHost: false })).status).toBe(400);
    expect((await rawRequest(`${masked.url}assets/__proto__`, {})).status).toBe(404);
    expect((await rawRequest(`${masked.url}assets/constructor`, {})).status).toBe(404);

    // Bound to every address: this machine's addresses too, and still no other name (DNS rebinding).
    const wide = await startConsole({
      kafka,
      topics: extra,
      groupId: "none",
      pipeline: noSignals,
      host: "0.0.0.0",
      port: 0,
    });
    try {
      const at = (host: string) => rawRequest(`http://127.0.0.1:${wide.port}/`, { headers: { host } });
      expect((await at(`127.0.0.1:${wide.port}`)).status).toBe(200);
      expect((await at(`evil.example:${wide.port}`)).status).toBe(421);
      const own = Object.values(networkInterfaces())
        .flat()
        .find((a) => a !== undefined && a.family === "IPv4" && !a.internal);
      if (own) expect((await at(`${own.address}:${wide.port}`)).status).toBe(200);
      const redrive = (origin: string) =>
        rawRequest(`http://127.0.0.1:${wide.port}/api/dlq/redrive`, {
          method: "POST",
          headers: {
            host: `127.0.0.1:${wide.port}`,
            origin,
            "content-type": "application/json",
            [TOKEN_HEADER]: wide.token,
          },
          body: "{}",
        });
      expect((await redrive(`http://evil.example:${wide.port}`)).status).toBe(403);
      // Past the origin check: refused as read-only.
      expect((await redrive(`http://localhost:${wide.port}`)).body).toContain("read-only");
    } finally {
      await wide.close();
    }
  });

  it("refuses a malformed redrive request: fields, times, type, origin, size", async () => {
    const post = (body: string, headers: Record<string, string> = {}) =>
      rawRequest(`${masked.url}api/dlq/redrive`, {
        method: "POST",
        headers: { "content-type": "application/json", [TOKEN_HEADER]: masked.token, ...headers },
        body,
      });
    const t = "2024-01-01T00:00:00Z";
    const cases: [string, Record<string, string>, number, string][] = [
      [JSON.stringify({ since: t, until: t }), {}, 400, "since must be before until"],
      [JSON.stringify({ code: 5 }), {}, 400, "code must be a string"],
      [JSON.stringify({ code: "X", extra: 1 }), {}, 400, "unknown fields: extra"],
      [JSON.stringify({ dryRun: false, confirm: true }), {}, 400, "preview's ends and count"],
      ["{}", { "content-type": "application/jsonx" }, 415, "application/json"],
      ["{}", { "content-type": "text/plain, application/json" }, 415, "application/json"],
      ["{}", { origin: `https://127.0.0.1:${masked.port}` }, 403, "another origin"],
      ["{}", { origin: "null" }, 403, "another origin"],
      [JSON.stringify({ code: "x".repeat(20_000) }), {}, 413, "over 16384 bytes"],
    ];
    for (const [body, headers, status, message] of cases) {
      const res = await post(body, headers);
      expect(res.status, `${body.slice(0, 60)} ${JSON.stringify(headers)}`).toBe(status);
      expect(res.body).toContain(message);
    }
    const ok = await post(JSON.stringify({ code: "NONE" }), {
      "content-type": "application/json; charset=utf-8",
      origin: `http://127.0.0.1:${masked.port}`,
    });
    expect(ok.status).toBe(200);
  });

  const redriven = async (code: string) =>
    (await readTopic(kafka, extra.source)).filter((r) => r.value?.toString().startsWith(`{"dup":"${code}`));

  it("runs one confirmed redrive at a time: two at once publish once, the other is refused with 409", async () => {
    await deadLetters([1, 2, 3].map((i) => ({ key: `dup-${i}`, value: `{"dup":"DUP-${i}"}`, code: "DUP" })));
    const post = (body: object) =>
      rawRequest(`${masked.url}api/dlq/redrive`, {
        method: "POST",
        headers: { "content-type": "application/json", [TOKEN_HEADER]: masked.token },
        body: JSON.stringify(body),
      });
    const preview = JSON.parse((await post({ code: "DUP" })).body) as { redriven: number; ends: object };
    expect(preview.redriven).toBe(3);
    const confirm = { code: "DUP", dryRun: false, confirm: true, ends: preview.ends, count: preview.redriven };
    const both = await Promise.all([post(confirm), post(confirm)]);
    expect(both.map((r) => r.status).sort()).toEqual([200, 409]);
    expect(both.find((r) => r.status === 409)?.body).toContain("a redrive is already running");
    expect(await redriven("DUP")).toHaveLength(3);
    // The same confirmation again: its preview no longer holds.
    const again = await post(confirm);
    expect(again.status).toBe(409);
    expect(again.body).toContain("the preview showed 3 dead letters to redrive, there are now 0");
    expect(await redriven("DUP")).toHaveLength(3);
  });

  it("in the page, the confirmed redrive moves what the preview showed, not the dead letters that arrived since", async () => {
    await deadLetters([1, 2].map((i) => ({ key: `bound-${i}`, value: `{"dup":"BOUND-${i}"}`, code: "BOUND" })));
    const p = await openPage(`${masked.url}#dlq`);
    await p.locator('#redrive-code option[value="BOUND"]').waitFor({ state: "attached" });
    await p.selectOption("#redrive-code", "BOUND");
    await p.click("#redrive-preview");
    await expect.poll(() => p.locator("#redrive-result").textContent()).toMatch(/^dry run: would redrive 2 of/);
    await deadLetters([3, 4, 5].map((i) => ({ key: `bound-${i}`, value: `{"dup":"BOUND-${i}"}`, code: "BOUND" })));
    await p.click("#redrive-run");
    await p.click("#confirm-ok");
    await expect
      .poll(() => p.locator("#redrive-result").textContent(), { timeout: 30_000 })
      .toMatch(/^redrove 2 of 2 new dead letters/);
    expect((await redriven("BOUND")).map((r) => r.key?.toString())).toEqual(["bound-1", "bound-2"]);
    await p.click("#redrive-preview");
    await expect.poll(() => p.locator("#redrive-result").textContent()).toMatch(/^dry run: would redrive 3 of 3/);
    await p.close();
    expect(guardLog.join("\n")).not.toContain("BOUND-");
  });
});

describe("the console's command lines", () => {
  const running = new Set<ChildProcess>();
  afterAll(() => {
    for (const child of running) child.kill("SIGTERM");
  });

  function run(script: string, args: string[], env: Record<string, string>) {
    const child = spawn(TSX, [join(REPO_ROOT, "bin", script), ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    running.add(child);
    let output = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) =>
      child.once("exit", (code) => {
        running.delete(child);
        resolve(code);
      }),
    );
    return { child, exited, output: () => output };
  }

  it("npm start serves the console on --console-port, prints its address, and stops it on Ctrl-C", async () => {
    const id = randomUUID().slice(0, 8);
    const port = await freePort();
    const start = run("start.ts", ["--rate", "50", "--batch-window-ms", "100", "--console-port", String(port)], {
      KAFKA_BROKERS: brokers.join(","),
      SOURCE_TOPIC: `user-login-${id}`,
      PROCESSED_TOPIC: `processed-user-login-${id}`,
      DLQ_TOPIC: `user-login-dlq-${id}`,
    });
    const address = `http://127.0.0.1:${port}/`;
    await waitFor("the console address", () => start.output().includes(`console: ${address}`), 60_000);
    const token = await tokenOf(address);
    await waitFor("records in", async () => {
      const { samples } = (await (
        await fetch(`${address}api/pipeline`, { headers: { [TOKEN_HEADER]: token } })
      ).json()) as {
        samples: { RecordsIn: number }[];
      };
      return (samples.at(-1)?.RecordsIn ?? 0) > 0;
    });
    start.child.kill("SIGINT");
    expect(await start.exited, start.output()).toBe(0);
    await expect(fetch(address)).rejects.toThrow();
  });

  it("a taken port fails at once, naming --console-port, for npm start and npm run console", async () => {
    const taken: Server = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as AddressInfo).port;
    try {
      for (const script of ["start.ts", "console.ts"]) {
        const cli = run(script, ["--console-port", String(port)], { KAFKA_BROKERS: brokers.join(",") });
        expect(await cli.exited, cli.output()).toBe(2);
        expect(cli.output()).toContain(`port ${port} on 127.0.0.1 is in use: choose another with --console-port N`);
      }
    } finally {
      taken.close();
    }
  });

  it("npm run console serves a read-only console for --brokers, and warns when bound beyond loopback", async () => {
    const port = await freePort();
    const cli = run("console.ts", ["--brokers", brokers.join(","), "--console-port", String(port)], {});
    await waitFor("the console address", () => cli.output().includes(`http://127.0.0.1:${port}/`), 30_000);
    expect(cli.output()).toContain("read-only");
    const res = await fetch(`http://127.0.0.1:${port}/`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain("user-login-pipeline console");
    cli.child.kill("SIGINT");
    expect(await cli.exited).toBe(0);

    const exposedPort = await freePort();
    const exposed = run(
      "console.ts",
      ["--brokers", brokers.join(","), "--console-port", String(exposedPort), "--console-host", "0.0.0.0"],
      {},
    );
    await waitFor("the warning", () => exposed.output().includes("warning: --console-host 0.0.0.0"), 30_000);
    exposed.child.kill("SIGINT");
    expect(await exposed.exited).toBe(0);
    expect(existsSync(ARTIFACTS)).toBe(true);
  });
});
