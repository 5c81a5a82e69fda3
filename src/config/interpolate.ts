import { isMap, isPair, isScalar, isSeq, parse as parseYaml, type Document, type Scalar } from 'yaml';
import { formatPath, type ConfigIssue } from './issues.js';

export type Env = Readonly<Record<string, string | undefined>>;

// ${VAR} · ${VAR:-default} (unset or empty) · ${VAR-default} (unset) · ${VAR:?message} · $$ for a literal $.
const REFERENCE = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?])((?:[^}\\]|\\.)*))?\}/g;

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
  let replaced = false;
  const out = value.replace(
    REFERENCE,
    (
      match,
      name: string | undefined,
      colon: string | undefined,
      op: string | undefined,
      arg: string | undefined,
    ) => {
      if (match === '$$') return '$';
      replaced = true;
      const raw = env[name!];
      const missing = raw === undefined || (colon === ':' && raw === '');
      if (!missing) return raw;
      const text = (arg ?? '').replace(/\\(.)/g, '$1');
      if (op === '-') return text;
      if (op === '?') {
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
    },
  );
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
