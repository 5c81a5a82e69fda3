import { describe, expect, it } from 'vitest';
import { fakeContext, type FakeRequestOptions } from '../../core/fake-context.js';
import type { Stage } from '../../core/stage.js';
import { Problem } from '../../problems/problem.js';
import { fromZodIssues } from '../../config/issues.js';
import { createCorsStage } from './cors.js';
import { corsSchema, routeCorsSchema } from './schema.js';

const APP = 'https://app.example.com';
const stageOf = (input: unknown, routeMethods?: string[]) =>
  createCorsStage(corsSchema.parse(input), {
    routeMethods,
    securityHeaders: [['x-content-type-options', 'nosniff']],
  });

/** Runs the stage; returns the context (the stage did not answer) or the Problem it threw. */
function run(stage: Stage, options: FakeRequestOptions) {
  const t = fakeContext(options);
  try {
    void stage.run(t.ctx);
  } catch (err) {
    expect(err).toBeInstanceOf(Problem);
    return { t, problem: err as Problem };
  }
  return { t, problem: undefined };
}

const preflight = (origin: string, extra: Record<string, string> = {}): FakeRequestOptions => ({
  method: 'OPTIONS',
  url: '/v1/orders',
  headers: { origin, 'access-control-request-method': 'POST', ...extra },
});

describe('cors stage (in-process)', () => {
  it('answers a preflight from a listed origin: 204, methods, reflected headers, max-age, Vary', async () => {
    const { t, problem } = run(
      stageOf({ origins: [APP] }),
      preflight(APP, { 'access-control-request-headers': 'Authorization, X-Api-Key,idempotency-key' }),
    );
    expect(problem).toBeUndefined();
    expect(t.ctx.handled).toBe(true);
    const r = await t.response();
    expect(r.status).toBe(204);
    expect(r.body.length).toBe(0);
    expect(r.headers).toMatchObject({
      'access-control-allow-origin': APP,
      'access-control-allow-methods': 'GET, HEAD, PUT, PATCH, POST, DELETE',
      'access-control-allow-headers': 'authorization, x-api-key, idempotency-key',
      'access-control-max-age': '600',
      vary: 'Origin, Access-Control-Request-Headers',
      'x-request-id': t.ctx.requestId,
      'x-content-type-options': 'nosniff',
    });
    expect(r.headers['access-control-allow-credentials']).toBeUndefined();
  });

  it("uses configured methods and headers, else the route's methods; credentials and max-age as set", async () => {
    const configured = run(
      stageOf({
        origins: [APP],
        methods: ['get', 'post'],
        headers: ['Authorization'],
        credentials: true,
        maxAgeSec: 60,
      }),
      preflight(APP, { 'access-control-request-headers': 'x-evil' }),
    );
    const r = await configured.t.response();
    expect(r.headers).toMatchObject({
      'access-control-allow-methods': 'GET, POST',
      'access-control-allow-headers': 'Authorization',
      'access-control-allow-credentials': 'true',
      'access-control-max-age': '60',
      vary: 'Origin',
    });
    const routed = await run(stageOf({ origins: [APP] }, ['GET', 'DELETE']), preflight(APP)).t.response();
    expect(routed.headers['access-control-allow-methods']).toBe('GET, DELETE');
    expect(routed.headers['access-control-allow-headers']).toBeUndefined();
  });

  it('refuses the preflight of an unlisted origin with 403 forbidden and no CORS headers', () => {
    for (const origin of [
      'https://evil.example',
      'https://app.example.com.evil.example',
      'null',
      'https://APP.example.com',
    ]) {
      const { t, problem } = run(stageOf({ origins: [APP] }), preflight(origin));
      expect(problem?.slug).toBe('forbidden');
      expect(t.res.getHeader('access-control-allow-origin')).toBeUndefined();
      expect(t.res.getHeader('vary')).toBe('Origin');
    }
  });

  it('marks an actual request from an allowed origin and lets it through', () => {
    const { t, problem } = run(
      stageOf({ origins: [APP, 'http://localhost:3000'], exposeHeaders: ['X-Total', 'ratelimit'] }),
      {
        method: 'POST',
        url: '/v1/orders',
        headers: { origin: 'http://localhost:3000' },
      },
    );
    expect(problem).toBeUndefined();
    expect(t.ctx.handled).toBe(false);
    expect(t.res.getHeader('access-control-allow-origin')).toBe('http://localhost:3000');
    expect(t.res.getHeader('access-control-expose-headers')).toBe(
      'X-Request-Id, RateLimit, RateLimit-Policy, Retry-After, X-Total',
    );
    expect(t.res.getHeader('access-control-max-age')).toBeUndefined();
    // Owned: an upstream's own CORS headers and Vary are replaced (merged), not doubled.
    expect(t.ctx.responseHeaderNames).toEqual(
      expect.arrayContaining(['access-control-allow-origin', 'vary']),
    );
  });

  it('an unlisted origin and a request without Origin get no CORS headers but still Vary: Origin', () => {
    for (const headers of [{ origin: 'https://evil.example' }, {}] as Record<string, string>[]) {
      const { t, problem } = run(stageOf({ origins: [APP] }), { method: 'GET', headers });
      expect(problem).toBeUndefined();
      expect(t.ctx.handled).toBe(false);
      expect(t.res.getHeader('access-control-allow-origin')).toBeUndefined();
      expect(t.res.getHeader('vary')).toBe('Origin');
      // Still owned: an upstream cannot grant what the gateway refused.
      expect(t.ctx.responseHeaderNames).toContain('access-control-allow-origin');
    }
  });

  it('"*": any origin gets `*`, no Vary: Origin', async () => {
    const actual = run(stageOf({ origins: '*' }), { headers: { origin: 'https://anyone.example' } });
    expect(actual.t.res.getHeader('access-control-allow-origin')).toBe('*');
    expect(actual.t.res.getHeader('vary')).toBeUndefined();
    const r = await run(stageOf({ origins: '*' }), preflight('null')).t.response();
    expect(r.status).toBe(204);
    expect(r.headers['access-control-allow-origin']).toBe('*');
    expect(r.headers.vary).toBe('Access-Control-Request-Headers');
  });

  it('an OPTIONS without Access-Control-Request-Method is not a preflight', () => {
    const { t } = run(stageOf({ origins: [APP] }), { method: 'OPTIONS', headers: { origin: APP } });
    expect(t.ctx.handled).toBe(false);
    const evil = run(stageOf({ origins: [APP] }), {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example' },
    });
    expect(evil.problem).toBeUndefined();
  });

  it('reflects only header names, bounded, from Access-Control-Request-Headers', async () => {
    const many = Array.from({ length: 100 }, (_, i) => `x-h${i}`).join(',');
    const r = await run(
      stageOf({ origins: [APP] }),
      preflight(APP, { 'access-control-request-headers': `x-a, bad name, x-a, "q", ${many}` }),
    ).t.response();
    const names = String(r.headers['access-control-allow-headers']).split(', ');
    expect(names[0]).toBe('x-a');
    expect(names).not.toContain('bad name');
    expect(names).not.toContain('"q"');
    expect(names).toHaveLength(64);
  });
});

describe('cors validation', () => {
  const issues = (input: unknown) => {
    const r = routeCorsSchema.safeParse(input);
    return r.success ? [] : fromZodIssues(r.error.issues).map((i) => `${i.path}: ${i.message}`);
  };

  it('accepts origins, "*", off and defaults', () => {
    expect(issues('off')).toEqual([]);
    expect(issues({ origins: '*' })).toEqual([]);
    expect(
      issues({ origins: [APP, 'http://localhost:3000', 'http://127.0.0.1:8080', 'https://[::1]:8443'] }),
    ).toEqual([]);
    expect(corsSchema.parse({ origins: [APP] })).toEqual({
      origins: [APP],
      exposeHeaders: [],
      credentials: false,
      maxAgeSec: 600,
    });
  });

  it.each([
    ['https://app.example.com/', 'must not end with a slash'],
    ['https://app.example.com/app', 'no path'],
    ['https://app.example.com?x=1', 'no path'],
    ['app.example.com', 'must be an origin'],
    ['localhost:3000', 'http:// or https://'],
    ['ftp://files.example.com', 'http:// or https://'],
    ['https://APP.example.com', 'https://app.example.com'],
    ['https://app.example.com:443', 'https://app.example.com'],
    ['https://user@app.example.com', 'user name'],
    ['null', 'must not be "null"'],
    ['*', 'whole value'],
  ])('refuses the origin %s with its path', (origin, message) => {
    const found = issues({ origins: [APP, origin] });
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/^origins\[1\]: /);
    expect(found[0]).toContain(message);
  });

  it('refuses "*" with credentials, bad header names, a bad max-age and unknown fields', () => {
    expect(issues({ origins: '*', credentials: true })).toEqual([
      expect.stringMatching(/^credentials: cannot be true with origins "\*"/),
    ]);
    expect(issues({ origins: [APP], headers: ['X Bad'] })[0]).toMatch(/^headers\[0\]: /);
    expect(issues({ origins: [APP], exposeHeaders: ['x:y'] })[0]).toMatch(/^exposeHeaders\[0\]: /);
    expect(issues({ origins: [APP], maxAgeSec: -1 })[0]).toMatch(/^maxAgeSec: /);
    expect(issues({ origins: [APP], methods: ['FETCH'] })[0]).toMatch(/^methods\[0\]: /);
    expect(issues({ origins: [] })[0]).toMatch(/^origins: /);
    expect(issues({ origin: [APP] }).length).toBeGreaterThan(0);
    expect(issues('on').length).toBeGreaterThan(0);
  });
});
