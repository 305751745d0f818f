import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { App } from "aws-cdk-lib";
import { Template } from "aws-cdk-lib/assertions";
import { addNagChecks, applyNagAcknowledgements } from "../../lib/nag.ts";
import { UserLoginPipelineStack, type UserLoginPipelineStackProps } from "../../lib/pipeline-stack.ts";

export const ENV = { account: "123456789012", region: "eu-west-1" };

/** A stack synthesized without running esbuild (tests about the template, not the code). */
export function pipelineStack(
  props: UserLoginPipelineStackProps = {},
  options: { bundle?: boolean; nag?: boolean } = {},
) {
  const outdir = mkdtempSync(join(tmpdir(), "cdk-test-"));
  const app = new App({ outdir, context: options.bundle ? {} : { "aws:cdk:bundling-stacks": [] } });
  const stack = new UserLoginPipelineStack(app, "UserLoginPipeline", { env: ENV, ...props });
  if (options.nag) {
    applyNagAcknowledgements(stack);
    addNagChecks(app);
  }
  return { app, stack, outdir, template: () => Template.fromStack(stack) };
}

export function pipelineTemplate(props: UserLoginPipelineStackProps = {}): Template {
  return pipelineStack(props).template();
}
