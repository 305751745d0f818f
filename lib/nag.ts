/**
 * cdk-nag (AwsSolutions pack, v3: a CDK policy-validation plugin) and the acknowledgements of this stack. Each is
 * made with `acknowledge` on the one resource it concerns, where that resource is created, for one finding
 * (`Rule[Finding]`, cdk-nag v3's form of v2's NagSuppressions.addResourceSuppressions with appliesTo), with the
 * reason it does not apply there. None is stack-wide: the same finding on any other resource fails synthesis.
 */
import { type App, Stack, Validations } from "aws-cdk-lib";
import { AwsSolutionsChecks } from "cdk-nag";
import type { IConstruct } from "constructs";

export interface Acknowledgement {
  /** The construct path of the resource it concerns. */
  readonly path: string;
  /** The rule and finding, e.g. "AwsSolutions-IAM5[Resource::*]". */
  readonly id: string;
  readonly reason: string;
}

const made = new WeakMap<Stack, Acknowledgement[]>();

/** Acknowledges one finding on one resource (never a stack), and records it for review (acknowledgementsOf). */
export function acknowledge(resource: IConstruct, id: string, reason: string): void {
  if (Stack.isStack(resource)) {
    throw new Error(`acknowledge ${id} on the resource it concerns, not on the stack ${resource.node.path}`);
  }
  Validations.of(resource).acknowledge({ id, reason });
  const stack = Stack.of(resource);
  made.set(stack, [...(made.get(stack) ?? []), { path: resource.node.path, id, reason }]);
}

/** Every acknowledgement made in `stack`, in the order they were made. */
export function acknowledgementsOf(stack: Stack): readonly Acknowledgement[] {
  return made.get(stack) ?? [];
}

/**
 * Kept for callers (bin/app.ts used to call it, test/support/cdk.ts does): there are no stack-wide acknowledgements
 * any more, each is made with its resource (acknowledge).
 */
export function applyNagAcknowledgements(_stack: Stack): void {}

/** Runs the AwsSolutions pack on every stack of the app at synth time. */
export function addNagChecks(app: App): void {
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
}
