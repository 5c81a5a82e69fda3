import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { fakeContext, type FakeRequestOptions } from '../../core/fake-context.js';
import type { Identity } from '../../core/identity.js';
import type { Stage } from '../../core/stage.js';
import { Problem } from '../../problems/problem.js';
import { compilePolicy, middlewareProblem } from './custom.js';
import { definePolicy, isPolicy, type PolicyHandler, type PolicyRequest } from './define-policy.js';
import { policyStage } from './middleware.js';

type Next = (err?: unknown) => void;
type Middleware = (req: IncomingMessage, res: ServerResponse, next: Next) => void;

/** Runs a stage; the Problem it refused with (anything else fails the test), or undefined. */
async function outcome(
  stage: Stage,
  ctx: ReturnType<typeof fakeContext>['ctx'],
): Promise<Problem | undefined> {
  try {
    await stage.run(ctx);
    return undefined;
  } catch (err) {
    if (err instanceof Problem) return err;
    throw new Error(`the stage threw a non-Problem: ${String(err)}`, { cause: err });
  }
}

/** A policy whose handler is given: what a test wants it to do with the request. */
function inline(handler: PolicyHandler, name = 'inline') {
  return policyStage(definePolicy({ name, create: () => handler }));
}

const apiKey: Identity = {
  method: 'api-key',
  credentialId: 'key_1',
  subject: 'user-7',
  tenant: 'acme',
  scopes: ['orders:read'],
  plan: undefined,
  rateLimits: undefined,
  remaining: undefined,
};

const tenantRouter = definePolicy({
  name: 'tenant-router',
  schema: z.strictObject({
    header: z.string().default('x-tenant'),
    tenants: z.record(z.string(), z.string().regex(/^[a-z]{2}-\d$/, 'must be a shard like eu-1')),
  }),
  create:
    ({ header, tenants }) =>
    (req) => {
      const tenant = req.headers[header];
      const shard = typeof tenant === 'string' ? tenants[tenant] : undefined;
      if (shard === undefined) throw new Problem('forbidden', { detail: 'Unknown tenant.' });
      req.setUpstreamHeader('x-tenant-shard', shard);
    },
});

describe('definePolicy', () => {
  it('defaults the phase to late and marks the policy', () => {
    const p = definePolicy({ name: 'p', create: () => () => undefined });
    expect(p.phase).toBe('late');
    expect(isPolicy(p)).toBe(true);
    expect(Object.isFrozen(p)).toBe(true);
    expect(isPolicy({ name: 'p', create: () => () => undefined })).toBe(false);
    expect(definePolicy({ name: 'e', phase: 'early', create: () => () => undefined }).phase).toBe('early');
  });

  it('refuses a definition without create, without a name, or with an unknown phase', () => {
    expect(() => definePolicy({ name: 'p' } as never)).toThrow(TypeError);
    expect(() => definePolicy({ name: '', create: () => () => undefined })).toThrow(TypeError);
    expect(() =>
      definePolicy({ name: 'p', phase: 'middle' as never, create: () => () => undefined }),
    ).toThrow(TypeError);
  });
});

describe('compilePolicy and policyStage: options', () => {
  it('validates options with the zod schema, reporting paths under policies.<name>.options', () => {
    const result = compilePolicy('router', tenantRouter, { tenants: { acme: 'nowhere' }, extra: 1 });
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.issues).toEqual(
      expect.arrayContaining([
        { path: 'policies.router.options.tenants.acme', message: 'must be a shard like eu-1' },
        expect.objectContaining({ path: 'policies.router.options' }),
      ]),
    );
  });

  it('reports a missing required option at its path', () => {
    const result = compilePolicy('router', tenantRouter, undefined);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.issues.map((i) => i.path)).toEqual(['policies.router.options.tenants']);
  });

  it('throws from policyStage with the path, without the policies. prefix', () => {
    expect(() => policyStage(tenantRouter, { tenants: { acme: 'nowhere' } })).toThrow(
      /^tenant-router\.options\.tenants\.acme: must be a shard like eu-1$/,
    );
  });

  it('builds the stage once, with the parsed options (defaults applied)', async () => {
    let created = 0;
    const p = definePolicy({
      name: 'counted',
      schema: z.object({ n: z.number().default(3) }),
      create: ({ n }) => {
        created++;
        return (req) => req.setResponseHeader('x-n', String(n));
      },
    });
    const compiled = compilePolicy('counted', p, {});
    expect(compiled.ok && compiled.policy.phase).toBe('late');
    expect(compiled.ok && compiled.policy.stage.name).toBe('policy:counted');
    if (!compiled.ok) return;
    for (let i = 0; i < 2; i++) {
      const t = fakeContext();
      expect(await outcome(compiled.policy.stage, t.ctx)).toBeUndefined();
      expect(t.res.getHeader('x-n')).toBe('3');
    }
    expect(created).toBe(1);
  });

  it('turns a failing or wrong create() into a config issue', () => {
    const throws = definePolicy({
      name: 't',
      create: () => {
        throw new Error('no tenants file');
      },
    });
    expect(compilePolicy('t', throws, {})).toEqual({
      ok: false,
      issues: [{ path: 'policies.t', message: 'its create() failed: no tenants file' }],
    });
    const notAFunction = definePolicy({ name: 'n', create: () => 42 as never });
    expect(compilePolicy('n', notAFunction, {})).toEqual({
      ok: false,
      issues: [{ path: 'policies.n', message: 'its create() must return a function (req) => …' }],
    });
  });

  it('refuses a module export that is neither a policy nor a middleware factory', () => {
    const result = compilePolicy('odd', { default: 1 }, {});
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.issues[0]?.path).toBe('policies.odd.module');
  });
});

describe('definePolicy handlers (in-process)', () => {
  it('refuses with the Problem the handler throws', async () => {
    const stage = policyStage(tenantRouter, { tenants: { acme: 'eu-1' } });
    const t = fakeContext({ headers: { 'x-tenant': 'globex' } });
    let thrown: unknown;
    try {
      void stage.run(t.ctx);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(Problem);
    expect((thrown as Problem).slug).toBe('forbidden');
    expect((thrown as Problem).detail).toBe('Unknown tenant.');
    expect(await outcome(stage, fakeContext({ headers: { 'x-tenant': 'acme' } }).ctx)).toBeUndefined();
  });

  it('turns a plain Error into internal-error (never a crash, never the message to the client)', async () => {
    const p = await outcome(
      inline(() => {
        throw new Error('db password is hunter2');
      }, 'leaky'),
      fakeContext().ctx,
    );
    expect(p?.slug).toBe('internal-error');
    expect(p?.status).toBe(500);
    expect(p?.detail).toBe('An unexpected error occurred.');
    expect((p?.cause as Error).message).toBe('policy leaky failed: db password is hunter2');
  });

  it('turns a thrown non-Error into internal-error', async () => {
    const p = await outcome(
      inline(() => {
        // A policy author's mistake this test is about: throwing something that is not an Error.
        // eslint-disable-next-line @typescript-eslint/only-throw-error
        throw 'a string';
      }),
      fakeContext().ctx,
    );
    expect(p?.slug).toBe('internal-error');
  });

  it('returns nothing for a synchronous handler that passes', () => {
    const t = fakeContext();
    expect(inline(() => undefined).run(t.ctx)).toBeUndefined();
  });

  it('awaits an async handler, and maps its rejections the same way', async () => {
    const t = fakeContext();
    const ok = inline(async (req) => {
      await Promise.resolve();
      req.setUpstreamHeader('x-async', 'yes');
    });
    const pending = ok.run(t.ctx);
    expect(pending).toBeInstanceOf(Promise);
    await expect(pending).resolves.toBeUndefined();
    expect(t.ctx.upstreamHeaders).toEqual(['x-async', 'yes']);
    const refused = inline(() =>
      Promise.reject(new Problem('rate-limit-exceeded', { detail: 'Slow down.' })),
    );
    expect((await outcome(refused, fakeContext().ctx))?.detail).toBe('Slow down.');
    const broken = inline(() => Promise.reject(new TypeError('undefined is not a function')));
    expect((await outcome(broken, fakeContext().ctx))?.slug).toBe('internal-error');
  });

  it('adds upstream headers to ctx.upstreamHeaders, lower-cased', async () => {
    const stage = policyStage(tenantRouter, { tenants: { acme: 'eu-1' } });
    const t = fakeContext({ headers: { 'x-tenant': 'acme' } });
    await outcome(stage, t.ctx);
    expect(t.ctx.upstreamHeaders).toEqual(['x-tenant-shard', 'eu-1']);
    const mixed = fakeContext();
    await outcome(
      inline((req) => req.setUpstreamHeader('X-Region', 'eu')),
      mixed.ctx,
    );
    expect(mixed.ctx.upstreamHeaders).toEqual(['x-region', 'eu']);
  });

  it("refuses to set the gateway's own upstream headers (identity, correlation, forwarding, method overrides, a proxy's claims)", async () => {
    // The same set a header transform may not touch (PROTECTED_REQUEST_HEADERS).
    for (const name of [
      'x-consumer-id',
      'X-Request-Id',
      'x-tenant-id',
      'Host',
      'x-forwarded-for',
      'via',
      'x-http-method-override',
      'x-real-ip',
      'expect',
      'te',
    ]) {
      const t = fakeContext();
      const p = await outcome(
        inline((req) => req.setUpstreamHeader(name, 'forged')),
        t.ctx,
      );
      expect(p?.slug, name).toBe('internal-error');
      expect(String((p?.cause as Error).message)).toContain('is set by the gateway');
      expect(t.ctx.upstreamHeaders).toBeUndefined();
    }
  });

  it('refuses CR/LF in header values and names that are not tokens', async () => {
    for (const set of [
      (req: PolicyRequest) => req.setUpstreamHeader('x-a', 'ok\r\nx-consumer-id: admin'),
      (req: PolicyRequest) => req.setUpstreamHeader('x-a', 'line\nbreak'),
      (req: PolicyRequest) => req.setResponseHeader('x-a', 'ok\r\nSet-Cookie: s=1'),
      (req: PolicyRequest) => req.setUpstreamHeader('bad name', 'v'),
      (req: PolicyRequest) => req.setResponseHeader('x-a:', 'v'),
    ]) {
      const t = fakeContext();
      const p = await outcome(inline(set), t.ctx);
      expect(p?.slug).toBe('internal-error');
      expect(t.ctx.upstreamHeaders).toBeUndefined();
      expect(t.res.getHeader('x-a')).toBeUndefined();
    }
  });

  it('sets response headers the gateway keeps over an upstream copy', async () => {
    const t = fakeContext();
    await outcome(
      inline((req) => req.setResponseHeader('X-Policy', 'applied\tonce')),
      t.ctx,
    );
    expect(t.res.getHeader('x-policy')).toBe('applied\tonce');
    expect(t.ctx.responseHeaderNames).toEqual(['x-policy']);
  });

  it('shows the request and an API-key identity (claims {}) to the handler', async () => {
    let seen: Record<string, unknown> | undefined;
    const options: FakeRequestOptions = {
      method: 'post',
      url: '/v1/orders?expand=items',
      headers: { 'x-request-id': 'req-1', 'x-tenant': 'acme' },
      remoteAddress: '198.51.100.4',
      identity: apiKey,
      routeId: 'orders',
    };
    await outcome(
      inline((req) => {
        seen = {
          method: req.method,
          path: req.path,
          query: req.query,
          tenantHeader: req.headers['x-tenant'],
          requestId: req.requestId,
          routeId: req.routeId,
          clientIp: req.clientIp,
          identity: req.identity,
        };
      }),
      fakeContext(options).ctx,
    );
    expect(seen).toEqual({
      method: 'POST',
      path: '/v1/orders',
      query: '?expand=items',
      tenantHeader: 'acme',
      requestId: 'req-1',
      routeId: 'orders',
      clientIp: '198.51.100.4',
      identity: {
        consumerId: 'user-7',
        tenantId: 'acme',
        credentialId: 'key_1',
        authMethod: 'api-key',
        scopes: ['orders:read'],
        claims: {},
      },
    });
  });

  it("shows a JWT's claims, and no identity on an anonymous request", async () => {
    const seen: unknown[] = [];
    const stage = inline((req) => {
      seen.push(req.identity);
    });
    const claims = { sub: 'alice', org: 'acme', plan: 'pro' };
    await outcome(
      stage,
      fakeContext({ identity: { ...apiKey, method: 'jwt', subject: 'alice', claims } }).ctx,
    );
    await outcome(stage, fakeContext().ctx);
    expect(seen[0]).toMatchObject({ consumerId: 'alice', authMethod: 'jwt', claims });
    expect(seen[1]).toBeUndefined();
  });
});

describe('Express middleware factories (in-process)', () => {
  function mw(name: string, factory: (options: unknown) => Middleware, options: unknown = {}) {
    const compiled = compilePolicy(name, factory, options);
    if (!compiled.ok) throw new Error(JSON.stringify(compiled.issues));
    expect(compiled.policy.phase).toBe('late');
    return compiled.policy.stage;
  }

  it('calls the factory once with the options; next() goes on to the next stage', async () => {
    const given: unknown[] = [];
    const stage = mw(
      'pass',
      (options) => {
        given.push(options);
        return (req, _res, next) => {
          req.headers['x-seen'] = '1';
          next();
        };
      },
      { level: 2 },
    );
    const t = fakeContext({ headers: { 'x-request-id': 'req-mw' } });
    expect(await outcome(stage, t.ctx)).toBeUndefined();
    expect(t.ctx.handled).toBe(false);
    expect(t.req.headers['x-seen']).toBe('1');
    expect(t.res.getHeader('x-request-id')).toBe('req-mw');
    await outcome(stage, fakeContext().ctx);
    expect(given).toEqual([{ level: 2 }]);
  });

  it("maps next(err) with status 429 to rate-limit-exceeded, with the error's message and headers", async () => {
    const stage = mw('limiter', () => (_req, _res, next) => {
      const err = Object.assign(new Error('Too many requests, slow down.'), {
        status: 429,
        headers: { 'Retry-After': '30', 'X-Bad': 'a\r\nb' },
      });
      next(err);
    });
    const p = await outcome(stage, fakeContext().ctx);
    expect(p?.slug).toBe('rate-limit-exceeded');
    expect(p?.status).toBe(429);
    expect(p?.detail).toBe('Too many requests, slow down.');
    expect(p?.headers).toEqual({ 'retry-after': '30' });
  });

  it('maps next({status: 422}) to an about:blank problem with status 422', async () => {
    const stage = mw('validator', () => (_req, _res, next) => next({ status: 422 }));
    const p = await outcome(stage, fakeContext().ctx);
    expect(p?.slug).toBe('about:blank');
    expect(p?.status).toBe(422);
    expect(p?.title).toBe('Unprocessable Entity');
    expect(p?.detail).toBe('Unprocessable Entity');
  });

  it('ends the pipeline when the middleware answers itself (ctx.handled)', async () => {
    const stage = mw('teapot', () => (_req, res) => {
      res.statusCode = 418;
      res.setHeader('content-type', 'text/plain');
      res.end('short and stout');
    });
    const t = fakeContext({ headers: { 'x-request-id': 'req-tea' } });
    expect(await outcome(stage, t.ctx)).toBeUndefined();
    expect(t.ctx.handled).toBe(true);
    const res = await t.response();
    expect(res.status).toBe(418);
    expect(res.text).toBe('short and stout');
    expect(res.headers['x-request-id']).toBe('req-tea');
  });

  it('turns a middleware that throws into internal-error', async () => {
    const stage = mw('broken', () => () => {
      throw new Error('kaboom');
    });
    const p = await outcome(stage, fakeContext().ctx);
    expect(p?.slug).toBe('internal-error');
    expect(p?.detail).toBe('An unexpected error occurred.');
  });

  it("treats next('route') as going on", async () => {
    const stage = mw('skip', () => (_req, _res, next) => next('route'));
    const t = fakeContext();
    expect(await outcome(stage, t.ctx)).toBeUndefined();
    expect(t.ctx.handled).toBe(false);
  });

  it('reports a factory that refuses its options, or returns no middleware, as config issues', () => {
    const refuses = () => {
      throw new Error('limit must be a number');
    };
    expect(compilePolicy('f', refuses, { limit: 'x' })).toEqual({
      ok: false,
      issues: [
        {
          path: 'policies.f.options',
          message: 'the middleware factory refused them: limit must be a number',
        },
      ],
    });
    const result = compilePolicy('g', () => 'not a middleware', {});
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.issues[0]?.path).toBe('policies.g.module');
  });
});

describe('middlewareProblem', () => {
  it('maps 4xx statuses to the catalog, others to about:blank', () => {
    const slugOf = (err: unknown) => middlewareProblem('p', err).slug;
    expect(slugOf({ status: 401 })).toBe('invalid-credentials');
    expect(slugOf({ status: 403 })).toBe('forbidden');
    expect(slugOf({ statusCode: 404 })).toBe('not-found');
    expect(slugOf({ status: 429 })).toBe('rate-limit-exceeded');
    const teapot = middlewareProblem('p', { status: 418 });
    expect([teapot.slug, teapot.status, teapot.title]).toEqual(['about:blank', 418, "I'm a Teapot"]);
  });

  it('makes anything that is not a 4xx an internal-error', () => {
    for (const err of [
      { status: 500 },
      { status: 302 },
      { status: 404.5 },
      { status: '404' },
      null,
      'oops',
    ]) {
      const p = middlewareProblem('p', err);
      expect(p.slug, JSON.stringify(err)).toBe('internal-error');
      expect(p.status).toBe(500);
    }
  });

  it('keeps the message as detail unless expose is false, bounded to 1000 characters', () => {
    expect(middlewareProblem('p', { status: 403, message: 'Not your order.' }).detail).toBe(
      'Not your order.',
    );
    expect(middlewareProblem('p', { status: 403, message: 'internal id 42', expose: false }).detail).toBe(
      'Forbidden',
    );
    expect(middlewareProblem('p', { status: 400, message: 'x'.repeat(5000) }).detail).toHaveLength(1000);
    expect(middlewareProblem('p', { status: 400, message: '   ' }).detail).toBe('Bad Request');
  });

  it('passes a Problem through unchanged', () => {
    const original = new Problem('quota-exceeded');
    expect(middlewareProblem('p', original)).toBe(original);
  });
});
