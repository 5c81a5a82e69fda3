import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../core/clock.js';
import { fakeContext, type FakeContext } from '../../core/fake-context.js';
import type { Identity } from '../../core/identity.js';
import { Problem } from '../../problems/problem.js';
import { createReadBodyStage } from '../body-limit/read-body.js';
import { createIdempotencyStage, parseIdempotencyKey } from './idempotency.js';
import { idempotencySchema, type IdempotencyConfig } from './schema.js';
import { MemoryIdempotencyStore } from './store.js';

const LOCK_TTL_MS = 30_000;
const BODY = '{"amount":100}';
const readBody = createReadBodyStage(1024);

function setup(config: Partial<IdempotencyConfig> = {}) {
  const clock = new ManualClock();
  const store = new MemoryIdempotencyStore(clock);
  const stage = createIdempotencyStage({
    config: idempotencySchema.parse(config),
    store,
    lockTtlMs: LOCK_TTL_MS,
    failOpen: false,
  });
  /** A request through read-body and the idempotency stage; the Problem it was refused with, if any. */
  const request = async (
    o: {
      key?: string | string[];
      body?: string;
      method?: string;
      url?: string;
      identity?: Identity;
      requestId?: string;
    } = {},
  ): Promise<{ t: FakeContext; problem: Problem | undefined }> => {
    const headers: Record<string, string | string[]> = {};
    if (o.key !== undefined) headers['idempotency-key'] = o.key;
    if (o.requestId !== undefined) headers['x-request-id'] = o.requestId;
    const t = fakeContext({
      method: o.method ?? 'POST',
      url: o.url ?? '/v1/payments',
      body: o.body ?? BODY,
      headers,
      clock,
      ...(o.identity ? { identity: o.identity } : {}),
    });
    let problem: Problem | undefined;
    try {
      await readBody.run(t.ctx);
      await stage.run(t.ctx);
    } catch (err) {
      if (!(err instanceof Problem)) throw err;
      problem = err;
    }
    return { t, problem };
  };
  return { clock, store, stage, request };
}

/** Answers a request as the upstream (or a mock) would, and lets its close hooks run. */
async function answer(t: FakeContext, status: number, body: string, headers: Record<string, string> = {}) {
  t.res.writeHead(status, { 'content-type': 'application/json', ...headers });
  t.res.end(body);
  return t.response();
}

const identity = (credentialId: string): Identity => ({
  method: 'api-key',
  credentialId,
  subject: credentialId,
  tenant: undefined,
  scopes: [],
  plan: undefined,
  rateLimits: undefined,
  remaining: undefined,
});

describe('parseIdempotencyKey', () => {
  it('reads a bare token or an RFC 8941 sf-string', () => {
    expect(parseIdempotencyKey(['Idempotency-Key', 'abc-123'], 'abc-123')).toBe('abc-123');
    expect(parseIdempotencyKey(['Idempotency-Key', '"abc-123"'], '"abc-123"')).toBe('abc-123');
    expect(parseIdempotencyKey(['Idempotency-Key', '"a\\"b"'], '"a\\"b"')).toBe('a"b');
    expect(parseIdempotencyKey([], undefined)).toBeUndefined();
  });
});

describe('idempotency stage (in-process)', () => {
  it('ignores methods it does not apply to, and requests without a key', async () => {
    const s = setup();
    const get = await s.request({ method: 'GET', key: 'k1' });
    expect(get.problem).toBeUndefined();
    expect(get.t.ctx.upstreamSink).toBeUndefined();
    const none = await s.request();
    expect(none.problem).toBeUndefined();
    expect(none.t.ctx.upstreamSink).toBeUndefined();
    expect(s.store.size.entries).toBe(0);
  });

  it('refuses a request without a key when required (validation-failed)', async () => {
    const s = setup({ required: true });
    const { problem } = await s.request();
    expect(problem?.slug).toBe('validation-failed');
    expect(problem?.status).toBe(400);
    expect(problem?.extensions).toEqual({
      errors: [{ pointer: '/headers/idempotency-key', message: 'is required' }],
    });
  });

  it('refuses malformed and repeated keys with validation-failed and a pointer', async () => {
    const s = setup();
    const cases: Array<[string | string[], string]> = [
      ['', 'must be 1 to 255 characters'],
      ['x'.repeat(256), 'must be 1 to 255 characters'],
      ['ключ', 'must be visible ASCII characters'],
      ['has space', 'must be visible ASCII characters'],
      ['"unterminated', 'an unterminated quoted string'],
      ['"a"b"', 'an unescaped quote inside the quoted string'],
      [['k1', 'k2'], 'sent more than once'],
    ];
    for (const [key, message] of cases) {
      const { problem } = await s.request({ key });
      expect(problem?.slug, JSON.stringify(key)).toBe('validation-failed');
      expect(problem?.extensions).toEqual({ errors: [{ pointer: '/headers/idempotency-key', message }] });
      expect(problem?.detail).toBe(`Invalid Idempotency-Key: ${message}.`);
    }
    expect(s.store.size.entries).toBe(0);
  });

  it('lets the first request with a key run, and stores its answer once it finished', async () => {
    const s = setup();
    const { t, problem } = await s.request({ key: 'k1' });
    expect(problem).toBeUndefined();
    expect(t.ctx.handled).toBe(false);
    expect(t.ctx.upstreamSink).toBeDefined();
    expect(s.store.size.entries).toBe(1);
    const first = await answer(t, 201, '{"id":"pay_1"}', { location: '/v1/payments/pay_1' });
    expect(first.status).toBe(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    // Kept under the caller's scope (the client address here) and the key's hash.
    const storeKey = `idem:{ip:127.0.0.1}:${createHash('sha256').update('k1').digest('hex')}`;
    const stored = s.store.begin(storeKey, 'another-fingerprint', LOCK_TTL_MS);
    expect(stored.state).toBe('done');
    if (stored.state !== 'done') return;
    expect(stored.response.status).toBe(201);
    expect(Buffer.from(stored.response.body, 'base64').toString()).toBe('{"id":"pay_1"}');
    expect(stored.response.headers).toEqual([
      'content-type',
      'application/json',
      'location',
      '/v1/payments/pay_1',
    ]);
  });

  it('replays the stored answer to a repeat with Idempotent-Replayed: true and its own request id', async () => {
    const s = setup();
    const first = await s.request({ key: 'k1' });
    await answer(first.t, 201, '{"id":"pay_1"}', {
      location: '/v1/payments/pay_1',
      'set-cookie': 'session=1',
      'x-request-id': first.t.ctx.requestId,
    });
    const repeat = await s.request({ key: 'k1', requestId: 'retry-1' });
    expect(repeat.problem).toBeUndefined();
    expect(repeat.t.ctx.handled).toBe(true);
    expect(repeat.t.ctx.idempotentReplay).toBe(true);
    const res = await repeat.t.response();
    expect(res.status).toBe(201);
    expect(res.json()).toEqual({ id: 'pay_1' });
    expect(res.headers['idempotent-replayed']).toBe('true');
    expect(res.headers.location).toBe('/v1/payments/pay_1');
    expect(res.headers['content-type']).toBe('application/json');
    expect(res.headers['x-request-id']).toBe('retry-1');
    expect(res.headers['content-length']).toBe(String('{"id":"pay_1"}'.length));
    // Meant for one client once: not replayed.
    expect(res.headers['set-cookie']).toBeUndefined();
  });

  it('treats a quoted key as the same key', async () => {
    const s = setup();
    const first = await s.request({ key: 'k1' });
    await answer(first.t, 200, '{}');
    const repeat = await s.request({ key: '"k1"' });
    expect(repeat.t.ctx.idempotentReplay).toBe(true);
    await repeat.t.response();
  });

  it('refuses the key with a different body, path or method: idempotency-conflict payload-mismatch', async () => {
    const s = setup();
    const first = await s.request({ key: 'k1' });
    await answer(first.t, 201, '{}');
    for (const change of [{ body: '{"amount":999}' }, { url: '/v1/payments?dry=1' }, { method: 'PATCH' }]) {
      const { t, problem } = await s.request({ key: 'k1', ...change });
      expect(problem?.slug, JSON.stringify(change)).toBe('idempotency-conflict');
      expect(problem?.status).toBe(409);
      expect(problem?.extensions).toEqual({ reason: 'payload-mismatch' });
      expect(t.ctx.handled).toBe(false);
    }
  });

  it('refuses a repeat while the first still runs: in-flight with Retry-After', async () => {
    const s = setup();
    const first = await s.request({ key: 'k1' });
    const concurrent = await s.request({ key: 'k1' });
    expect(concurrent.problem?.slug).toBe('idempotency-conflict');
    expect(concurrent.problem?.extensions).toEqual({ reason: 'in-flight' });
    expect(concurrent.problem?.headers).toEqual({ 'retry-after': '1' });
    // A different request with the key in flight is a mismatch, not in-flight.
    const other = await s.request({ key: 'k1', body: '{}' });
    expect(other.problem?.extensions).toEqual({ reason: 'payload-mismatch' });
    await answer(first.t, 200, '{}');
    const after = await s.request({ key: 'k1' });
    expect(after.t.ctx.idempotentReplay).toBe(true);
    await after.t.response();
  });

  it('does not keep a 5xx answer: the key is free for a retry', async () => {
    const s = setup();
    const first = await s.request({ key: 'k1' });
    await answer(first.t, 502, '{"title":"Bad gateway"}');
    expect(s.store.size.entries).toBe(0);
    const retry = await s.request({ key: 'k1' });
    expect(retry.problem).toBeUndefined();
    expect(retry.t.ctx.idempotentReplay).toBe(false);
    await answer(retry.t, 200, '{}');
  });

  it('keeps a 5xx answer with storeServerErrors', async () => {
    const s = setup({ storeServerErrors: true });
    const first = await s.request({ key: 'k1' });
    await answer(first.t, 504, '{}');
    const repeat = await s.request({ key: 'k1' });
    expect((await repeat.t.response()).status).toBe(504);
  });

  it('does not keep an answer over maxResponseBytes', async () => {
    const s = setup({ maxResponseBytes: 8 });
    const first = await s.request({ key: 'k1' });
    await answer(first.t, 200, '{"long":"body"}');
    expect(s.store.size.entries).toBe(0);
  });

  it('releases the key when the client leaves before the request was sent', async () => {
    const s = setup();
    const first = await s.request({ key: 'k1' });
    first.t.abort();
    expect(s.store.size.entries).toBe(0);
    const retry = await s.request({ key: 'k1' });
    expect(retry.problem).toBeUndefined();
    retry.t.abort();
  });

  it('scopes keys to the credential (or the client address when anonymous)', async () => {
    const s = setup();
    const a = await s.request({ key: 'k1', identity: identity('key_a') });
    await answer(a.t, 201, '{"who":"a"}');
    const b = await s.request({ key: 'k1', identity: identity('key_b') });
    expect(b.problem).toBeUndefined();
    expect(b.t.ctx.idempotentReplay).toBe(false);
    await answer(b.t, 201, '{"who":"b"}');
    const anon = await s.request({ key: 'k1' });
    expect(anon.t.ctx.idempotentReplay).toBe(false);
    anon.t.abort();
    const againA = await s.request({ key: 'k1', identity: identity('key_a') });
    expect((await againA.t.response()).json()).toEqual({ who: 'a' });
  });

  it('forgets a stored answer after ttlSec on the injected clock', async () => {
    const s = setup({ ttlSec: 60 });
    const first = await s.request({ key: 'k1' });
    await answer(first.t, 200, '{}');
    s.clock.advance(59_999);
    const within = await s.request({ key: 'k1' });
    expect(within.t.ctx.idempotentReplay).toBe(true);
    await within.t.response();
    s.clock.advance(1);
    const after = await s.request({ key: 'k1' });
    expect(after.problem).toBeUndefined();
    expect(after.t.ctx.idempotentReplay).toBe(false);
    after.t.abort();
  });

  it('frees a lock whose holder never finished once lockTtlMs passed', async () => {
    const s = setup();
    const first = await s.request({ key: 'k1' });
    s.clock.advance(LOCK_TTL_MS);
    const second = await s.request({ key: 'k1' });
    expect(second.problem).toBeUndefined();
    first.t.abort();
    second.t.abort();
  });

  it("rewrites a replayed problem body's request_id and instance to the repeat's", async () => {
    const s = setup();
    const first = await s.request({ key: 'k1', requestId: 'first-1' });
    const body = JSON.stringify({
      type: 'https://tollgate.dev/problems/forbidden',
      status: 403,
      request_id: 'first-1',
      instance: '/requests/first-1',
    });
    await answer(first.t, 403, body, { 'content-type': 'application/problem+json' });
    const repeat = await s.request({ key: 'k1', requestId: 'second-2' });
    const res = await repeat.t.response();
    expect(res.status).toBe(403);
    expect(res.json()).toMatchObject({ request_id: 'second-2', instance: '/requests/second-2' });
    expect(res.headers['content-length']).toBe(String(res.body.length));
  });
});
