import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../core/clock.js';
import { fakeContext } from '../../core/fake-context.js';
import type { KeyCredential } from '../../core/identity.js';
import { MemoryKeyStore } from '../../keys/memory-store.js';
import { SecretBox } from '../../keys/secret-box.js';
import { KeyService } from '../../keys/service.js';
import { Problem } from '../../problems/problem.js';
import { createReadBodyStage } from '../body-limit/read-body.js';
import { MemoryReplayStore } from './replay-store.js';
import { replayCacheSchema } from './schema.js';
import { createSignatureStage, sign, signingString } from './signature.js';

// The README's test vector (a wire contract with client SDKs).
const VECTOR = {
  secret: 'whsec_test_vector_0123456789abcdef',
  timestamp: '1700000000',
  method: 'POST',
  target: '/v1/orders?expand=items',
  body: '{"sku":"A1","qty":2}',
  bodySha256: '1112f8eff10e2f0e91b61792e783a01ecfe877e42146a848c2a976040fb503d4',
  signature: 'v1=b7806ac6420ecf74a0194abe739b7b6e4c4d3ae912073a494221917c1fadbc3f',
};
const TOLERANCE_SEC = 300;

function setup(options: { mode?: 'optional' | 'required'; replay?: boolean; perKey?: number } = {}) {
  const clock = new ManualClock(Number(VECTOR.timestamp) * 1000);
  const keys = new KeyService({
    store: new MemoryKeyStore(),
    prefix: 'tg',
    box: new SecretBox('a-test-secret-box-key-of-32-characters'),
    clock,
  });
  const replay =
    options.replay === false
      ? undefined
      : new MemoryReplayStore(clock, replayCacheSchema.parse({ maxEntriesPerKey: options.perKey ?? 20_000 }));
  const stage = createSignatureStage(options.mode ?? 'required', {
    keys,
    replay,
    toleranceSec: TOLERANCE_SEC,
    clock,
  });
  const key = (id: string, secret: string | null = VECTOR.secret): KeyCredential => ({
    id,
    ownerId: null,
    signingSecret: secret === null ? null : keys.secretBox.seal(secret),
  });
  return { clock, keys, stage, key };
}

const readBody = createReadBodyStage(1024);

/** A request as the API-key stage would leave it: the key record set, the body read. */
async function signedRequest(
  s: ReturnType<typeof setup>,
  o: {
    record?: KeyCredential;
    headers?: Record<string, string>;
    method?: string;
    url?: string;
    body?: string;
  } = {},
) {
  const t = fakeContext({
    method: o.method ?? VECTOR.method,
    url: o.url ?? VECTOR.target,
    body: o.body ?? VECTOR.body,
    headers: o.headers ?? { 'x-timestamp': VECTOR.timestamp, 'x-signature': VECTOR.signature },
    clock: s.clock,
  });
  t.ctx.keyRecord = o.record ?? s.key('key_vector');
  await readBody.run(t.ctx);
  let problem: Problem | undefined;
  try {
    await s.stage.run(t.ctx);
  } catch (err) {
    if (!(err instanceof Problem)) throw err;
    problem = err;
  }
  return { t, problem };
}

describe('signing string and sign()', () => {
  it('gives the README test vector', () => {
    expect(signingString(VECTOR.timestamp, VECTOR.method, VECTOR.target, VECTOR.body)).toBe(
      `1700000000\nPOST\n/v1/orders?expand=items\n${VECTOR.bodySha256}`,
    );
    expect(sign(VECTOR.secret, VECTOR.timestamp, VECTOR.method, VECTOR.target, VECTOR.body)).toBe(
      VECTOR.signature,
    );
  });

  it('upper-cases the method and hashes a Buffer body like its string', () => {
    expect(sign(VECTOR.secret, VECTOR.timestamp, 'post', VECTOR.target, Buffer.from(VECTOR.body))).toBe(
      VECTOR.signature,
    );
  });

  it('signs an empty body as the SHA-256 of nothing', () => {
    expect(signingString('1', 'GET', '/', '')).toBe(`1\nGET\n/\n${createHash('sha256').digest('hex')}`);
  });
});

describe('signature stage (in-process)', () => {
  it('accepts the README test vector and notes the result', async () => {
    const s = setup();
    const { t, problem } = await signedRequest(s);
    expect(problem).toBeUndefined();
    expect(t.ctx.signature).toEqual({
      timestamp: VECTOR.timestamp,
      bodySha256: VECTOR.bodySha256,
      result: 'valid',
    });
  });

  it('accepts a signature in upper-case hex', async () => {
    const s = setup();
    const upper = 'v1=' + VECTOR.signature.slice(3).toUpperCase();
    const { problem } = await signedRequest(s, {
      headers: { 'x-timestamp': VECTOR.timestamp, 'x-signature': upper },
    });
    expect(problem).toBeUndefined();
  });

  it('refuses a signature made with another secret', async () => {
    const s = setup();
    const { t, problem } = await signedRequest(s, { record: s.key('key_other', 'whsec_some_other_secret') });
    expect(problem?.slug).toBe('invalid-signature');
    expect(problem?.status).toBe(401);
    expect(problem?.detail).toBe('The signature does not match the request.');
    expect(t.ctx.signature?.result).toBe('invalid-signature');
  });

  it('refuses a signature over another body, path or method', async () => {
    const s = setup();
    for (const change of [
      { body: '{"sku":"A1","qty":20}' },
      { url: '/v1/orders?expand=items&admin=1' },
      { method: 'PUT' },
    ]) {
      const { problem } = await signedRequest(s, change);
      expect(problem?.slug, JSON.stringify(change)).toBe('invalid-signature');
    }
  });

  it('refuses a malformed X-Signature', async () => {
    const s = setup();
    for (const value of ['b7806ac6', 'v1=xyz', `v2=${VECTOR.signature.slice(3)}`]) {
      const { problem } = await signedRequest(s, {
        headers: { 'x-timestamp': VECTOR.timestamp, 'x-signature': value },
      });
      expect(problem?.slug).toBe('invalid-signature');
      expect(problem?.detail).toBe('X-Signature must be "v1=<64 hex digits>".');
    }
  });

  it('refuses a signed request from a key without a signing secret', async () => {
    const s = setup();
    const { problem } = await signedRequest(s, { record: s.key('key_plain', null) });
    expect(problem?.slug).toBe('invalid-signature');
    expect(problem?.detail).toBe('This key has no signing secret.');
  });

  it('refuses a timestamp more than toleranceSec away, with server_time', async () => {
    const s = setup();
    s.clock.advance((TOLERANCE_SEC + 1) * 1000);
    const { t, problem } = await signedRequest(s);
    expect(problem?.slug).toBe('timestamp-skew');
    expect(problem?.status).toBe(401);
    expect(problem?.extensions).toEqual({ server_time: Number(VECTOR.timestamp) + TOLERANCE_SEC + 1 });
    expect(t.ctx.signature?.result).toBe('timestamp-skew');
  });

  it('accepts a timestamp exactly toleranceSec away, on either side', async () => {
    const s = setup({ replay: false });
    s.clock.advance(TOLERANCE_SEC * 1000);
    expect((await signedRequest(s)).problem).toBeUndefined();
    s.clock.set((Number(VECTOR.timestamp) - TOLERANCE_SEC) * 1000);
    expect((await signedRequest(s)).problem).toBeUndefined();
    s.clock.advance(-1);
    expect((await signedRequest(s)).problem?.slug).toBe('timestamp-skew');
  });

  it('refuses a missing or non-integer X-Timestamp as timestamp-skew', async () => {
    const s = setup();
    const missing = await signedRequest(s, { headers: { 'x-signature': VECTOR.signature } });
    expect(missing.problem?.slug).toBe('timestamp-skew');
    expect(missing.problem?.detail).toBe('X-Timestamp is missing.');
    expect(missing.problem?.extensions).toEqual({ server_time: Number(VECTOR.timestamp) });
    const fraction = await signedRequest(s, {
      headers: { 'x-timestamp': '1700000000.0', 'x-signature': VECTOR.signature },
    });
    expect(fraction.problem?.slug).toBe('timestamp-skew');
    expect(fraction.problem?.detail).toBe('X-Timestamp must be whole seconds since the epoch.');
  });

  it('refuses the same signed request a second time (replayed-request)', async () => {
    const s = setup();
    expect((await signedRequest(s)).problem).toBeUndefined();
    s.clock.advance(10_000);
    const { t, problem } = await signedRequest(s);
    expect(problem?.slug).toBe('replayed-request');
    expect(problem?.status).toBe(401);
    expect(t.ctx.signature?.result).toBe('replayed');
  });

  it('does not let a replay pass by changing the case of the hex', async () => {
    const s = setup();
    expect((await signedRequest(s)).problem).toBeUndefined();
    const upper = 'v1=' + VECTOR.signature.slice(3).toUpperCase();
    const { problem } = await signedRequest(s, {
      headers: { 'x-timestamp': VECTOR.timestamp, 'x-signature': upper },
    });
    expect(problem?.slug).toBe('replayed-request');
  });

  it('accepts a repeat when replay protection is off', async () => {
    const s = setup({ replay: false });
    expect((await signedRequest(s)).problem).toBeUndefined();
    expect((await signedRequest(s)).problem).toBeUndefined();
  });

  it('answers 503 with Retry-After when a key has filled its share of the replay store', async () => {
    const s = setup({ perKey: 1 });
    expect((await signedRequest(s)).problem).toBeUndefined();
    const ts = String(Number(VECTOR.timestamp) + 1);
    const { problem } = await signedRequest(s, {
      headers: {
        'x-timestamp': ts,
        'x-signature': sign(VECTOR.secret, ts, VECTOR.method, VECTOR.target, VECTOR.body),
      },
    });
    expect(problem?.slug).toBe('service-unavailable');
    expect(problem?.headers?.['retry-after']).toBe(String(2 * TOLERANCE_SEC));
  });

  it('refuses an unsigned API-key request when required', async () => {
    const s = setup({ mode: 'required' });
    const { t, problem } = await signedRequest(s, { headers: {} });
    expect(problem?.slug).toBe('invalid-signature');
    expect(problem?.detail).toBe('This route needs a signed request (X-Signature, X-Timestamp).');
    expect(t.ctx.signature).toBeUndefined();
  });

  it('lets an unsigned request through when optional, but still checks a signature that is sent', async () => {
    const s = setup({ mode: 'optional' });
    const unsigned = await signedRequest(s, { headers: {} });
    expect(unsigned.problem).toBeUndefined();
    expect(unsigned.t.ctx.signature).toBeUndefined();
    const wrong = await signedRequest(s, { record: s.key('key_other', 'whsec_some_other_secret') });
    expect(wrong.problem?.slug).toBe('invalid-signature');
  });

  it('does not apply to a request without an API key (a JWT carries no signing secret)', () => {
    const s = setup({ mode: 'required' });
    const t = fakeContext({ method: 'POST', url: '/v1/orders', clock: s.clock });
    expect(s.stage.run(t.ctx)).toBeUndefined();
  });
});
