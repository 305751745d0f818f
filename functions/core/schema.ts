/**
 * The input contract: schemas/user-login.schema.json, compiled once per process by ajv.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import ajvErrors from "ajv-errors";
import addFormats from "ajv-formats";
import processedSchema from "../../schemas/processed-user-login.schema.json" with { type: "json" };
import inputSchema from "../../schemas/user-login.schema.json" with { type: "json" };

/** A user-login event that passed the input schema. Other properties pass through. */
export interface UserLogin {
  user_id: string;
  app_version: string;
  device_type: string;
  ip: string;
  locale: string;
  device_id: string;
  timestamp: number | string;
  [extra: string]: unknown;
}

function newAjv(): Ajv {
  // allErrors is what ajv-errors needs; it only costs anything on records that fail.
  const ajv = new Ajv({ allErrors: true, strict: true });
  addFormats.default(ajv, ["ipv4", "ipv6", "date-time"]);
  ajvErrors.default(ajv);
  return ajv;
}

const ajv = newAjv();
export const validateUserLogin = ajv.compile<UserLogin>(inputSchema);

/** The input schema as a JSON object (a copy), e.g. to derive a changed contract from it. */
export function userLoginSchema(): Record<string, unknown> {
  return structuredClone(inputSchema) as Record<string, unknown>;
}

/** Compiles another input contract with the same ajv setup (formats, error messages). */
export function compileInputSchema(schema: Record<string, unknown>) {
  return newAjv().compile(schema);
}
let processedValidator: ValidateFunction | undefined;

/**
 * The output contract, for tests and consumers. Compiled on first use: the processor never re-validates its output,
 * so a cold start does not pay for it.
 */
export function processedUserLoginValidator(): ValidateFunction {
  processedValidator ??= ajv.compile(processedSchema);
  return processedValidator;
}

/**
 * One sentence per schema error, joined with "; ": the JSON pointer of the offending field (if any), then what
 * it must be. e.g. `/timestamp must be an integer or a digit string within 0..253402300799`.
 */
export function describeSchemaErrors(errors: readonly ErrorObject[] | null | undefined): string {
  if (!errors || errors.length === 0) return "does not match the user-login schema";
  const sentences: string[] = [];
  for (const error of errors) {
    const sentence = error.instancePath ? `${error.instancePath} ${error.message}` : `${error.message}`;
    if (!sentences.includes(sentence)) sentences.push(sentence);
  }
  return sentences.join("; ");
}
