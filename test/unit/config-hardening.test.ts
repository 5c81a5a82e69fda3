import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import fc from 'fast-check';
import { parseDocument, parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { parseConfigText, validateConfig, type LoadResult } from '../../src/config/load.js';
import { interpolateDocument, interpolateString } from '../../src/config/interpolate.js';
import { ConfigError, createGateway } from '../../src/gateway/create-gateway.js';

const mock = { id: 'demo', path: '/demo', mock: { body: { ok: true } } };
const issuesOf = (r: LoadResult) => (r.ok ? [] : r.issues);

function interpolate(text: string, env: Record<string, string>) {
  const report = { errors: [], warnings: [] } as {
    errors: Array<{ path: string; message: string }>;
    warnings: Array<{ path: string; message: string }>;
  };
  return { ...interpolateString(text, env, 'admin.tokens[0]', report), ...report };
}

describe('config interpolation: nested defaults and leftover ${ (13.18)', () => {
  it('expands a nested default instead of leaving the literal ${B} (a public 16-character admin token)', () => {
    expect(interpolate('${A:-${B}}', { B: 'from-b' }).value).toBe('from-b');
    expect(interpolate('${A:-${B:-${C}}}', { C: 'from-c' }).value).toBe('from-c');
    expect(interpolate('${A:-x-${B}-y}', { B: 'b' }).value).toBe('x-b-y');
    // The default is expanded only when used: a set A never warns about B.
    const used = interpolate('${A:-${B}}', { A: 'from-a' });
    expect(used).toMatchObject({ value: 'from-a', warnings: [], errors: [] });
    // Both unset: an empty token (dropped, so the admin API is off), never the text "${B}".
    const unset = parseConfigText('admin: { tokens: ["${ADMIN_TOKEN:-${FALLBACK_TOKEN}}"] }\n', {});
    expect(unset.ok && unset.config.admin?.tokens).toEqual([]);
    const viaFallback = parseConfigText('admin: { tokens: ["${ADMIN_TOKEN:-${FALLBACK_TOKEN}}"] }\n', {
      FALLBACK_TOKEN: 'a-fallback-token-of-length',
    });
    expect(viaFallback.ok && viaFallback.config.admin?.tokens).toEqual(['a-fallback-token-of-length']);
  });

  it('refuses any ${ that is not a complete reference, with the path', () => {
    for (const text of ['${B', '${A:-${B}', 'x${}', '${1A}', '${A B}', '${A:}', '${A:-x', '${A:+x}']) {
      const r = interpolate(text, { A: 'a', B: 'b' });
      expect(r.errors, text).toHaveLength(1);
      expect(r.errors[0]!.path).toBe('admin.tokens[0]');
    }
    const r = parseConfigText('admin: { tokens: ["${ADMIN_TOKEN:-${FALLBACK_TOKEN}"] }\n', {});
    expect(issuesOf(r).map((i) => i.path)).toEqual(['admin.tokens[0]']);
  });

  it('refuses an environment value that still holds ${ (a reference nothing expanded), but keeps $${ literal', () => {
    const r = parseConfigText('admin: { tokens: ["${ADMIN_TOKEN}"] }\n', {
      ADMIN_TOKEN: '${ADMIN_SECRET}xx',
    });
    expect(issuesOf(r).map((i) => i.path)).toEqual(['admin.tokens[0]']);
    expect(interpolate('price: $${amount}', {})).toMatchObject({ value: 'price: ${amount}', errors: [] });
  });

  it('reads only own environment variables: ${constructor} is unset, not Object.prototype.constructor', () => {
    const r = interpolate('${constructor:-fallback}', {});
    expect(r.value).toBe('fallback');
    expect(interpolate('${toString}', {}).value).toBe('');
  });

  it('bounds the nesting of defaults', () => {
    const deep = '${A:-'.repeat(50) + 'x' + '}'.repeat(50);
    expect(interpolate(deep, {}).errors).toHaveLength(1);
  });
});

describe('workers without redis (13.16)', () => {
  it('refuses workers > 1 without redis at validation, at the path workers', () => {
    const r = validateConfig({ workers: 2, routes: [mock] });
    expect(issuesOf(r).map((i) => i.path)).toEqual(['workers']);
    expect(issuesOf(r)[0]!.message).toContain('redis');
  });

  it('refuses workers: auto when it means more than one process here, and accepts it when it means one', () => {
    const r = validateConfig({ workers: 'auto', routes: [mock] });
    if (availableParallelism() > 1) {
      expect(issuesOf(r).map((i) => i.path)).toEqual(['workers']);
      expect(issuesOf(r)[0]!.message).toContain(`"auto" is ${availableParallelism()} processes`);
    } else expect(r.ok).toBe(true);
  });

  it('accepts workers > 1 with a redis block or REDIS_URL, and workers: 1 without', () => {
    expect(validateConfig({ workers: 2, redis: { url: 'redis://127.0.0.1:6379' }, routes: [mock] }).ok).toBe(
      true,
    );
    expect(validateConfig({ workers: 2, routes: [mock] }, { REDIS_URL: 'redis://127.0.0.1:6379' }).ok).toBe(
      true,
    );
    expect(validateConfig({ workers: 1, routes: [mock] }).ok).toBe(true);
  });
});

describe('plan names are own properties (13.smaller)', () => {
  it('refuses selfService.plan: __proto__ / constructor / toString when no such plan is defined', () => {
    for (const plan of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      const r = validateConfig({
        auth: { jwt: [{ issuer: 'https://idp/', secret: 'x'.repeat(32) }] },
        selfService: { path: '/v1/keys', plan },
        routes: [mock],
      });
      expect(
        issuesOf(r).map((i) => i.path),
        plan,
      ).toEqual(['selfService.plan']);
    }
  });
});

describe('config errors are issues with paths, never exceptions (14.4)', () => {
  it('reports a target without a scheme with its path, and every other problem too', () => {
    for (const target of ['127.0.0.1:9001', 'not a url', '']) {
      const r = validateConfig({
        listen: { port: 'eighty' },
        routes: [
          { id: 'a', path: '/a', auth: 'none', upstream: { targets: [target] } },
          { id: 'b', path: '/b', methods: [], mock: {} },
        ],
      });
      const paths = issuesOf(r).map((i) => i.path);
      expect(paths, target).toContain('routes[0].upstream.targets[0]');
      expect(paths, target).toContain('listen.port');
      expect(paths, target).toContain('routes[1].methods');
    }
  });

  it('reports a trustProxy that cannot be compiled at trustProxy (it used to throw while building)', () => {
    for (const trustProxy of ['garbage', ['loopback', '10.0.0.0/99']]) {
      const r = validateConfig({ trustProxy, routes: [mock] });
      expect(issuesOf(r).map((i) => i.path)).toEqual(['trustProxy']);
    }
    expect(validateConfig({ trustProxy: 'loopback, 10.0.0.0/8', routes: [mock] }).ok).toBe(true);
  });

  it('turns a factory that throws into a ConfigError naming the route (a cyclic mock body)', () => {
    const r = parseConfigText('routes:\n  - { id: loop, path: /loop, mock: { body: &a [*a] } }\n');
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    let caught: unknown;
    try {
      createGateway(r.config);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).issues.map((i) => i.path)).toEqual(['routes[0]']);
  });
});

// -------------------------------------------------------------------------- property (14.4)

type Json = unknown;
const ENV = { ADMIN_TOKEN: 'a-property-admin-token', NODE_ENV: 'production' };
const FILES = ['config/gateway.yaml', 'config/spec-example.yaml'].map((file) => readFileSync(file, 'utf8'));
/** As written (`${…}` references in place), for the text property. */
const EXAMPLES = FILES.map((text) => parseYaml(text) as Record<string, Json>);
/** As the loader hands them to the schema (references replaced), for the object property. */
const INTERPOLATED = FILES.map((text) => {
  const doc = parseDocument(text);
  interpolateDocument(doc, ENV);
  return doc.toJS() as Record<string, Json>;
});

/** Every [container, key] in a parsed config, the root's members included. */
function slots(root: Json): Array<[Record<string, Json> | Json[], string | number]> {
  const out: Array<[Record<string, Json> | Json[], string | number]> = [];
  const walk = (node: Json) => {
    if (Array.isArray(node))
      node.forEach((v, i) => {
        out.push([node, i]);
        walk(v);
      });
    else if (node !== null && typeof node === 'object')
      for (const [k, v] of Object.entries(node)) {
        out.push([node as Record<string, Json>, k]);
        walk(v);
      }
  };
  walk(root);
  return out;
}

const junk = fc.oneof(
  { arbitrary: fc.constantFrom('127.0.0.1:9001', 'not a url', 'ftp://x', '${B', 'garbage'), weight: 4 },
  fc.constantFrom(
    '127.0.0.1:9001',
    'not a url',
    'http://127.0.0.1:9001/?q=1#f',
    'ftp://x',
    '${A:-${B}}',
    '${B',
    '__proto__',
    'constructor',
    'garbage',
    '10.0.0.0/99',
    '/',
    '',
    '-1',
    'auto',
    'none',
    [],
    {},
    null,
  ),
  fc.string({ maxLength: 12 }),
  fc.integer({ min: -5, max: 70_000 }),
  fc.double({ noNaN: false }),
  fc.boolean(),
  fc.array(fc.string({ maxLength: 8 }), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 }),
);

const mutation = fc.record({
  at: fc.nat(),
  kind: fc.constantFrom('replace', 'delete', 'add'),
  key: fc.constantFrom('extra', 'targets', 'auth', 'upstream', 'mock', 'gone', 'methods', 'path', 'plan'),
  value: junk,
});

type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(example: Record<string, Json>, mutations: Mutation[]): Json {
  const root = structuredClone(example);
  for (const m of mutations) {
    const all = slots(root);
    if (all.length === 0) break;
    const [container, key] = all[m.at % all.length]!;
    const target = (container as Record<string | number, Json>)[key];
    if (m.kind === 'replace') (container as Record<string | number, Json>)[key] = structuredClone(m.value);
    else if (m.kind === 'delete') {
      if (Array.isArray(container)) container.splice(key as number, 1);
      else delete container[key as string];
    } else if (target !== null && typeof target === 'object' && !Array.isArray(target))
      (target as Record<string, Json>)[m.key] = structuredClone(m.value);
    else if (Array.isArray(target)) target.push(structuredClone(m.value));
  }
  return root;
}

function expectAnswer(r: LoadResult): void {
  if (r.ok) return;
  expect(r.issues.length).toBeGreaterThan(0);
  for (const issue of r.issues) {
    expect(typeof issue.path === 'string' && issue.path.length > 0).toBe(true);
    expect(typeof issue.message === 'string' && issue.message.length > 0).toBe(true);
    // Not the safety net's catch-all: a check that threw lost every other issue's path.
    expect(issue.message).not.toMatch(/^cannot be checked/);
  }
}

/** The build half of `validate`, without connecting anywhere: no Redis, JWKS on a closed port. */
async function build(r: LoadResult): Promise<void> {
  if (!r.ok) return;
  const config = structuredClone(r.config) as Record<string, any>;
  delete config.redis;
  config.workers = 1;
  for (const issuer of config.auth?.jwt ?? [])
    if (issuer.jwksUri !== undefined) issuer.jwksUri = 'http://127.0.0.1:9/jwks.json';
  // A config the schema accepted must build: a factory refusing it is a check the schema lacks.
  const gateway = createGateway(config);
  await gateway.close();
}

describe('validate never throws on a mutated example config (14.4, property)', () => {
  it('config objects: ok (and it builds), or issues with paths', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...INTERPOLATED),
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        async (example, mutations) => {
          const input = mutate(example, mutations);
          const r = validateConfig(input, ENV);
          expectAnswer(r);
          await build(r);
        },
      ),
      { numRuns: 150 },
    );
  }, 60_000);

  it('config text (interpolation included): ok, or issues with paths', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...EXAMPLES),
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        (example, mutations) => {
          const text = stringifyYaml(mutate(example, mutations));
          expectAnswer(parseConfigText(text, ENV));
        },
      ),
      { numRuns: 200 },
    );
  }, 60_000);
});
