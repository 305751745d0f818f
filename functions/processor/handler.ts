/**
 * The Lambda entry point: configuration read once per container, one producer per container, the middy handler.
 * See processor.ts for the logic and its failure semantics.
 */
import { Metrics } from "@aws-lambda-powertools/metrics";
import { loadProcessorConfig } from "../shared/config.ts";
import { METRICS_NAMESPACE, METRICS_SERVICE } from "../shared/metrics.ts";
import { containerSender, createHandler } from "./processor.ts";

const config = loadProcessorConfig();
const container = containerSender(config);

/** Disconnects this container's producer (the local harness calls it on shutdown; Lambda sends SIGTERM). */
export const closeProducer = container.close;

if (process.env.AWS_LAMBDA_FUNCTION_NAME) {
  process.once("SIGTERM", () => {
    void container.close().finally(() => process.exit(0));
  });
}

/** EMF metrics in Lambda only: locally (harness, invoke) they would only clutter stdout. */
const metrics = process.env.AWS_LAMBDA_FUNCTION_NAME
  ? new Metrics({ namespace: METRICS_NAMESPACE, serviceName: METRICS_SERVICE })
  : undefined;

export const handler = createHandler({ config, getSender: container.getSender, metrics });
