import { configJsonSchema } from './json-schema.js';
import type { ConfigIssue } from './issues.js';

/**
 * "Did you mean" for unknown fields: the known keys at the unknown key's level (read from the
 * config's JSON Schema, which is derived from the zod schema, so it cannot drift) and the closest
 * by edit distance. Hand-written (a dozen lines) rather than a dependency.
 */

/** `routes[2].rateLimits[0]["a b"]` → `['routes', 2, 'rateLimits', 0, 'a b']` (formatPath reversed). */
export function parsePath(path: string): Array<string | number> | undefined {
  const out: Array<string | number> = [];
  const token = /\.?([A-Za-z_$][\w$-]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]/y;
  let at = 0;
  while (at < path.length) {
    token.lastIndex = at;
    const m = token.exec(path);
    if (!m) return undefined;
    if (m[1] !== undefined) out.push(m[1]);
    else if (m[2] !== undefined) out.push(Number(m[2]));
    else out.push(JSON.parse(m[3]!) as string);
    at = token.lastIndex;
  }
  return out;
}

/** Levenshtein distance (insertions, deletions, substitutions), case-insensitive. */
export function editDistance(a: string, b: string): number {
  const s = a.toLowerCase();
  const t = b.toLowerCase();
  let prev = Array.from({ length: t.length + 1 }, (_, j) => j);
  for (let i = 1; i <= s.length; i++) {
    const row = [i];
    for (let j = 1; j <= t.length; j++)
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (s[i - 1] === t[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[t.length]!;
}

/** The closest of `known` to `word`, if it is close enough to be a misspelling of it. */
export function closest(word: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(word, k);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  const allowed = Math.max(2, Math.floor(word.length / 3));
  return best !== undefined && best !== word && bestDistance <= allowed ? best : undefined;
}

type JsonSchema = Record<string, unknown>;
let rootSchema: JsonSchema | undefined;

function resolve(schema: unknown, root: JsonSchema, seen = 0): JsonSchema[] {
  if (schema === null || typeof schema !== 'object' || seen > 20) return [];
  const s = schema as JsonSchema;
  const out: JsonSchema[] = [s];
  if (typeof s.$ref === 'string' && s.$ref.startsWith('#/')) {
    let target: unknown = root;
    for (const part of s.$ref.slice(2).split('/')) target = (target as JsonSchema | undefined)?.[part];
    out.push(...resolve(target, root, seen + 1));
  }
  for (const k of ['anyOf', 'oneOf', 'allOf'])
    if (Array.isArray(s[k])) for (const sub of s[k] as unknown[]) out.push(...resolve(sub, root, seen + 1));
  return out;
}

/** The property names the schema knows at `segments` (the object holding the unknown key). */
export function knownKeysAt(segments: ReadonlyArray<string | number>): Set<string> {
  rootSchema ??= configJsonSchema();
  const root = rootSchema;
  let level = resolve(root, root);
  for (const seg of segments) {
    const next: unknown[] = [];
    for (const s of level) {
      if (typeof seg === 'number') {
        if (s.items) next.push(s.items);
        if (Array.isArray(s.prefixItems)) next.push(s.prefixItems[seg]);
      } else {
        const props = s.properties as JsonSchema | undefined;
        if (props && Object.hasOwn(props, seg)) next.push(props[seg]);
        else if (s.additionalProperties && typeof s.additionalProperties === 'object')
          next.push(s.additionalProperties);
      }
    }
    level = next.flatMap((n) => resolve(n, root));
  }
  const keys = new Set<string>();
  for (const s of level) if (s.properties) for (const k of Object.keys(s.properties)) keys.add(k);
  return keys;
}

/** An unknown-field issue gains `; did you mean "x"?` when a known key at its level is close. */
export function withSuggestion(issue: ConfigIssue): ConfigIssue {
  if (issue.message !== 'is not a known field') return issue;
  const segments = parsePath(issue.path);
  const key = segments?.at(-1);
  if (segments === undefined || typeof key !== 'string') return issue;
  const match = closest(key, knownKeysAt(segments.slice(0, -1)));
  return match === undefined ? issue : { ...issue, message: `${issue.message}; did you mean "${match}"?` };
}
