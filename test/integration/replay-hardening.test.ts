import { afterEach, describe, expect, it } from 'vitest';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { sign } from '../../src/policies/signature/signature.js';
import { validateConfig } from '../../src/config/load.js';

/*
 * Version 2 hardening of replay protection: the in-memory store of seen signatures is partitioned
 * per key and refuses when full, so one key's flood cannot make another key's captured request
 * replayable.
 */

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function signedGateway(replayCache: Record<string, number>) {
  const up = await startUpstream();
  cleanup.push(() => up.close());
  const gw = await startGateway(
    {
      auth: { hmac: { replayCache } },
      routes: [
        {
          id: 'orders',
          path: '/v1/orders',
          auth: { methods: ['apiKey'], hmac: 'required' },
          upstream: { targets: [up.url] },
        },
      ],
    },
    { env: { TOLLGATE_SECRET_KEY: 'replay-hardening-secret-key-0123456789' } },
  );
  cleanup.push(() => gw.close());
  return { gw, up };
}

async function signer(gw: RunningGateway) {
  const created = await gw.gateway.services.keys.create({ name: 'signer', hmac: true });
  let n = 0;
  /** A fresh signed request (a new body each time), and a way to send it again byte for byte. */
  return () => {
    const body = JSON.stringify({ n: n++ });
    const ts = String(Math.floor(Date.now() / 1000));
    const headers = {
      'x-api-key': created.key,
      'x-timestamp': ts,
      'x-signature': sign(created.signingSecret!, ts, 'POST', '/v1/orders', body),
      'content-type': 'application/json',
    };
    return () => request(`${gw.url}/v1/orders`, { method: 'POST', body, headers });
  };
}

describe('replay protection: the in-memory store is partitioned per key (auth.hmac.replayCache)', () => {
  it('a key that floods its share is refused with 503 alone; another key’s captured request still cannot be replayed', async () => {
    const { gw, up } = await signedGateway({ maxEntriesPerKey: 2, maxEntries: 100 });
    const victim = await signer(gw);
    const attacker = await signer(gw);
    const captured = victim();
    expect((await captured()).status).toBe(200);
    expect((await attacker()()).status).toBe(200);
    expect((await attacker()()).status).toBe(200);
    const refused = await attacker()();
    expectProblem(refused, 'service-unavailable');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expectProblem(await captured(), 'replayed-request');
    expect((await victim()()).status).toBe(200);
    expect(up.calls).toHaveLength(4);
  });

  it('a full store refuses new signed requests (503) rather than forgetting one still inside its window', async () => {
    const { gw } = await signedGateway({ maxEntriesPerKey: 10, maxEntries: 2 });
    const a = await signer(gw);
    const b = await signer(gw);
    const first = a();
    expect((await first()).status).toBe(200);
    expect((await b()()).status).toBe(200);
    expectProblem(await a()(), 'service-unavailable');
    expectProblem(await first(), 'replayed-request');
  });

  it('validates the settings with their paths', () => {
    const result = validateConfig({ auth: { hmac: { replayCache: { maxEntriesPerKey: 0 } } } }, {});
    expect(result.ok).toBe(false);
    expect(result.ok ? [] : result.issues.map((i) => i.path)).toContain(
      'auth.hmac.replayCache.maxEntriesPerKey',
    );
  });
});
