/**
 * npm run dlq -- <stats|peek|redrive> [flags]
 * The dead-letter workflow, against the embedded broker or MSK (same connection settings as everything else).
 */
import { dlqStats, peekLine, readDeadLetters, redrive } from "../functions/local/dlq.ts";
import { loadConnectionConfig, loadTopics } from "../functions/shared/config.ts";
import { connectKafka } from "../functions/shared/kafka.ts";
import { intFlag, parseFlags, runMain, timestampFlag, UsageError } from "./cli.ts";

const USAGE = `usage: npm run dlq -- <command> [flags]
commands:
  stats     counts by error.code and by top error.message, oldest/newest
  peek      show dead letters: headers and decoded value (personal data masked unless --unmask)
  redrive   re-publish selected dead letters (original key, bytes, headers) to the source topic;
            its consumer group remembers what it read, so a second run does not duplicate
flags:
  --brokers B     bootstrap servers (default: KAFKA_BROKERS)
  --topic T       the DLQ (default: DLQ_TOPIC or user-login-dlq)
  --code C        only this error.code (peek, redrive, stats)
  --since T       only dead letters written at/after T (ISO-8601 or epoch ms)
  --until T       only dead letters written before T (redrive stops at the first one written later)
  --limit N       peek: at most N (default 10)
  --unmask        peek: show personal data (ip, device_id, user_id)
  --to T          redrive: target topic (default: SOURCE_TOPIC or user-login)
  --group G       redrive: its consumer group (default: user-login-dlq-redrive)
  --dry-run       redrive: print what would be redriven, change nothing
  --json          print JSON`;

runMain(async () => {
  const [command, ...rest] = process.argv.slice(2);
  const flags = parseFlags(
    rest,
    {
      brokers: { type: "string" },
      topic: { type: "string" },
      code: { type: "string" },
      since: { type: "string" },
      until: { type: "string" },
      limit: { type: "string" },
      unmask: { type: "boolean" },
      to: { type: "string" },
      group: { type: "string" },
      "dry-run": { type: "boolean" },
      json: { type: "boolean" },
    },
    USAGE,
  );
  if (flags.help || command === "--help" || command === "-h") return void console.log(USAGE);
  if (command !== "stats" && command !== "peek" && command !== "redrive") {
    throw new UsageError(
      `unknown command ${command === undefined ? "(none)" : `"${command}"`}: use stats, peek or redrive\n\n${USAGE}`,
    );
  }
  if (!flags.brokers && !process.env.KAFKA_BROKERS && !process.env.MSK_CLUSTER_ARN) {
    throw new UsageError(`--brokers is required (or set KAFKA_BROKERS)\n\n${USAGE}`);
  }
  const topics = loadTopics(process.env);
  const dlq = flags.topic ?? topics.deadLetter;
  const selection = {
    code: flags.code,
    since: timestampFlag(flags.since, "since"),
    until: timestampFlag(flags.until, "until"),
  };
  if (selection.since !== undefined && selection.until !== undefined && selection.since >= selection.until) {
    throw new UsageError(`--since must be before --until\n\n${USAGE}`);
  }
  const config = loadConnectionConfig({ ...process.env, ...(flags.brokers ? { KAFKA_BROKERS: flags.brokers } : {}) });
  const { kafka } = await connectKafka(config, "user-login-dlq-tool");
  const print = (value: unknown, text: string) => console.log(flags.json ? JSON.stringify(value, null, 2) : text);

  if (command === "stats") {
    const stats = dlqStats(await readDeadLetters(kafka, dlq, selection));
    const lines = [
      `${dlq}: ${stats.total} dead letters${stats.total ? `, ${stats.oldest} .. ${stats.newest}` : ""}`,
      ...Object.entries(stats.byCode)
        .sort((a, b) => b[1] - a[1])
        .map(([code, n]) => `  ${code.padEnd(18)} ${n}`),
      stats.topMessages.length ? "top messages:" : "",
      ...stats.topMessages.map((m) => `  ${String(m.count).padStart(7)}  ${m.code}  ${m.message}`),
    ];
    return print(stats, lines.filter(Boolean).join("\n"));
  }
  if (command === "peek") {
    const limit = intFlag(flags.limit, "limit", 10, 1, 100_000);
    const letters = (await readDeadLetters(kafka, dlq, selection)).slice(0, limit);
    const lines = letters.map((letter) => peekLine(letter, flags.unmask === true));
    return print(lines, lines.map((line) => JSON.stringify(line)).join("\n") || `${dlq}: no dead letters match`);
  }
  const to = flags.to ?? topics.source;
  const result = await redrive(kafka, {
    from: dlq,
    to,
    group: flags.group ?? `${dlq}-redrive`,
    dryRun: flags["dry-run"] === true,
    ...selection,
  });
  const verb = flags["dry-run"] ? "would redrive" : "redrove";
  print(
    { ...result, letters: undefined },
    `${verb} ${result.redriven} of ${result.scanned} new dead letters from ${dlq} to ${to} ${JSON.stringify(result.byCode)}; ` +
      `group positions ${JSON.stringify(result.positions)}`,
  );
});
