// Runs in a fresh Node process for the benchmark: the processing core (or its floor) on its first event, cold.
//   node bench/cold-core.mjs CORE_MODULE EVENT_FILE core|floor
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";

const [coreModule, eventFile, mode] = process.argv.slice(2);
const event = JSON.parse(readFileSync(eventFile, "utf8"));
const records = Object.values(event.records).reduce((n, list) => n + list.length, 0);
let ms;
if (mode === "core") {
  const { processEvent } = await import(pathToFileURL(coreModule).href);
  const options = {
    topics: { processed: "processed-user-login", deadLetter: "user-login-dlq" },
    processedAt: new Date().toISOString(),
  };
  const started = performance.now();
  processEvent(event, options);
  ms = performance.now() - started;
} else {
  // The floor: base64 + UTF-8 decode + JSON.parse + JSON.stringify, nothing else (as bin/bench.ts's floorPass).
  const decoder = new TextDecoder("utf-8", { fatal: false });
  let sink = 0;
  const started = performance.now();
  for (const list of Object.values(event.records)) {
    for (const record of list) {
      if (!record.value) continue;
      const text = decoder.decode(Buffer.from(record.value, "base64"));
      try {
        sink += JSON.stringify(JSON.parse(text)).length;
      } catch {
        sink += 1;
      }
    }
  }
  ms = performance.now() - started;
  if (sink < 0) console.log(sink);
}
process.stdout.write(`${JSON.stringify({ records, ms })}\n`);
