/**
 * The Lambda entry point: configuration read once per container, one producer per container, the middy handler.
 * See processor.ts for the logic and its failure semantics.
 */
import { loadProcessorConfig } from "../shared/config.ts";
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

export const handler = createHandler({ config, getSender: container.getSender });
