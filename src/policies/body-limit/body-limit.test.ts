import { describe, expect, it } from 'vitest';
import { fakeContext } from '../../core/fake-context.js';
import { Problem } from '../../problems/problem.js';
import { createBodyLimitStage } from './body-limit.js';
import { createReadBodyStage } from './read-body.js';
import { DEFAULT_BODY_BYTES, bodyBytesSchema, routeLimitsSchema } from './schema.js';

describe('body-limit stage (in-process)', () => {
  it('lets a body within the limit through without reading it', () => {
    const stage = createBodyLimitStage(10);
    const t = fakeContext({ method: 'POST', body: '0123456789' });
    expect(stage.run(t.ctx)).toBeUndefined();
    expect(t.ctx.rawBody).toBeUndefined();
    expect(t.req.readableLength).toBeGreaterThan(0);
  });

  it('refuses a Content-Length over the limit with 413 and connection: close', () => {
    const stage = createBodyLimitStage(10);
    const t = fakeContext({ method: 'POST', body: '01234567890' });
    let thrown: unknown;
    try {
      void stage.run(t.ctx);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(Problem);
    const p = thrown as Problem;
    expect(p.slug).toBe('payload-too-large');
    expect(p.status).toBe(413);
    expect(p.headers).toEqual({ connection: 'close' });
    expect(p.detail).toBe('The request body is larger than 10 bytes.');
  });

  it('judges the declared length before a byte is read', () => {
    const stage = createBodyLimitStage(100);
    const t = fakeContext({ method: 'POST', headers: { 'content-length': '5000' }, body: 'tiny' });
    expect(() => stage.run(t.ctx)).toThrow(Problem);
  });

  it('passes a request without Content-Length (counted as it streams elsewhere)', () => {
    const stage = createBodyLimitStage(1);
    const t = fakeContext({ method: 'GET' });
    expect(stage.run(t.ctx)).toBeUndefined();
  });

  it('defaults the limit to 1 MiB in the schema', () => {
    expect(DEFAULT_BODY_BYTES).toBe(1_048_576);
    expect(bodyBytesSchema.parse(2048)).toBe(2048);
    expect(bodyBytesSchema.safeParse(0).success).toBe(false);
  });

  it('a route limit has no default of its own (unset: the top-level limit applies)', () => {
    expect(routeLimitsSchema.parse({})).toEqual({});
    expect(routeLimitsSchema.parse({ bodyBytes: '52428800' })).toEqual({ bodyBytes: 52_428_800 });
    expect(routeLimitsSchema.safeParse({ bodyBytes: 0 }).success).toBe(false);
    expect(routeLimitsSchema.safeParse({ other: 1 }).success).toBe(false);
  });
});

describe('read-body stage (in-process)', () => {
  it('buffers the body into ctx.rawBody and counts bytesIn', async () => {
    const stage = createReadBodyStage(1024);
    const t = fakeContext({ method: 'POST', body: '{"sku":"A1","qty":2}' });
    await stage.run(t.ctx);
    expect(t.ctx.rawBody?.toString('utf8')).toBe('{"sku":"A1","qty":2}');
    expect(t.ctx.bytesIn).toBe(20);
  });

  it('reads a body of exactly the limit', async () => {
    const stage = createReadBodyStage(4);
    const t = fakeContext({ method: 'POST', body: 'abcd' });
    await stage.run(t.ctx);
    expect(t.ctx.rawBody?.toString()).toBe('abcd');
  });

  it('refuses a body over the limit with 413 and connection: close', async () => {
    const stage = createReadBodyStage(4);
    // A chunked body (no Content-Length): only reading finds it too large.
    const t = fakeContext({ method: 'POST', headers: { 'transfer-encoding': 'chunked' }, body: 'abcde' });
    const err = await Promise.resolve(stage.run(t.ctx)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Problem);
    expect((err as Problem).slug).toBe('payload-too-large');
    expect((err as Problem).status).toBe(413);
    expect((err as Problem).headers).toEqual({ connection: 'close' });
    expect(t.ctx.rawBody).toBeUndefined();
  });

  it('gives a request without a body an empty rawBody, synchronously', () => {
    const stage = createReadBodyStage(4);
    const t = fakeContext({ method: 'GET' });
    expect(stage.run(t.ctx)).toBeUndefined();
    expect(t.ctx.rawBody).toEqual(Buffer.alloc(0));
  });

  it('reads an empty body with Content-Length: 0 as empty', async () => {
    const stage = createReadBodyStage(4);
    const t = fakeContext({ method: 'POST', body: '' });
    await stage.run(t.ctx);
    expect(t.ctx.rawBody?.length).toBe(0);
  });

  it('answers 400 bad-request when the body stream fails', async () => {
    const stage = createReadBodyStage(1024);
    const t = fakeContext({ method: 'POST', headers: { 'transfer-encoding': 'chunked' } });
    // The fake request is already complete; a fresh, failing stream stands in for a client reset.
    const pending = Promise.resolve(stage.run(t.ctx)).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.req.destroy(new Error('socket hang up'));
    const err = await pending;
    expect(err).toBeInstanceOf(Problem);
    expect((err as Problem).slug).toBe('bad-request');
  });

  it('tells a client waiting on 100-continue to send its body', async () => {
    const stage = createReadBodyStage(1024);
    const t = fakeContext({ method: 'POST', headers: { expect: '100-continue' }, body: 'x' });
    t.ctx.expectsContinue = true;
    await stage.run(t.ctx);
    expect(t.ctx.expectsContinue).toBe(false);
  });
});
