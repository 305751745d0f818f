/**
 * One build path for the code that runs in AWS: `npm run build`, the generator's Docker image and the CDK stack's
 * Lambda bundling all use these esbuild options, and the local harness can run the resulting bundle.
 */
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { BuildOptions } from "esbuild";

export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** kafkajs and ajv are CommonJS: an ESM bundle needs a require() for their Node built-ins. */
export const ESM_REQUIRE_BANNER =
  "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);";

/** Bundle name -> entry point, relative to the project root. */
export const BUNDLES = {
  processor: "functions/processor/handler.ts",
  generator: "bin/generate.ts",
  "topic-setup": "functions/topic-setup/handler.ts",
} as const;
export type BundleName = keyof typeof BUNDLES;

/**
 * Left out of the Lambda bundle: the two AWS SDK clients the handler loads only when a configuration needs them
 * (MSK_CLUSTER_ARN discovery, a SCRAM secret); the nodejs22.x runtime ships every AWS SDK v3 client. The generator's
 * container image has no SDK of its own, so its bundle keeps everything.
 */
export const LAMBDA_EXTERNALS = ["@aws-sdk/client-kafka", "@aws-sdk/client-secrets-manager"];

/**
 * Left out of every bundle: zstd's fallback packages (functions/shared/codecs.ts), which it imports only where
 * node:zlib has no zstd (Node.js before 22.15). The bundles run on Node.js 22 (nodejs22.x, the generator's node:22
 * image), whose node:zlib has it; the WebAssembly package reads its .wasm file from beside its own code, which a
 * single-file bundle does not have, and both would add some 300 KB.
 */
export const ZSTD_FALLBACK_PACKAGES = ["@bokuweb/zstd-wasm", "fzstd"];

/** Single-file, minified ESM for Node.js 20 and 22, with a source map. */
export function bundleOptions(name: BundleName, outdir: string = join(PROJECT_ROOT, "dist")): BuildOptions {
  return {
    external: [...(name === "generator" ? [] : LAMBDA_EXTERNALS), ...ZSTD_FALLBACK_PACKAGES],
    entryPoints: [join(PROJECT_ROOT, BUNDLES[name])],
    outfile: join(outdir, name, "index.mjs"),
    bundle: true,
    platform: "node",
    target: "node20",
    format: "esm",
    minify: true,
    sourcemap: true,
    legalComments: "none",
    banner: { js: ESM_REQUIRE_BANNER },
    logLevel: "warning",
  };
}
