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
  options: { method?: string; headers?: Record<string, string>; body?: string },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: options.method ?? "GET", headers: options.headers }, (res) => {
      let body = "";
      res.on("data", (chunk: Buffer) => {
        body += chunk.toString();
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.end(options.body);
  });
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
    await page.selectOption("#dlq-filter", "SCHEMA_VIOLATION");
    const ours = page.locator("#dlq-letters tbody tr", { hasText: `********${USER_ID.slice(-4)}` }).filter({
      hasText: "must have required property 'device_type'",
    });
    await ours.first().waitFor({ timeout: 30_000 });
    const row = (await ours.first().textContent()) as string;
    expect(row).toContain("SCHEMA_VIOLATION");
    expect(row).toContain(`"device_id":"********${DEVICE_ID.slice(-4)}"`);
    expect(row).toContain(`"ip":"********${IP.slice(-4)}"`);
    const page_ = (await page.content()) as string;
    expect(page_).not.toContain(USER_ID);
    expect(page_).not.toContain(DEVICE_ID);
    expect(page_).not.toContain(IP);
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
    expect((await rawRequest(`${server.url}api/records?topic=__consumer_offsets`, {})).status).toBe(404);
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
        (await (await fetch(`${early.url}api/pipeline`)).json()) as { samples: unknown[]; problem: string | null };
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
    await waitFor("records in", async () => {
      const { samples } = (await (await fetch(`${address}api/pipeline`)).json()) as {
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
