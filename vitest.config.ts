import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // One real Kafka broker for the whole run (or KAFKA_BROKERS), started before any test file.
    globalSetup: ["test/support/global-setup.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: "forks",
    // Tests assert on behaviour, not on log lines; LOG_LEVEL=INFO npm test shows them.
    env: { LOG_LEVEL: process.env.LOG_LEVEL ?? "ERROR" },
  },
});
