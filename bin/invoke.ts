/**
 * npm run invoke -- --event FILE [--dry-run] [--brokers B]
 * Invokes the processor handler once with a saved MSK event. With --dry-run it produces nothing and prints one JSON
 * object per record that would be produced, in the event's order. Logs go to stderr.
 */
import { readFileSync } from "node:fs";
import { parseMskEvent } from "../functions/core/msk.ts";
import type { OutputRecord } from "../functions/core/process.ts";
import { lambdaContext } from "../functions/local/lambda-runtime.ts";
import { containerSender, createHandler } from "../functions/processor/processor.ts";
import type { OutputSender } from "../functions/processor/sender.ts";
import { loadProcessorConfig, parseBrokers } from "../functions/shared/config.ts";
import { parseFlags, runMain, UsageError } from "./cli.ts";

const USAGE = `usage: npm run invoke -- --event FILE [--dry-run] [--brokers B]
  --event FILE   a saved MSK event (JSON), e.g. test/events/mixed-batch.json
  --dry-run      produce nothing; print each record that would be produced as one JSON line on stdout
  --brokers B    where to produce (default: KAFKA_BROKERS, else the event's bootstrapServers)`;

const text = (value: Buffer | string | null): string | null => (value === null ? null : value.toString());

/** One dry-run line: topic, key and value as UTF-8 text, headers as {name: text}; dead letters add valueBase64. */
export function dryRunLine(output: OutputRecord): string {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(output.headers)) {
    headers[name] = String(Array.isArray(value) ? value[value.length - 1] : value);
  }
  const line: Record<string, unknown> = {
    topic: output.topic,
    key: text(output.key),
    value: text(output.value),
    headers,
  };
  if (output.kind === "dead-letter") line.valueBase64 = output.value === null ? null : output.value.toString("base64");
  return JSON.stringify(line);
}

const printingSender: OutputSender = {
  async send(outputs) {
    process.stdout.write(outputs.map((o) => `${dryRunLine(o)}\n`).join(""));
    return { written: outputs.length };
  },
};

runMain(async () => {
  const flags = parseFlags(
    process.argv.slice(2),
    { event: { type: "string" }, "dry-run": { type: "boolean" }, brokers: { type: "string" } },
    USAGE,
  );
  if (flags.help) return void console.log(USAGE);
  if (!flags.event) throw new UsageError(`--event is required\n\n${USAGE}`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(flags.event, "utf8"));
  } catch (error) {
    throw new UsageError(`--event ${flags.event}: cannot read it as JSON: ${(error as Error).message}`);
  }
  try {
    parseMskEvent(raw);
  } catch (error) {
    throw new UsageError(`--event ${flags.event}: ${(error as Error).message}`);
  }
  const env = { ...process.env };
  if (flags.brokers) env.KAFKA_BROKERS = parseBrokers(flags.brokers, "--brokers").join(",");
  const config = loadProcessorConfig(env);
  const container = flags["dry-run"] ? undefined : containerSender(config);
  const handler = createHandler({
    config,
    getSender: container ? container.getSender : async () => printingSender,
  });
  try {
    const response = await handler(raw, lambdaContext());
    process.stderr.write(`${JSON.stringify(response)}\n`);
  } finally {
    await container?.close();
  }
});
