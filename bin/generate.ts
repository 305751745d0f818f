/**
 * npm run generate -- [flags]
 * The user-login data generator (see functions/generator/). `npm run generate -- --help` lists the flags.
 */
import { main } from "../functions/generator/main.ts";
import { ConfigError } from "../functions/shared/config.ts";
import { runMain, UsageError } from "./cli.ts";

runMain(async () => {
  try {
    await main(process.argv.slice(2), process.env);
  } catch (error) {
    throw error instanceof ConfigError ? new UsageError(error.message) : error;
  }
});
