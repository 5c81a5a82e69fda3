import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { fakeContext } from '../../core/fake-context.js';
import { formatPath, fromZodIssues } from '../../config/issues.js';
import { createHeadersStage } from './headers.js';
import { headersSchema } from './schema.js';

const issuesOf = (input: unknown) => {
  const r = headersSchema.safeParse(input);
  return r.success ? [] : fromZodIssues(r.error.issues);
};

describe('headers stage (in-process)', () => {
  it('sets and removes upstream request headers, client copies in every spelling included', () => {
    const stage = createHeadersStage(
      headersSchema.parse({
        request: { set: { 'X-Api-Version': '2' }, remove: ['Cookie', 'x-debug'] },
      }),
    );
    const t = fakeContext({
      headers: {
        cookie: 'session=1',
        'x-debug': '1',
        x_debug: '1',
        X_Api_Version: '9',
        'x-api-version': '9',
        accept: 'application/json',
      },
    });
    void stage.run(t.ctx);
    expect(t.req.headers.cookie).toBeUndefined();
    expect(t.req.headers['x-debug']).toBeUndefined();
    expect(t.req.headers.x_debug).toBeUndefined();
    expect(t.req.headers.x_api_version).toBeUndefined();
    expect(t.req.headers['x-api-version']).toBeUndefined();
    expect(t.req.headers.accept).toBe('application/json');
    expect(t.ctx.upstreamHeaders).toEqual(['x-api-version', '2']);
  });

  it('sets response headers as the gateway’s answer and marks removed ones', async () => {
    const stage = createHeadersStage(
      headersSchema.parse({ response: { set: { 'Cache-Control': 'no-cache' }, remove: ['X-Backend-Node'] } }),
    );
    const t = fakeContext();
    void stage.run(t.ctx);
    expect(t.ctx.responseHeaderNames).toEqual(['cache-control', 'x-backend-node']);
    t.res.end('ok');
    expect((await t.response()).headers['cache-control']).toBe('no-cache');
  });

  it('a route with nothing to do touches nothing', () => {
    const stage = createHeadersStage(headersSchema.parse({}));
    const t = fakeContext({ headers: { 'x-a': '1' } });
    void stage.run(t.ctx);
    expect(t.ctx.upstreamHeaders).toBeUndefined();
    expect(t.ctx.responseHeaderNames).toBeUndefined();
    expect(t.req.headers['x-a']).toBe('1');
  });
});

describe('headers schema: the attacks and typos it refuses, with their paths', () => {
  it.each([
    'X-Request-Id',
    'x-consumer-id',
    'X_Tenant_Id',
    'X-Scopes',
    'x-credential-id',
    'X-Consumer-Issuer',
    'x-auth-method',
    'Via',
    'Host',
    'X-Forwarded-For',
    'Forwarded',
    'traceparent',
    'X-HTTP-Method-Override',
    'Transfer-Encoding',
    'Content-Length',
    'Connection',
  ])('request %s is the gateway’s', (name) => {
    for (const verb of ['set', 'remove'] as const) {
      const input = verb === 'set' ? { set: { [name]: 'x' } } : { remove: [name] };
      const issues = issuesOf({ request: input });
      expect(issues.map((i) => i.path)).toEqual([
        formatPath(verb === 'set' ? ['request', 'set', name] : ['request', 'remove', 0]),
      ]);
      expect(issues[0]!.message).toContain("gateway's own");
    }
  });

  it.each([
    'X-Request-Id',
    'RateLimit',
    'RateLimit-Policy',
    'Retry-After',
    'Via',
    'Content-Type',
    'Content-Length',
  ])('response %s is the gateway’s', (name) => {
    expect(issuesOf({ response: { set: { [name]: 'x' } } })[0]?.message).toContain("gateway's own");
    expect(issuesOf({ response: { remove: [name] } })[0]?.path).toBe('response.remove[0]');
  });

  it('CORS headers belong to cors', () => {
    expect(issuesOf({ response: { set: { 'Access-Control-Allow-Origin': '*' } } })[0]?.message).toContain(
      'cors',
    );
  });

  it('a header name with a space or a colon, and a value with CR/LF, are refused with their paths', () => {
    expect(issuesOf({ request: { set: { 'X Bad': '1' } } })).toEqual([
      { path: 'request.set["X Bad"]', message: expect.stringContaining('header name') },
    ]);
    expect(issuesOf({ response: { remove: ['x:y'] } }).map((i) => i.path)).toEqual(['response.remove[0]']);
    expect(issuesOf({ request: { set: { 'X-A': 'a\r\nX-Consumer-Id: admin' } } }).map((i) => i.path)).toEqual(
      ['request.set.X-A'],
    );
    expect(issuesOf({ response: { set: { 'X-A': 'a\nb' } } }).map((i) => i.path)).toEqual([
      'response.set.X-A',
    ]);
    expect(issuesOf({ request: { sets: {} } }).map((i) => i.path)).toEqual(['request.sets']);
  });

  it('a name both set and removed, or twice in two spellings, is refused', () => {
    expect(issuesOf({ request: { set: { 'X-A': '1' }, remove: ['x_a'] } }).map((i) => i.path)).toEqual([
      'request.remove[0]',
    ]);
    expect(issuesOf({ response: { set: { 'X-A': '1', 'x-a': '2' } } }).map((i) => i.path)).toEqual([
      'response.set.x-a',
    ]);
  });

  it('any value Node would refuse to write is refused at load (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 20 }), (value) => {
        const ok = headersSchema.safeParse({ response: { set: { 'X-A': value } } }).success;
        expect(ok).toBe(/^[\t\x20-\x7e]*$/.test(value));
      }),
      { numRuns: 300 },
    );
  });
});
