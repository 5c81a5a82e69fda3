import { afterEach, describe, expect, it } from 'vitest';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor, type Reply } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { sign } from '../../src/policies/signature/signature.js';

/*
 * SPEC §10 (issue 18 item 8), through real sockets: on a signed route with idempotency, a
 * byte-identical retry of a signed request that carries an Idempotency-Key gets the stored
 * response (or 409 in-flight), not 401 replayed-request. The attack it must not open: a replayed
 * signed request without a stored answer for that same request is still refused, and never
 * reaches the upstream a second time.
 */

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

type Send = (override?: Record<string, string | undefined>) => Promise<Reply>;

interface Setup {
  gw: RunningGateway;
  up: Upstream;
  /** How the upstream answers: set per test. */
  answer: { status: number; hold: Promise<void> | undefined };
  /**
   * A signed request (fresh timestamp); the returned function sends the same bytes each time,
   * optionally with headers changed (as an attacker replaying a captured request could).
   */
  signed(body: string, idempotencyKey?: string, path?: string, skewSec?: number): Send;
}

async function setup(store: Record<string, unknown>): Promise<Setup> {
  const answer: Setup['answer'] = { status: 201, hold: undefined };
  const up = await startUpstream((_req, res, body) => {
    void (answer.hold ?? Promise.resolve()).then(() => {
      const text = JSON.stringify({ created: body.toString('utf8'), n: up.calls.length });
      res.writeHead(answer.status, { 'content-type': 'application/json' });
      res.end(text);
    });
  });
  cleanup.push(() => up.close());
  const gw = await startGateway(
    {
      ...store,
      routes: [
        {
          id: 'payments',
          path: '/v1/payments',
          auth: { methods: ['apiKey'], hmac: 'required' },
          idempotency: { ttlSec: 600 },
          upstream: { targets: [up.url] },
        },
        {
          id: 'reports',
          path: '/v1/reports',
          methods: ['POST'],
          auth: { methods: ['apiKey'], hmac: 'required' },
          upstream: { targets: [up.url] },
        },
      ],
    } as any,
    { env: { TOLLGATE_SECRET_KEY: 'signed-idempotency-secret-key-0123456789' } },
  );
  cleanup.push(() => gw.close());
  const created = await gw.gateway.services.keys.create({ name: 'signer', hmac: true });
  return {
    gw,
    up,
    answer,
    signed(body, idempotencyKey, path = '/v1/payments', skewSec = 0) {
      const ts = String(Math.floor(Date.now() / 1000) + skewSec);
      const headers: Record<string, string> = {
        'x-api-key': created.key,
        'x-timestamp': ts,
        'x-signature': sign(created.signingSecret!, ts, 'POST', path, body),
        'content-type': 'application/json',
      };
      if (idempotencyKey !== undefined) headers['idempotency-key'] = idempotencyKey;
      return (override = {}) => {
        const sent: Record<string, string> = { ...headers };
        for (const [k, v] of Object.entries(override))
          if (v === undefined) delete sent[k];
          else sent[k] = v;
        return request(`${gw.url}${path}`, { method: 'POST', body, headers: sent });
      };
    },
  };
}

describe.each([
  ['memory', () => ({})],
  [
    'redis',
    () => ({
      redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('signed-idem'), commandTimeoutMs: 1000 },
    }),
  ],
])('signed requests and idempotency (%s store)', (_name, store) => {
  it('a byte-identical signed retry with an Idempotency-Key gets the stored response, not 401', async () => {
    const s = await setup(store());
    const pay = s.signed('{"amount":100}', 'pay-1');
    const first = await pay();
    expect(first.status).toBe(201);
    const retry = await pay();
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(retry.text).toBe(first.text);
    expect(s.up.calls).toHaveLength(1);
    // The audit record says what happened to the repeated signature.
    const id = String(retry.headers['x-request-id']);
    await waitFor(async () => (await s.gw.gateway.services.audit.get(id)) !== undefined, 2000, 10);
    const audit = await s.gw.gateway.services.audit.get(id);
    expect(audit!.signature?.result).toBe('replayed-idempotent');
  });

  it('409 in-flight for a signed retry while the first request runs', async () => {
    const s = await setup(store());
    let release!: () => void;
    s.answer.hold = new Promise<void>((r) => (release = r));
    const pay = s.signed('{"amount":7}', 'pay-2');
    const first = pay();
    await waitFor(() => s.up.calls.length === 1, 2000, 5);
    const during = await pay();
    expectProblem(during, 'idempotency-conflict');
    expect(during.json().reason).toBe('in-flight');
    release();
    expect((await first).status).toBe(201);
    expect((await pay()).headers['idempotent-replayed']).toBe('true');
    expect(s.up.calls).toHaveLength(1);
  });

  it('still refuses replays without a stored answer for that same request (401 replayed-request)', async () => {
    const s = await setup(store());
    // Captured without an Idempotency-Key: replayed bare, or with a key added (it is not signed).
    const bare = s.signed('{"amount":1}');
    expect((await bare()).status).toBe(201);
    expectProblem(await bare(), 'replayed-request');
    expectProblem(await bare({ 'idempotency-key': 'fresh-1' }), 'replayed-request');
    // Captured with key A, replayed under another key B (or none): nothing kept under B, refused.
    const withKey = s.signed('{"amount":2}', 'pay-a');
    expect((await withKey()).status).toBe(201);
    expectProblem(await withKey({ 'idempotency-key': 'pay-b' }), 'replayed-request');
    expectProblem(await withKey({ 'idempotency-key': undefined }), 'replayed-request');
    expectProblem(await withKey({ 'idempotency-key': '"bad' }), 'validation-failed');
    // Under its own key it gets only the answer already given, and the key B stays free.
    expect((await withKey()).headers['idempotent-replayed']).toBe('true');
    expect((await s.signed('{"amount":9}', 'pay-b')()).status).toBe(201);
    expect(s.up.calls).toHaveLength(3);

    // The first answer was a 500: not kept, so a byte-identical retry is a replay (re-sign to retry)…
    s.answer.status = 500;
    const failing = s.signed('{"amount":3}', 'pay-c');
    expect((await failing()).status).toBe(500);
    s.answer.status = 201;
    expectProblem(await failing(), 'replayed-request');
    expect(s.up.calls).toHaveLength(4);
    // …and the refused replay did not take the key: a retry signed anew (another timestamp) runs.
    expect((await s.signed('{"amount":3}', 'pay-c', '/v1/payments', -2)()).status).toBe(201);
    expect(s.up.calls).toHaveLength(5);

    // On a route without idempotency a repeated signature is always a replay.
    const report = s.signed('{"q":1}', 'r-1', '/v1/reports');
    expect((await report()).status).toBe(201);
    expectProblem(await report(), 'replayed-request');
    expect(s.up.calls).toHaveLength(6);
  });
});
