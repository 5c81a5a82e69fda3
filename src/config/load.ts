import { readFile } from 'node:fs/promises';
import { LineCounter, isMap, isNode, parseDocument, type Document } from 'yaml';
import { configSchema, type Config } from './schema.js';
import { interpolateDocument, type Env } from './interpolate.js';
import { fromZodIssues, type ConfigIssue } from './issues.js';
import { configWarnings } from './warnings.js';
import { parsePath, withSuggestion } from './suggest.js';
import { loadPolicyModules, type PolicyModules } from '../policies/custom/loader.js';

export type LoadResult =
  /** `modules`: the loaded default exports of the file's `policies.<name>.module`s (files only). */
  | { ok: true; config: Config; warnings: ConfigIssue[]; modules?: PolicyModules }
  | { ok: false; issues: ConfigIssue[]; warnings: ConfigIssue[] };

/**
 * Validates a config object (as `createGateway()` receives it) after applying the environment
 * overrides of SPEC §1 (`PORT`, `REDIS_URL`, `LOG_LEVEL`). Returns a deeply frozen, normalised config.
 */
export function validateConfig(input: unknown, env: Env = {}): LoadResult {
  const warnings: ConfigIssue[] = [];
  const issues: ConfigIssue[] = [];
  try {
    const raw = applyEnvOverrides(input, env, issues);
    const parsed = configSchema.safeParse(raw, { reportInput: true });
    if (!parsed.success) issues.push(...fromZodIssues(parsed.error.issues).map(withSuggestion));
    if (issues.length > 0 || !parsed.success) return { ok: false, issues, warnings };
    warnings.push(...configWarnings(parsed.data, env));
    return { ok: true, config: deepFreeze(parsed.data), warnings };
  } catch (err) {
    // A check that throws is a bug of ours, but the operator still gets an answer with a path
    // (and `validate`, start and reload an issue to report), never a bare exception.
    return { ok: false, issues: [...issues, unexpectedIssue(err)], warnings };
  }
}

/** An exception from validating or building a config, as an issue. */
export function unexpectedIssue(err: unknown, path = '(config)'): ConfigIssue {
  const message = err instanceof Error ? err.message : String(err);
  return { path, message: `cannot be checked (${message})` };
}

/** Parses YAML or JSON text (JSON is YAML 1.2), interpolates `${VAR}` references and validates. */
export function parseConfigText(text: string, env: Env = {}): LoadResult {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true, lineCounter });
  if (doc.errors.length > 0) {
    return {
      ok: false,
      warnings: [],
      issues: doc.errors.map((e) => ({
        path: e.linePos ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '(file)',
        message: e.message.split('\n')[0] ?? e.message,
        ...(e.linePos ? { line: e.linePos[0].line, column: e.linePos[0].col } : {}),
      })),
    };
  }
  const report = interpolateDocument(doc, env);
  const input: unknown = doc.toJS();
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    return {
      ok: false,
      warnings: report.warnings,
      issues: [{ path: '(root)', message: 'must be a map of settings' }],
    };
  }
  const result = validateConfig(input, env);
  const locate = (issues: ConfigIssue[]) => issues.map((i) => located(i, doc, lineCounter));
  const warnings = locate([...report.warnings, ...result.warnings]);
  if (report.errors.length > 0)
    return {
      ok: false,
      warnings,
      issues: locate([...report.errors, ...(result.ok ? [] : result.issues)]),
    };
  return result.ok ? { ...result, warnings } : { ...result, warnings, issues: locate(result.issues) };
}

/**
 * The issue with the line and column of its path in the file: the key of an unknown field, else
 * the value at the path, else the nearest enclosing node that exists (a missing field is reported
 * where its parent is).
 */
function located(issue: ConfigIssue, doc: Document, lines: LineCounter): ConfigIssue {
  if (issue.line !== undefined) return issue;
  const segments = parsePath(issue.path);
  if (segments === undefined) return issue;
  for (let n = segments.length; n >= 0; n--) {
    const parent = n === 0 ? doc.contents : doc.getIn(segments.slice(0, n - 1), true);
    let node: unknown = n === 0 ? doc.contents : undefined;
    if (n > 0 && isMap(parent)) {
      const pair = parent.items.find(
        (p) => (isNode(p.key) ? (p.key as { value?: unknown }).value : p.key) === segments[n - 1],
      );
      // An unknown field points at its key; anything else at its value.
      node = pair
        ? n === segments.length && /not a known field/.test(issue.message)
          ? pair.key
          : (pair.value ?? pair.key)
        : undefined;
    } else if (n > 0) node = doc.getIn(segments.slice(0, n), true);
    if (isNode(node) && node.range) {
      const { line, col } = lines.linePos(node.range[0]);
      return { ...issue, line, column: col };
    }
  }
  return issue;
}

export async function loadConfigFile(path: string, env: Env = {}): Promise<LoadResult> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    return {
      ok: false,
      warnings: [],
      issues: [{ path: '(file)', message: `cannot read ${path} (${code})` }],
    };
  }
  const result = parseConfigText(text, env);
  if (!result.ok || Object.keys(result.config.policies).length === 0) return result;
  // Policy modules are code: loaded once the config itself is valid, from beside the file.
  const { modules, issues } = await loadPolicyModules(result.config.policies, path);
  if (issues.length > 0) return { ok: false, issues, warnings: result.warnings };
  return { ...result, modules };
}

const LOG_LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

function applyEnvOverrides(input: unknown, env: Env, issues: ConfigIssue[]): unknown {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) return input;
  const out: Record<string, unknown> = { ...(input as Record<string, unknown>) };
  if (env.PORT !== undefined && env.PORT !== '') {
    // Digits only: Number() would read '  ' as 0 (a random port) and '1e3' as 1000.
    const port = /^\d{1,5}$/.test(env.PORT) ? Number(env.PORT) : NaN;
    if (!Number.isInteger(port) || port < 0 || port > 65535)
      issues.push({ path: 'PORT (environment)', message: 'must be a port number (0-65535)' });
    else out.listen = { ...asRecord(out.listen), port };
  }
  if (env.REDIS_URL !== undefined && env.REDIS_URL !== '') {
    const redis = asRecord(out.redis);
    // An explicit cluster or sentinel setup wins; REDIS_URL names a single node.
    if (redis.cluster === undefined && redis.sentinels === undefined)
      out.redis = { ...redis, url: env.REDIS_URL };
  }
  if (env.LOG_LEVEL !== undefined && env.LOG_LEVEL !== '') {
    const level = env.LOG_LEVEL.toLowerCase(); // `DEBUG` means debug
    if (!LOG_LEVELS.has(level))
      issues.push({
        path: 'LOG_LEVEL (environment)',
        message: `must be one of ${[...LOG_LEVELS].join(', ')}`,
      });
    else out.logging = { ...asRecord(out.logging), level };
  }
  return out;
}

function asRecord(value: unknown): Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
