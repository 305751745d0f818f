// The console's page: three views over the console server's JSON and its event stream. No framework; every value
// from a record goes in with textContent, never as HTML.
/* global uPlot */

const TOKEN = document.querySelector('meta[name="console-token"]').content;
const $ = (id) => document.getElementById(id);

/** h("td", { class: "num" }, "12"): an element with attributes and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function fillTable(table, head, rows) {
  table.replaceChildren(
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        head.map((name) => h("th", {}, name)),
      ),
    ),
    h("tbody", {}, rows),
  );
}

async function getJson(path) {
  const res = await fetch(path, { headers: { accept: "application/json", "x-console-token": TOKEN } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || `${res.status} ${res.statusText}`);
  return body;
}

async function postJson(path, value) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json", "x-console-token": TOKEN },
    body: JSON.stringify(value),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error || `${res.status} ${res.statusText}`);
  return body;
}

const fmt = (n) => (n === null || n === undefined ? "n/a" : Number(n).toLocaleString("en-US"));

let config;

// ---------- navigation ----------
const PAGES = ["pipeline", "topics", "dlq"];
const loaded = new Set();
function show() {
  const page = PAGES.includes(location.hash.slice(1)) ? location.hash.slice(1) : "pipeline";
  for (const name of PAGES) $(`page-${name}`).hidden = name !== page;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === page);
  if (page === "pipeline") resizeCharts();
  if (page === "topics" && !loaded.has(page)) loadTopics();
  if (page === "dlq" && !loaded.has(page)) loadDlq();
  loaded.add(page);
}
window.addEventListener("hashchange", show);

// ---------- Pipeline ----------
const samples = [];
const MAX_SAMPLES = 600;
const charts = new Map();

/** Per-second rates between consecutive samples of a total (null where unknown). */
function rates(pick) {
  const out = [null];
  for (let i = 1; i < samples.length; i++) {
    const a = pick(samples[i - 1]);
    const b = pick(samples[i]);
    const dt = (samples[i].t - samples[i - 1].t) / 1000;
    out.push(
      a === null || b === null || a === undefined || b === undefined || dt <= 0 ? null : Math.max(0, (b - a) / dt),
    );
  }
  return out;
}

function chartDef(id, title, seriesNames, data, yLabel) {
  let entry = charts.get(id);
  const key = seriesNames.join("\u0000");
  if (entry && entry.key !== key) {
    entry.plot.destroy();
    entry.box.remove();
    charts.delete(id);
    entry = undefined;
  }
  if (!entry) {
    const box = h("div", { class: "chart", "data-chart": id }, h("h3", {}, title));
    // Keep the charts in their order of definition.
    const after = [...$("charts").children].find(
      (el) => CHART_ORDER.indexOf(el.dataset.chart) > CHART_ORDER.indexOf(id),
    );
    $("charts").insertBefore(box, after || null);
    const palette = ["#2f6fdd", "#12a150", "#c4320a", "#a05cd6", "#d69e00", "#0f9bb5", "#e052a0", "#6b7280"];
    const width = Math.max(300, box.clientWidth - 12);
    const plot = new uPlot(
      {
        width,
        height: 200,
        series: [
          {},
          ...seriesNames.map((label, i) => ({
            label,
            stroke: palette[i % palette.length],
            width: 1.5,
            spanGaps: true,
          })),
        ],
        axes: [{}, { label: yLabel, size: 60 }],
        scales: { x: { time: true } },
        legend: { live: true },
      },
      data,
      box,
    );
    entry = { plot, box, key };
    charts.set(id, entry);
  } else entry.plot.setData(data);
}

const CHART_ORDER = ["throughput", "codes", "lag", "age", "invocations"];

function resizeCharts() {
  for (const { plot, box } of charts.values()) {
    const width = Math.max(300, box.clientWidth - 12);
    if (width !== plot.width) plot.setSize({ width, height: 200 });
  }
}
window.addEventListener("resize", resizeCharts);

function tile(name, value, rate, testId) {
  return h(
    "div",
    { class: "tile", "data-testid": testId },
    h("div", { class: "name" }, name),
    h("div", { class: "value", "data-value": value === null || value === undefined ? "" : value }, fmt(value)),
    rate === undefined ? null : h("div", { class: "rate" }, rate),
  );
}

function renderPipeline() {
  if ($("page-pipeline").hidden && charts.size > 0) return;
  const last = samples[samples.length - 1];
  if (!last) return;
  const xs = samples.map((s) => s.t / 1000);
  const perSecond = (name) => rates((s) => s[name]);
  const lastRate = (series) => {
    const v = series[series.length - 1];
    return v === null || v === undefined ? "" : `${v.toFixed(1)}/s`;
  };
  const rIn = perSecond("RecordsIn");
  const rProcessed = perSecond("RecordsProcessed");
  const rDead = perSecond("RecordsDeadLettered");
  // As the dashboard's "DLQ share": RecordsDeadLettered / RecordsIn (lib/monitoring.ts).
  const share = last.RecordsIn > 0 ? `${((100 * last.RecordsDeadLettered) / last.RecordsIn).toFixed(1)}%` : "0%";
  $("tiles").replaceChildren(
    last.generated === null ? null : tile("generated", last.generated, undefined, "total-generated"),
    tile("RecordsIn", last.RecordsIn, lastRate(rIn), "total-RecordsIn"),
    tile("RecordsProcessed", last.RecordsProcessed, lastRate(rProcessed), "total-RecordsProcessed"),
    tile("RecordsDeadLettered", last.RecordsDeadLettered, `DLQ share ${share}`, "total-RecordsDeadLettered"),
    tile("OffsetLag", last.OffsetLag, undefined, "total-OffsetLag"),
    tile(
      "OnFailureDestinationDeliveredEventCount (parked)",
      last.OnFailureDestinationDeliveredEventCount,
      last.OnFailureDestinationDeliveredEventCount === null ? "in-process only" : undefined,
      "total-OnFailureDestinationDeliveredEventCount",
    ),
    tile(
      "EndToEndAge p50 / p99",
      last.endToEndAgeP50,
      last.endToEndAgeP99 === null ? "in-process only" : `p99 ${fmt(last.endToEndAgeP99)} ms`,
      "total-EndToEndAge",
    ),
    tile(
      "Invocations",
      last.Invocations,
      last.Invocations === null ? "in-process only" : undefined,
      "total-Invocations",
    ),
    tile("Errors", last.Errors, last.Errors === null ? "in-process only" : undefined, "total-Errors"),
  );
  chartDef(
    "throughput",
    "Throughput: RecordsIn, RecordsProcessed, RecordsDeadLettered (per second)",
    ["RecordsIn", "RecordsProcessed", "RecordsDeadLettered"],
    [xs, rIn, rProcessed, rDead],
    "records/s",
  );
  const codes = [...new Set(samples.flatMap((s) => Object.keys(s.byErrorCode)))].sort();
  const dlqShare = samples.map((s, i) => {
    // The dashboard's "DLQ share" (RecordsDeadLettered / RecordsIn, sums over a period), over the last 10 samples.
    const from = samples[Math.max(0, i - 10)];
    const dIn = s.RecordsIn - from.RecordsIn;
    return dIn > 0 ? (100 * (s.RecordsDeadLettered - from.RecordsDeadLettered)) / dIn : null;
  });
  chartDef(
    "codes",
    "DLQ share (%, last 10 s) and RecordsDeadLettered by ErrorCode (per second)",
    ["DLQ share %", ...codes],
    [xs, dlqShare, ...codes.map((code) => rates((s) => s.byErrorCode[code] ?? 0))],
    "",
  );
  const partitions = [...new Set(samples.flatMap((s) => Object.keys(s.offsetLagByPartition)))].sort(
    (a, b) => Number(a) - Number(b),
  );
  chartDef(
    "lag",
    `OffsetLag by partition (${config.groupId} on ${config.topics.source})`,
    ["OffsetLag", ...partitions.map((p) => `partition ${p}`)],
    [
      xs,
      samples.map((s) => s.OffsetLag),
      ...partitions.map((p) => samples.map((s) => s.offsetLagByPartition[p] ?? null)),
    ],
    "records",
  );
  if (last.endToEndAgeP50 !== null || charts.has("age")) {
    chartDef(
      "age",
      "EndToEndAge p50 / p99 (ms)",
      ["EndToEndAge p50", "EndToEndAge p99"],
      [xs, samples.map((s) => s.endToEndAgeP50), samples.map((s) => s.endToEndAgeP99)],
      "ms",
    );
    chartDef(
      "invocations",
      "Invocations and Errors (per second)",
      ["Invocations", "Errors"],
      [xs, rates((s) => s.Invocations), rates((s) => s.Errors)],
      "per second",
    );
  }
}

function addSamples(list) {
  samples.push(...list);
  if (samples.length > MAX_SAMPLES) samples.splice(0, samples.length - MAX_SAMPLES);
  renderPipeline();
}

function connectEvents() {
  const events = new EventSource("/api/events");
  events.addEventListener("history", (e) => {
    samples.length = 0;
    addSamples(JSON.parse(e.data));
    $("connection").textContent = `live · ${config.cluster}`;
  });
  events.addEventListener("sample", (e) => {
    $("pipeline-problem").hidden = true;
    addSamples([JSON.parse(e.data)]);
  });
  events.addEventListener("problem", (e) => {
    $("pipeline-problem").hidden = false;
    $("pipeline-problem").textContent = `signals unavailable: ${JSON.parse(e.data).message}`;
  });
  events.onerror = () => {
    $("connection").textContent = "reconnecting…";
  };
}

// ---------- Topics ----------
let selectedTopic;

async function loadTopics() {
  $("topics-updated").textContent = "loading…";
  try {
    const { topics } = await getJson("/api/topics");
    const rows = topics.map((t) => {
      const total = t.endOffsets.reduce((a, b) => a + b, 0);
      return h(
        "tr",
        {
          class: `clickable${t.topic === selectedTopic ? " selected" : ""}`,
          "data-topic": t.topic,
          onclick: () => loadRecords(t.topic),
        },
        h("td", {}, t.topic),
        h("td", { class: "num" }, t.partitions),
        h("td", { class: "num" }, t.endOffsets.join(", ")),
        h("td", { class: "num" }, fmt(total)),
        h(
          "td",
          {},
          t.groups.length === 0
            ? h("span", { class: "muted" }, "none")
            : t.groups.map((g) => h("div", {}, `${g.groupId}: lag ${fmt(g.lag)} (${g.lagByPartition.join(", ")})`)),
        ),
      );
    });
    fillTable(
      $("topics-table"),
      ["topic", "partitions", "end offsets", "total", "consumer groups: lag (per partition)"],
      rows,
    );
    $("topics-updated").textContent =
      `updated ${new Date().toLocaleTimeString()} · click a topic for its latest records`;
  } catch (error) {
    $("topics-updated").textContent = `failed: ${error.message}`;
  }
}

function recordRows(records, withCode) {
  return records.map((r) =>
    h(
      "tr",
      { "data-offset": `${r.partition}/${r.offset}` },
      withCode ? h("td", {}, h("span", { class: "code" }, r.code), h("div", {}, r.message)) : null,
      h("td", { class: "num" }, `${r.partition} / ${r.offset}`),
      h("td", {}, r.timestamp),
      h("td", { class: "key" }, r.key ?? "(none)"),
      h(
        "td",
        { class: "headers" },
        Object.entries(r.headers).map(([name, value]) => h("div", {}, `${name}: ${value}`)),
      ),
      h("td", { class: "value" }, r.value ?? "(null)"),
    ),
  );
}

async function loadRecords(topic) {
  selectedTopic = topic;
  for (const row of $("topics-table").querySelectorAll("tr[data-topic]"))
    row.classList.toggle("selected", row.dataset.topic === topic);
  $("records-panel").hidden = false;
  $("records-title").textContent = `${topic}: latest records`;
  fillTable($("records-table"), ["loading…"], []);
  try {
    const limit = $("records-limit").value;
    const { records } = await getJson(`/api/records?topic=${encodeURIComponent(topic)}&limit=${limit}`);
    fillTable(
      $("records-table"),
      ["partition / offset", "timestamp", "key", "headers", "value"],
      records.length ? recordRows(records, false) : [h("tr", {}, h("td", { colspan: 5 }, "no records"))],
    );
  } catch (error) {
    fillTable($("records-table"), [`failed: ${error.message}`], []);
  }
}

// ---------- Dead letters ----------
let dlqLoads = 0;

async function loadDlq() {
  $("dlq-summary").textContent = "loading…";
  const load = ++dlqLoads;
  try {
    const code = $("dlq-filter").value;
    const { topic, stats, letters } = await getJson(
      `/api/dlq?limit=50${code ? `&code=${encodeURIComponent(code)}` : ""}`,
    );
    // An answer to an earlier request (another filter) that arrives late is not shown.
    if (load !== dlqLoads) return;
    $("dlq-summary").textContent =
      `${topic}: ${fmt(stats.total)} dead letters${stats.total ? `, ${stats.oldest} .. ${stats.newest}` : ""}`;
    const codes = Object.entries(stats.byCode).sort((a, b) => b[1] - a[1]);
    fillTable(
      $("dlq-codes"),
      ["error.code", "count"],
      codes.map(([c, n]) =>
        h("tr", { "data-code": c }, h("td", {}, h("span", { class: "code" }, c)), h("td", { class: "num" }, fmt(n))),
      ),
    );
    fillTable(
      $("dlq-messages"),
      ["count", "error.code", "error.message"],
      stats.topMessages.map((m) =>
        h("tr", {}, h("td", { class: "num" }, fmt(m.count)), h("td", {}, m.code), h("td", {}, m.message)),
      ),
    );
    for (const select of [$("dlq-filter"), $("redrive-code")]) {
      const current = select.value;
      select.replaceChildren(
        h("option", { value: "" }, "(any)"),
        ...codes.map(([c]) => h("option", { value: c, selected: c === current }, c)),
      );
    }
    fillTable(
      $("dlq-letters"),
      ["error.code / error.message", "partition / offset", "timestamp", "key", "headers", "value"],
      letters.length ? recordRows(letters, true) : [h("tr", {}, h("td", { colspan: 6 }, "no dead letters"))],
    );
  } catch (error) {
    $("dlq-summary").textContent = `failed: ${error.message}`;
  }
}

function redriveSelection() {
  const iso = (id) => ($(id).value ? new Date($(id).value).toISOString() : undefined);
  return { code: $("redrive-code").value || undefined, since: iso("redrive-since"), until: iso("redrive-until") };
}

let preview;

async function previewRedrive() {
  $("redrive-run").disabled = true;
  $("redrive-result").textContent = "previewing…";
  try {
    const selection = redriveSelection();
    const result = await postJson("/api/dlq/redrive", { ...selection, dryRun: true });
    preview = { selection, result };
    $("redrive-result").textContent =
      `dry run: would redrive ${result.redriven} of ${result.scanned} new dead letters to ${result.to} ` +
      `${JSON.stringify(result.byCode)}`;
    fillTable(
      $("redrive-letters"),
      ["error.code / error.message", "partition / offset", "timestamp", "key", "headers", "value"],
      recordRows(result.letters, true),
    );
    $("redrive-run").disabled = result.redriven === 0;
    $("redrive-run").textContent = `Redrive ${result.redriven}…`;
  } catch (error) {
    $("redrive-result").textContent = `failed: ${error.message}`;
  }
}

function runRedrive() {
  if (!preview) return;
  const { selection, result } = preview;
  $("confirm-text").textContent =
    `Redrive ${result.redriven} dead letters ${JSON.stringify(result.byCode)} from ${config.topics.deadLetter} to ` +
    `${result.to}? The redrive group ${result.group} then moves past all ${result.scanned} new dead letters.`;
  $("confirm-dialog").showModal();
  $("confirm-ok").onclick = async () => {
    $("confirm-dialog").close();
    $("redrive-run").disabled = true;
    $("redrive-result").textContent = "redriving…";
    try {
      // Bound to the preview: its end offsets and count (the server refuses with 409 if the count changed).
      const done = await postJson("/api/dlq/redrive", {
        ...selection,
        dryRun: false,
        confirm: true,
        ends: result.ends,
        count: result.redriven,
      });
      $("redrive-result").textContent =
        `redrove ${done.redriven} of ${done.scanned} new dead letters to ${done.to} ${JSON.stringify(done.byCode)}`;
      $("redrive-letters").replaceChildren();
      preview = undefined;
      $("redrive-run").textContent = "Redrive…";
      loadDlq();
    } catch (error) {
      $("redrive-result").textContent = `failed: ${error.message}`;
    }
  };
}

// ---------- start ----------
async function main() {
  config = await getJson("/api/config");
  $("connection").textContent = config.cluster;
  $("pipeline-source").textContent =
    config.pipelineSource === "harness"
      ? `Live signals of the in-process event source mapping (group ${config.groupId}), named as on the CloudWatch dashboard.`
      : `Signals derived from the cluster's offsets (group ${config.groupId}; ${config.topics.processed}, ${config.topics.deadLetter}), named as on the CloudWatch dashboard. EndToEndAge, Invocations and Errors are known only under npm start.`;
  for (const note of document.querySelectorAll(".masking-note"))
    note.textContent = config.unmask
      ? "personal data shown unmasked (--unmask)"
      : "personal fields masked as dlq peek masks them (--unmask shows them)";
  $("redrive-note").textContent = config.allowRedrive
    ? `Same code path as npm run dlq -- redrive: re-publishes the selected dead letters to ${config.topics.source}; its group ${config.redriveGroup} remembers what was read, so dead letters the filter skips are passed over for good by this group.`
    : "Read-only: start the console with --allow-redrive to redrive.";
  $("redrive-preview").disabled = !config.allowRedrive;
  $("topics-refresh").onclick = loadTopics;
  $("records-refresh").onclick = () => selectedTopic && loadRecords(selectedTopic);
  $("records-limit").onchange = () => selectedTopic && loadRecords(selectedTopic);
  $("dlq-refresh").onclick = loadDlq;
  $("dlq-filter").onchange = loadDlq;
  $("redrive-preview").onclick = previewRedrive;
  $("redrive-run").onclick = runRedrive;
  $("confirm-cancel").onclick = () => $("confirm-dialog").close();
  setInterval(() => {
    if (!$("page-topics").hidden) loadTopics();
  }, 5000);
  show();
  connectEvents();
}

main().catch((error) => {
  document.body.prepend(h("p", { class: "problem" }, `console failed to start: ${error.message}`));
});
