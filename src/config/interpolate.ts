import { isMap, isPair, isScalar, isSeq, parse as parseYaml, type Document, type Scalar } from 'yaml';
import { formatPath, type ConfigIssue } from './issues.js';

export type Env = Readonly<Record<string, string | undefined>>;

/*
 * References: ${VAR} · ${VAR:-default} (unset or empty) · ${VAR-default} (unset) · ${VAR:?message}
 * (required) · ${VAR?message} · $$ for a literal $. A default or message may itself hold
 * references (`${A:-${B}}`), expanded only when it is used; `\x` inside one is a literal x.
 * Any other `${` is an error, never literal text: left in place it would be a public string
 * (an admin token of `${B}` passes a length check).
 */
const NAME = /[A-Za-z_][A-Za-z0-9_]*/y;
/** Deeper nesting than any config needs; it also bounds the parser's recursion. */
const MAX_NESTING = 8;

type Part = string | Reference;
interface Reference {
  name: string;
  /** `:` — an empty value counts as unset. */
  colon: boolean;
  op: '-' | '?' | undefined;
  word: Part[];
}

const SYNTAX = 'write ${NAME}, ${NAME:-default}, ${NAME-default} or ${NAME:?message}, and $$ for a literal $';

/** Parses `text` from `start`; inside a default (`nested > 0`) it stops at the closing `}`. */
function parseParts(
  text: string,
  start: number,
  nested: number,
): { parts: Part[]; end: number } | { error: string } {
  const parts: Part[] = [];
  let literal = '';
  let i = start;
  while (i < text.length) {
    const c = text[i]!;
    if (nested > 0 && c === '}') break;
    if (nested > 0 && c === '\\' && i + 1 < text.length) {
      literal += text[i + 1];
      i += 2;
      continue;
    }
    if (c !== '$' || (text[i + 1] !== '$' && text[i + 1] !== '{')) {
      literal += c;
      i++;
      continue;
    }
    if (text[i + 1] === '$') {
      literal += '$';
      i += 2;
      continue;
    }
    NAME.lastIndex = i + 2;
    const name = NAME.exec(text)?.[0];
    if (name === undefined) return { error: `"\${" does not start a reference: ${SYNTAX}` };
    let j = i + 2 + name.length;
    const colon = text[j] === ':';
    if (colon) j++;
    const op = text[j] === '-' || text[j] === '?' ? (text[j] as '-' | '?') : undefined;
    if (op === undefined && (colon || text[j] !== '}'))
      return { error: `"\${${name}" is not a complete reference: ${SYNTAX}` };
    let word: Part[] = [];
    if (op !== undefined) {
      if (nested + 1 > MAX_NESTING) return { error: `references nest more than ${MAX_NESTING} deep` };
      const inner = parseParts(text, j + 1, nested + 1);
      if ('error' in inner) return inner;
      word = inner.parts;
      j = inner.end;
    }
    if (text[j] !== '}') return { error: `"\${${name}" has no closing "}"` };
    if (literal !== '') parts.push(literal);
    literal = '';
    parts.push({ name, colon, op, word });
    i = j + 1;
  }
  if (literal !== '') parts.push(literal);
  return { parts, end: i };
}

export interface InterpolationReport {
  errors: ConfigIssue[];
  warnings: ConfigIssue[];
}

/** Replaces `${…}` references in one string. */
export function interpolateString(
  value: string,
  env: Env,
  path: string,
  report: InterpolationReport,
): { value: string; replaced: boolean } {
  if (!value.includes('$')) return { value, replaced: false };
  const parsed = parseParts(value, 0, 0);
  if ('error' in parsed) {
    report.errors.push({ path, message: parsed.error });
    return { value: '', replaced: true };
  }
  let replaced = false;
  const evaluate = (parts: Part[]): string => {
    let out = '';
    for (const part of parts) {
      if (typeof part === 'string') {
        out += part;
        continue;
      }
      replaced = true;
      out += resolve(part);
    }
    return out;
  };
  const resolve = ({ name, colon, op, word }: Reference): string => {
    // Own, string values only: `${constructor}` must not find Object.prototype's.
    const raw = Object.hasOwn(env, name) ? env[name] : undefined;
    const missing = typeof raw !== 'string' || (colon && raw === '');
    if (!missing) {
      if (raw.includes('${'))
        report.errors.push({
          path,
          message: `environment variable ${name} holds "\${": a reference nothing expanded (values are not interpolated again)`,
        });
      return raw;
    }
    if (op === '-') return evaluate(word);
    if (op === '?') {
      const text = evaluate(word);
      report.errors.push({
        path,
        message: `environment variable ${name} is required${text ? `: ${text}` : ''}`,
      });
      return '';
    }
    report.warnings.push({
      path,
      message: `environment variable ${name} is not set; using an empty string`,
    });
    return '';
  };
  const out = evaluate(parsed.parts);
  return { value: out, replaced };
}

/**
 * Interpolates every string scalar of a parsed YAML document in place. Working on the parsed tree
 * (not the text) means a value can never change the file's structure. An unquoted scalar is
 * re-typed after substitution the way YAML would have typed it (`port: ${PORT:-8080}` is a
 * number); a quoted one stays a string, as its author wrote it.
 */
export function interpolateDocument(doc: Document, env: Env): InterpolationReport {
  const report: InterpolationReport = { errors: [], warnings: [] };
  const walk = (node: unknown, path: PropertyKey[]): void => {
    if (isMap(node)) {
      for (const pair of node.items) {
        if (!isPair(pair)) continue;
        const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
        walk(pair.value, [...path, key]);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => walk(item, [...path, i]));
    } else if (isScalar(node) && typeof node.value === 'string') {
      const scalar: Scalar<unknown> = node;
      const { value, replaced } = interpolateString(node.value, env, formatPath(path), report);
      if (!replaced) {
        scalar.value = value;
        return;
      }
      scalar.value = scalar.type === 'PLAIN' ? retype(value) : value;
    }
  };
  walk(doc.contents, []);
  return report;
}

function retype(text: string): unknown {
  if (text === '') return '';
  try {
    const typed: unknown = parseYaml(text);
    return typeof typed === 'number' || typeof typed === 'boolean' ? typed : text;
  } catch {
    return text;
  }
}
