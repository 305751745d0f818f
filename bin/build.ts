/**
 * npm run build [-- processor|generator ...]
 * Bundles the Lambda handler and the generator with esbuild into dist/<name>/index.mjs (see lib/bundling.ts).
 */
import { build } from "esbuild";
import { BUNDLES, type BundleName, bundleOptions } from "../lib/bundling.ts";
import { runMain, UsageError } from "./cli.ts";

runMain(async () => {
  const names = process.argv.slice(2);
  for (const name of names) {
    if (!(name in BUNDLES))
      throw new UsageError(`unknown bundle "${name}": choose from ${Object.keys(BUNDLES).join(", ")}`);
  }
  for (const name of (names.length > 0 ? names : Object.keys(BUNDLES)) as BundleName[]) {
    const options = bundleOptions(name);
    await build(options);
    console.log(`built ${options.outfile}`);
  }
});
