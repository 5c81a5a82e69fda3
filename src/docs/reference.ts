import type { z } from 'zod';
import { configSchema } from '../config/schema.js';
import { catalog, catalogExtras, problemSlugs } from '../problems/catalog.js';

/*
 * Reference documentation generated from the sources of truth: the config schema (its
 * descriptions and defaults) and the problem catalog. `npm run docs` writes docs/; a test fails
 * when docs/ or the README drift from these.
 */

interface Row {
  path: string;
  type: string;
  default: string;
  description: string;
}

type AnySchema = z.core.$ZodType;
interface Def {
  type: string;
  [k: string]: unknown;
}

const def = (s: AnySchema): Def => (s as unknown as { _zod: { def: Def } })._zod.def;
const describe = (s: AnySchema): string | undefined => (s as unknown as { description?: string }).description;

/** Peels wrappers (default, optional, pipe, transform), collecting default and description. */
function unwrap(schema: AnySchema): {
  core: AnySchema;
  dflt: unknown;
  hasDefault: boolean;
  optional: boolean;
  description: string | undefined;
} {
  let s = schema;
  let dflt: unknown;
  let hasDefault = false;
  let optional = false;
  let description = describe(s);
  for (;;) {
    const d = def(s);
    if (d.type === 'default' || d.type === 'prefault') {
      if (!hasDefault) {
        const v = d.defaultValue;
        dflt = typeof v === 'function' ? (v as () => unknown)() : v;
        hasDefault = true;
      }
      s = d.innerType as AnySchema;
    } else if (d.type === 'optional' || d.type === 'nullable' || d.type === 'readonly') {
      optional ||= d.type === 'optional';
      s = d.innerType as AnySchema;
    } else if (d.type === 'pipe') {
      const out = d.out as AnySchema;
      s = def(out).type === 'transform' ? (d.in as AnySchema) : out;
    } else break;
    description ??= describe(s);
  }
  return { core: s, dflt, hasDefault, optional, description };
}

function typeName(schema: AnySchema): string {
  const { core } = unwrap(schema);
  const d = def(core);
  switch (d.type) {
    case 'string':
      return 'string';
    case 'number': {
      const checks =
        (d.checks as Array<{ _zod: { def: { check: string; format?: string } } }> | undefined) ?? [];
      return checks.some((c) => c._zod.def.format === 'safeint') ||
        (core as unknown as { isInt?: boolean }).isInt
        ? 'integer'
        : 'number';
    }
    case 'int':
      return 'integer';
    case 'boolean':
      return 'boolean';
    case 'literal':
      return (d.values as unknown[]).map((v) => JSON.stringify(v)).join(' | ');
    case 'enum':
      return Object.values(d.entries as Record<string, string>)
        .map((v) => `\`${v}\``)
        .join(' | ');
    case 'array':
      return `list of ${typeName(d.element as AnySchema)}`;
    case 'record':
      return `map of ${typeName(d.valueType as AnySchema)}`;
    case 'union':
      return (d.options as AnySchema[]).map(typeName).join(' | ');
    case 'object':
      return 'map';
    case 'unknown':
    case 'any':
      return 'any';
    default:
      return d.type;
  }
}

function collect(schema: AnySchema, path: string, rows: Row[]): void {
  const { core, dflt, hasDefault, optional, description } = unwrap(schema);
  const d = def(core);
  const required = !optional && !hasDefault;
  const isObject = d.type === 'object';
  const element = d.type === 'array' ? unwrap(d.element as AnySchema).core : undefined;
  const row: Row = {
    path,
    type: typeName(core),
    default: hasDefault && !(isObject && JSON.stringify(dflt) === '{}') ? `\`${JSON.stringify(dflt)}\`` : '',
    description: (required ? '**Required.** ' : '') + (description ?? ''),
  };
  if (path !== '') rows.push(row);
  if (isObject) {
    for (const [key, child] of Object.entries(d.shape as Record<string, AnySchema>))
      collect(child, path ? `${path}.${key}` : key, rows);
  } else if (element !== undefined && def(element).type === 'object') {
    for (const [key, child] of Object.entries(def(element).shape as Record<string, AnySchema>))
      collect(child, `${path}[].${key}`, rows);
  } else if (d.type === 'record') {
    const value = unwrap(d.valueType as AnySchema).core;
    if (def(value).type === 'object')
      for (const [key, child] of Object.entries(def(value).shape as Record<string, AnySchema>))
        collect(child, `${path}.<name>.${key}`, rows);
  } else if (d.type === 'union') {
    for (const option of d.options as AnySchema[]) {
      const inner = unwrap(option).core;
      if (def(inner).type === 'object')
        for (const [key, child] of Object.entries(def(inner).shape as Record<string, AnySchema>))
          collect(child, `${path}.${key}`, rows);
    }
  }
}

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** docs/configuration.md */
export function configurationMarkdown(): string {
  const rows: Row[] = [];
  collect(configSchema, '', rows);
  const lines = [
    '# Configuration reference',
    '',
    '<!-- Generated from src/config/schema.ts by `npm run docs`. Do not edit by hand. -->',
    '',
    'A config file is YAML or JSON. `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}` (unset),',
    '`${VAR:?message}` (required) are replaced from the environment; `$$` is a literal `$`. A default may',
    'hold references itself (`${A:-${B}}`); any other `${` — an incomplete reference, or one an',
    'environment value still holds — is an error with its path, never literal text. Numbers and',
    'booleans may also be written as strings (`"8080"`), so a quoted `${VAR}` works in any field.',
    'Environment overrides: `PORT` → `listen.port`, `REDIS_URL` → `redis.url` (and turns Redis on),',
    '`LOG_LEVEL` → `logging.level`, `TOLLGATE_CONFIG` → the file the CLI reads.',
    '',
    '`tollgate validate --config FILE` prints every problem with its path and exits 1.',
    '',
    '| field | type | default | description |',
    '|---|---|---|---|',
    ...rows.map((r) => `| \`${r.path}\` | ${cell(r.type)} | ${cell(r.default)} | ${cell(r.description)} |`),
    '',
  ];
  return lines.join('\n');
}

/** The problem catalog as a Markdown table (docs/problems.md and the README). */
export function problemTable(): string {
  return [
    '| slug | status | title | when | extensions / headers |',
    '|---|--:|---|---|---|',
    ...problemSlugs.map((slug) => {
      const e = catalog[slug];
      return `| \`${slug}\` | ${e.status} | ${e.title} | ${cell(e.when)} | ${catalogExtras[slug] ?? ''} |`;
    }),
  ].join('\n');
}

/** docs/problems.md */
export function problemsMarkdown(): string {
  return [
    '# Problem catalog',
    '',
    '<!-- Generated from src/problems/catalog.ts by `npm run docs`. Do not edit by hand. -->',
    '',
    'Every error Tollgate answers — its own or an upstream’s — is `application/problem+json` (RFC 9457)',
    'with `type` (= `problems.typeBase` + slug), `title`, `status`, `detail`, `instance`',
    '(`/requests/<request id>`) and `request_id` (equal to the `X-Request-Id` response header).',
    '',
    problemTable(),
    '',
    ...problemSlugs.flatMap((slug) => [
      `## ${slug}`,
      '',
      `${catalog[slug].status} ${catalog[slug].title}. ${catalog[slug].when}`,
      '',
    ]),
  ].join('\n');
}
