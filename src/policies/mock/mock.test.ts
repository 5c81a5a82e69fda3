import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../core/clock.js';
import { fakeContext } from '../../core/fake-context.js';
import { securityHeaders } from '../../shared/security-headers.js';
import { createMockStage } from './mock.js';
import { mockSchema } from './schema.js';

const settle = async () => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
};

describe('mock stage (in-process)', () => {
  it('answers the configured status, headers and JSON body with the request id', async () => {
    const stage = createMockStage(
      mockSchema.parse({ status: 201, headers: { 'x-demo': '1' }, body: { ok: true } }),
      securityHeaders(),
    );
    const t = fakeContext({ headers: { 'x-request-id': 'mock-1' } });
    expect(stage.run(t.ctx)).toBeUndefined();
    expect(t.ctx.handled).toBe(true);
    const res = await t.response();
    expect(res.status).toBe(201);
    expect(res.headers['x-demo']).toBe('1');
    expect(res.headers['x-request-id']).toBe('mock-1');
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(res.json()).toEqual({ ok: true });
  });
});

describe('mock stage: delayMs, jitterMs (in-process)', () => {
  it('answers after delayMs on the clock', async () => {
    const clock = new ManualClock();
    const stage = createMockStage(mockSchema.parse({ body: 'ok', delayMs: 100 }), securityHeaders(), {
      clock,
    });
    const t = fakeContext({ clock });
    const pending = stage.run(t.ctx);
    expect(pending).toBeInstanceOf(Promise);
    await settle();
    expect(t.res.headersSent).toBe(false);
    clock.advance(99);
    await settle();
    expect(t.res.headersSent).toBe(false);
    clock.advance(1);
    await pending;
    const res = await t.response();
    expect(res.status).toBe(200);
    expect(res.text).toBe('ok');
  });

  it('adds up to jitterMs, uniformly, from the random source', async () => {
    const clock = new ManualClock();
    let next = 0;
    const draws = [0, 0.999999, 0.5];
    const stage = createMockStage(mockSchema.parse({ delayMs: 10, jitterMs: 20 }), securityHeaders(), {
      clock,
      random: () => draws[next++]!,
    });
    for (const expected of [10, 30, 20]) {
      const t = fakeContext({ clock });
      const pending = stage.run(t.ctx);
      clock.advance(expected - 1);
      await settle();
      expect(t.res.headersSent).toBe(false);
      clock.advance(1);
      await pending;
      expect(t.res.headersSent).toBe(true);
    }
  });

  it('a client that leaves during the delay gets nothing and leaves no timer', async () => {
    const clock = new ManualClock();
    const stage = createMockStage(mockSchema.parse({ delayMs: 30_000 }), securityHeaders(), { clock });
    const t = fakeContext({ clock });
    const pending = stage.run(t.ctx);
    expect(clock.pendingTimers).toBe(1);
    t.abort();
    await pending;
    expect(clock.pendingTimers).toBe(0);
    expect(t.ctx.handled).toBe(true);
    expect(t.res.headersSent).toBe(false);
  });

  it('without delay or echo it stays synchronous', () => {
    const stage = createMockStage(mockSchema.parse({ body: { ok: true } }), securityHeaders());
    expect(stage.run(fakeContext().ctx)).toBeUndefined();
  });
});

describe('mock stage: echo (in-process)', () => {
  const KEY = 'tg_live_abcdefghijklmnopqrstuvwxyz0123456789';
  const echoStage = (extra: Record<string, unknown> = {}, o: Parameters<typeof createMockStage>[2] = {}) =>
    createMockStage(mockSchema.parse({ echo: true, ...extra }), securityHeaders(), {
      apiKeyHeader: 'X-Api-Key',
      apiKeyPrefix: 'tg',
      ...o,
    });

  it('answers method, path, query, headers and a JSON body as JSON', async () => {
    const t = fakeContext({
      method: 'POST',
      url: '/v1/echo/7?a=1&b=2&a=3',
      headers: { 'content-type': 'application/json', 'x-demo': 'yes', 'x-request-id': 'echo-1' },
      body: JSON.stringify({ hello: 'world', n: [1, 2] }),
    });
    await echoStage({ status: 201, headers: { 'x-mock': '1' } }).run(t.ctx);
    const res = await t.response();
    expect(res.status).toBe(201);
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(res.headers['x-mock']).toBe('1');
    expect(res.headers['x-request-id']).toBe('echo-1');
    const doc = res.json() as Record<string, any>;
    expect(doc.method).toBe('POST');
    expect(doc.path).toBe('/v1/echo/7');
    expect(doc.query).toEqual({ a: ['1', '3'], b: '2' });
    expect(doc.headers['x-demo']).toBe('yes');
    expect(doc.headers.host).toBe('gateway.test');
    expect(doc.body).toEqual({ hello: 'world', n: [1, 2] });
    expect(doc.bodyEncoding).toBe('json');
    expect(Number(res.headers['content-length'])).toBe(res.body.length);
  });

  it('echoes text bodies as text, binary as base64, and no body as null', async () => {
    const text = fakeContext({ method: 'PUT', headers: { 'content-type': 'text/plain' }, body: 'héllo' });
    await echoStage().run(text.ctx);
    expect((await text.response()).json()).toMatchObject({ body: 'héllo', bodyEncoding: 'utf8' });

    const binary = Buffer.from([0xff, 0xfe, 0x00, 0x80]);
    const bin = fakeContext({
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: binary,
    });
    await echoStage().run(bin.ctx);
    expect((await bin.response()).json()).toMatchObject({
      body: binary.toString('base64'),
      bodyEncoding: 'base64',
    });

    const badJson = fakeContext({
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{no',
    });
    await echoStage().run(badJson.ctx);
    expect((await badJson.response()).json()).toMatchObject({ body: '{no', bodyEncoding: 'utf8' });

    const none = fakeContext();
    expect(echoStage().run(none.ctx)).toBeUndefined();
    expect((await none.response()).json()).toMatchObject({ method: 'GET', body: null });
  });

  it('never reflects a credential: Authorization, Cookie, the API key header, access_token, or a key anywhere', async () => {
    const t = fakeContext({
      method: 'POST',
      url: `/e?access_token=secret-token&k=${KEY}&ok=1`,
      headers: {
        authorization: 'Bearer eyJhbGciOi.secret.jwt',
        'proxy-authorization': 'Basic c2VjcmV0',
        cookie: 'session=secret',
        'x-api-key': KEY,
        'X-Signature': 'v1=abc',
        'x-forwarded-key': `key ${KEY} here`,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ note: `my key is ${KEY}` }),
    });
    await echoStage().run(t.ctx);
    const res = await t.response();
    expect(res.text).not.toContain(KEY);
    expect(res.text).not.toContain('secret');
    const doc = res.json() as Record<string, any>;
    for (const h of ['authorization', 'proxy-authorization', 'cookie', 'x-api-key', 'x-signature'])
      expect(doc.headers[h]).toBe('[redacted]');
    expect(doc.headers['x-forwarded-key']).toBe('key [redacted] here');
    expect(doc.query).toEqual({ access_token: '[redacted]', k: '[redacted]', ok: '1' });
    expect(doc.body).toEqual({ note: 'my key is [redacted]' });
  });

  it('redacts the configured API key header in any spelling', async () => {
    const t = fakeContext({ headers: { 'X-Tollgate-Key': 'opaque-secret' } });
    await createMockStage(mockSchema.parse({ echo: true }), securityHeaders(), {
      apiKeyHeader: 'x-tollgate-key',
    }).run(t.ctx);
    expect(((await t.response()).json() as any).headers['x-tollgate-key']).toBe('[redacted]');
  });

  it('a "__proto__" query parameter, header or body member is data, not a prototype', async () => {
    const t = fakeContext({
      method: 'POST',
      url: '/e?__proto__=polluted&constructor=x',
      headers: { 'content-type': 'application/json' },
      body: '{"__proto__":{"polluted":true}}',
    });
    await echoStage().run(t.ctx);
    const text = (await t.response()).text;
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(text).toContain('"__proto__":"polluted"');
    expect(text).toContain('"body":{"__proto__":{"polluted":true}}');
  });

  it('reads the body within the body limit: over it is 413 with Connection: close', async () => {
    const t = fakeContext({
      method: 'POST',
      headers: { 'transfer-encoding': 'chunked' },
      body: 'x'.repeat(65),
    });
    const stage = echoStage({}, { bodyLimit: 64 });
    await expect(stage.run(t.ctx)).rejects.toMatchObject({
      slug: 'payload-too-large',
      headers: { connection: 'close' },
    });
    const ok = fakeContext({
      method: 'POST',
      headers: { 'transfer-encoding': 'chunked' },
      body: 'x'.repeat(64),
    });
    await stage.run(ok.ctx);
    expect(((await ok.response()).json() as any).body).toBe('x'.repeat(64));
  });

  it('a body something else already consumed is echoed as none instead of waiting for ever', async () => {
    const t = fakeContext({ method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'abc' });
    t.req.resume();
    await new Promise((resolve) => t.req.once('end', resolve));
    expect(echoStage().run(t.ctx)).toBeUndefined();
    expect(((await t.response()).json() as any).body).toBeNull();
  });

  it('echoes the body an earlier stage buffered (idempotency, HMAC)', async () => {
    const t = fakeContext({ method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'abc' });
    t.ctx.rawBody = Buffer.from('abc');
    expect(echoStage().run(t.ctx)).toBeUndefined();
    expect(((await t.response()).json() as any).body).toBe('abc');
  });
});

describe('mock schema', () => {
  const paths = (input: unknown) => {
    const r = mockSchema.safeParse(input);
    expect(r.success).toBe(false);
    return r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
  };
  it('refuses echo with a body, negative or too long delays', () => {
    expect(paths({ echo: true, body: 'x' })).toEqual(['echo: cannot be combined with body']);
    expect(paths({ delayMs: -1 })[0]).toMatch(/^delayMs: /);
    expect(paths({ jitterMs: 1.5 })[0]).toMatch(/^jitterMs: /);
    expect(paths({ delayMs: 60_000, jitterMs: 1 })).toEqual([
      'jitterMs: delayMs + jitterMs must not exceed 60000',
    ]);
    expect(paths({ echo: 'yes' })[0]).toMatch(/^echo: /);
  });
});
