/**
 * JSON text as the core needs it, without re-serializing anything:
 * - `objectMembers`: the top-level members of an object as spans of the original text, so that a processed record
 *   keeps every input field byte for byte (numbers beyond double precision, `1.10`, escapes, spacing inside values);
 * - `jsonSyntaxError`: for text that JSON.parse refused, what is wrong and where, in words of our own. V8's own
 *   messages quote up to ten characters of the input, and a dead letter's reason must never carry record bytes.
 * Both walk the text iteratively (no recursion), so nesting depth costs no stack.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

const isSpace = (c: number) => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

function skipSpace(text: string, i: number): number {
  while (isSpace(text.charCodeAt(i))) i++;
  return i;
}

/** `i` at a string's opening quote of valid JSON: the index after its closing quote. */
function skipString(text: string, i: number): number {
  let from = i + 1;
  for (;;) {
    const quote = text.indexOf('"', from);
    let backslashes = 0;
    while (text.charCodeAt(quote - 1 - backslashes) === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return quote + 1;
    from = quote + 1;
  }
}

/** `i` at a value of valid JSON: the index after it. */
function skipValue(text: string, i: number): number {
  const first = text.charCodeAt(i);
  if (first === QUOTE) return skipString(text, i);
  if (first === OPEN_BRACE || first === OPEN_BRACKET) {
    let depth = 0;
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === QUOTE) {
        i = skipString(text, i);
        continue;
      }
      if (c === OPEN_BRACE || c === OPEN_BRACKET) depth++;
      else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
        depth--;
        if (depth === 0) return i + 1;
      }
      i++;
    }
  }
  // A number or a literal: up to the next delimiter.
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === COMMA || c === CLOSE_BRACE || c === CLOSE_BRACKET || isSpace(c)) break;
    i++;
  }
  return i;
}

export interface Member {
  /** The decoded property name. */
  readonly name: string;
  /** Index of the name's opening quote. */
  readonly start: number;
  /** Index of the value's first character. */
  readonly valueStart: number;
  /** Index after the value's last character. */
  readonly end: number;
}

/** The top-level members of `text`, in order. `text` must be JSON that JSON.parse accepted as an object. */
export function objectMembers(text: string): Member[] {
  const members: Member[] = [];
  let i = skipSpace(text, skipSpace(text, 0) + 1);
  if (text.charCodeAt(i) === CLOSE_BRACE) return members;
  for (;;) {
    const start = i;
    const nameEnd = skipString(text, i);
    const raw = text.slice(start + 1, nameEnd - 1);
    const name = raw.includes("\\") ? (JSON.parse(text.slice(start, nameEnd)) as string) : raw;
    const valueStart = skipSpace(text, skipSpace(text, nameEnd) + 1);
    const end = skipValue(text, valueStart);
    members.push({ name, start, valueStart, end });
    i = skipSpace(text, end);
    if (text.charCodeAt(i) !== COMMA) return members;
    i = skipSpace(text, i + 1);
  }
}

/** What `memberSpans` says of a member's name. */
export const MEMBER_OTHER = 0;
export const MEMBER_TIMESTAMP = 1;
export const MEMBER_CREATED_AT = 2;
export const MEMBER_PROCESSED_AT = 3;

/** Values per member in `memberSpans`'s output: start, valueStart, end, kind. */
export const SPAN_FIELDS = 4;

/**
 * The kind of the name whose quotes are at `start` and `nameEnd - 1`, reading escapes only when there are any
 * (`escapes`: whether the text has a backslash at all).
 */
function nameKind(text: string, start: number, nameEnd: number, escapes: boolean): number {
  const length = nameEnd - start - 2;
  if (escapes) {
    for (let k = start + 1; k < nameEnd - 1; k++) {
      if (text.charCodeAt(k) === BACKSLASH) return kindOf(JSON.parse(text.slice(start, nameEnd)) as string);
    }
  }
  if (length < 9) return MEMBER_OTHER;
  if (length === 9) return text.startsWith("timestamp", start + 1) ? MEMBER_TIMESTAMP : MEMBER_OTHER;
  if (length === 10) return text.startsWith("created_at", start + 1) ? MEMBER_CREATED_AT : MEMBER_OTHER;
  if (length === 12) return text.startsWith("processed_at", start + 1) ? MEMBER_PROCESSED_AT : MEMBER_OTHER;
  return MEMBER_OTHER;
}

/** The member kind (MEMBER_*) of a decoded member name. */
export const kindOf = (name: string): number =>
  name === "timestamp"
    ? MEMBER_TIMESTAMP
    : name === "created_at"
      ? MEMBER_CREATED_AT
      : name === "processed_at"
        ? MEMBER_PROCESSED_AT
        : MEMBER_OTHER;

/**
 * `objectMembers` for the hot path: the same spans, without an object or a decoded name per member. For member k,
 * `spans[4k]` is its start, `spans[4k + 1]` its valueStart, `spans[4k + 2]` its end and `spans[4k + 3]` its kind
 * (MEMBER_*: names are compared as decoded, escapes included). `spans` is overwritten (a caller reuses one array);
 * returns the number of members. `text` must be JSON that JSON.parse accepted as an object.
 */
export function memberSpans(text: string, spans: number[]): number {
  let count = 0;
  const escapes = text.indexOf("\\") !== -1;
  let i = skipSpace(text, skipSpace(text, 0) + 1);
  if (text.charCodeAt(i) === CLOSE_BRACE) return count;
  for (;;) {
    const start = i;
    const nameEnd = skipString(text, i);
    const valueStart = skipSpace(text, skipSpace(text, nameEnd) + 1);
    const end = skipValue(text, valueStart);
    const at = count * SPAN_FIELDS;
    spans[at] = start;
    spans[at + 1] = valueStart;
    spans[at + 2] = end;
    spans[at + 3] = nameKind(text, start, nameEnd, escapes);
    count++;
    i = skipSpace(text, end);
    if (text.charCodeAt(i) !== COMMA) return count;
    i = skipSpace(text, i + 1);
  }
}

/** Whether text[from..to) is one or more ASCII digits: a whole number token without a fraction or an exponent. */
export function isDigitsToken(text: string, from: number, to: number): boolean {
  if (to <= from) return false;
  for (let k = from; k < to; k++) {
    const c = text.charCodeAt(k);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

/**
 * Whether a JSON number token denotes a whole number: `1694479551`, `1694479551.000` and `1.694479551e9` do,
 * `1694479551.5` and `1694479551.0000000001` (which a double rounds to a whole number) do not. Negative tokens do not.
 */
export function isWholeNumberToken(token: string): boolean {
  const match = /^(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?$/.exec(token);
  if (!match) return false;
  const digits = `${match[1]}${match[2] ?? ""}`;
  const point = (match[1] as string).length + Number(match[3] ?? 0);
  for (let i = Math.max(point, 0); i < digits.length; i++) if (digits.charCodeAt(i) !== 0x30) return false;
  return true;
}

export interface JsonSyntaxError {
  /** What is wrong, e.g. "unexpected character", "unterminated string". */
  readonly kind: string;
  /** Index in the text where it is wrong. */
  readonly index: number;
}

const LITERALS = ["true", "false", "null"] as const;
const ESCAPES = new Set([QUOTE, BACKSLASH, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74]);
const isDigit = (c: number) => c >= 0x30 && c <= 0x39;
const isHex = (c: number) => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);

/** The first place where `text` breaks RFC 8259's grammar, or undefined if it does not. */
export function jsonSyntaxError(text: string): JsonSyntaxError | undefined {
  const n = text.length;
  let i = 0;
  type Result = JsonSyntaxError | undefined;
  const error = (kind: string, index = i): JsonSyntaxError => ({
    kind: index >= n ? "unexpected end of input" : kind,
    index: Math.min(index, n),
  });
  const string = (): Result => {
    const start = i++;
    for (;;) {
      if (i >= n) return { kind: "unterminated string", index: start };
      const c = text.charCodeAt(i);
      if (c === QUOTE) {
        i++;
        return undefined;
      }
      if (c < 0x20) return error("control character in a string");
      if (c === BACKSLASH) {
        const e = text.charCodeAt(i + 1);
        if (e === 0x75) {
          for (let k = 2; k < 6; k++) if (!isHex(text.charCodeAt(i + k))) return error("invalid \\u escape", i + k);
          i += 6;
        } else if (ESCAPES.has(e)) i += 2;
        else return error("invalid escape sequence", i + 1);
      } else i++;
    }
  };
  const digits = (): Result => {
    if (!isDigit(text.charCodeAt(i))) return error("invalid number");
    while (isDigit(text.charCodeAt(i))) i++;
    return undefined;
  };
  const number = (): Result => {
    if (text.charCodeAt(i) === 0x2d) i++;
    if (text.charCodeAt(i) === 0x30) i++;
    else if (digits()) return error("invalid number");
    if (text.charCodeAt(i) === 0x2e) {
      i++;
      if (digits()) return error("invalid number");
    }
    if ((text.charCodeAt(i) | 0x20) === 0x65) {
      i++;
      if (text.charCodeAt(i) === 0x2b || text.charCodeAt(i) === 0x2d) i++;
      if (digits()) return error("invalid number");
    }
    return undefined;
  };
  const name = (): Result => {
    if (text.charCodeAt(i) !== QUOTE) return error("expected a property name");
    const bad = string();
    if (bad) return bad;
    i = skipSpace(text, i);
    if (text.charCodeAt(i) !== COLON) return error("expected ':' after a property name");
    i = skipSpace(text, i + 1);
    return undefined;
  };
  /** Open containers: true for an object, false for an array. */
  const stack: boolean[] = [];
  i = skipSpace(text, i);
  for (;;) {
    // A value starts at i.
    const c = text.charCodeAt(i);
    let bad: Result;
    if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      const object = c === OPEN_BRACE;
      i = skipSpace(text, i + 1);
      if (text.charCodeAt(i) === (object ? CLOSE_BRACE : CLOSE_BRACKET)) i++;
      else {
        stack.push(object);
        bad = object ? name() : undefined;
        if (bad) return bad;
        continue;
      }
    } else if (c === QUOTE) bad = string();
    else if (c === 0x2d || isDigit(c)) bad = number();
    else {
      const literal = LITERALS.find((word) => text.startsWith(word, i));
      if (!literal) return error("unexpected character");
      i += literal.length;
    }
    if (bad) return bad;
    // A value ended at i: close what it completes, up to the next value.
    for (;;) {
      i = skipSpace(text, i);
      if (stack.length === 0) return i < n ? error("unexpected data after the JSON value") : undefined;
      const object = stack[stack.length - 1] as boolean;
      const d = text.charCodeAt(i);
      if (d === COMMA) {
        i = skipSpace(text, i + 1);
        bad = object ? name() : undefined;
        if (bad) return bad;
        break;
      }
      if (d !== (object ? CLOSE_BRACE : CLOSE_BRACKET))
        return error(object ? "expected ',' or '}'" : "expected ',' or ']'");
      stack.pop();
      i++;
    }
  }
}
