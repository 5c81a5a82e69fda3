import { afterEach, describe, expect, it } from 'vitest';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { createLogger } from '../../src/observability/logger.js';
import { validateConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { OpenApiValidator } from '../helpers/openapi.js';

const ALICE = 'alice-admin-token-0123456789';
const PLAIN = 'plain-admin-token-0123456789';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

function capturedLogger() {
  const lines: string[] = [];
  const logger = createLogger({
    level: 'info',
    format: 'json',
    destination: { write: (s: string) => void lines.push(s) },
  });
  return { logger, lines };
}

const call = (g: RunningGateway, token: string | undefined, method: string, path: string, body?: unknown) =>
  request(`${g.adminUrl}${path}`, {
    method,
    headers: {
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      'content-type': 'application/json',
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

const cfg = (extra: Partial<ConfigInput> = {}): ConfigInput => ({
  admin: { tokens: [{ name: 'alice', token: ALICE }, PLAIN] },
  routes: [{ id: 'demo', path: '/demo', auth: { methods: ['apiKey'] }, mock: { body: { ok: true } } }],
  ...extra,
});

describe('admin tokens with names (SPEC §11)', () => {
  const paths = (tokens: unknown[]) => {
    const r = validateConfig({ admin: { tokens } }, {});
    return r.ok ? [] : r.issues.map((i) => i.path);
  };
  it('takes {name, token} and plain strings; names must be unique and tokens long', () => {
    expect(paths([{ name: 'alice', token: ALICE }, PLAIN])).toEqual([]);
    expect(paths([{ name: 'alice', token: 'short' }])).toEqual(['admin.tokens[0].token']);
    expect(paths([{ name: 'has space', token: ALICE }])).toEqual(['admin.tokens[0].name']);
    expect(
      paths([
        { name: 'a', token: ALICE },
        { name: 'a', token: PLAIN },
      ]),
    ).toEqual(['admin.tokens[1].name']);
    // A plain string at position 2 is `token-2`: a named token cannot take that name.
    expect(paths([{ name: 'token-2', token: ALICE }, PLAIN])).toEqual(['admin.tokens[1]']);
    expect(paths([{ name: 'alice', token: ALICE, extra: 1 }])[0]).toMatch(/^admin\.tokens\[0\]/);
  });
});

describe.each([
  ['memory', () => ({})],
  ['redis', () => ({ redis: { url: sharedRedisUrl, keyPrefix: uniquePrefix('admin-audit') } })],
])('admin actions audited (%s)', (_name, extra) => {
  it('records every state-changing call with its actor, action, target and outcome; refused credentials too', async () => {
    const { logger, lines } = capturedLogger();
    const g = await startGateway(cfg(extra()), { logger });
    cleanup.push(() => g.close());
    const created = (await call(g, ALICE, 'POST', '/keys', { name: 'k' })).json();
    expect(created.key).toMatch(/^tg_live_/);
    expect((await call(g, PLAIN, 'PATCH', `/keys/${created.id}`, { name: 'k2' })).status).toBe(200);
    const rotated = (
      await call(g, ALICE, 'POST', `/keys/${created.id}/rotate`, { gracePeriodSec: 0 })
    ).json();
    expect((await call(g, PLAIN, 'DELETE', `/keys/${rotated.id}`)).status).toBe(204);
    expect((await call(g, PLAIN, 'DELETE', '/keys/key_nope')).status).toBe(404);
    expect((await call(g, 'wrong-token-0123456789', 'DELETE', `/keys/${created.id}`)).status).toBe(401);
    expect((await call(g, undefined, 'GET', '/keys')).status).toBe(401);
    expect((await call(g, created.key, 'GET', '/keys')).status).toBe(403);
    // A gateway made from an object has no file to reload: 404, audited as a failed reload.
    expect((await call(g, ALICE, 'POST', '/reload')).status).toBe(404);
    // Reads are not audited.
    expect((await call(g, ALICE, 'GET', '/keys')).status).toBe(200);

    const list = async () =>
      (await call(g, ALICE, 'GET', '/requests?kind=admin&limit=100')).json().items as Array<
        Record<string, any>
      >;
    await waitFor(async () => (await list()).length >= 9, 5000);
    const items = (await list()).reverse();
    expect(items.map((r) => [r.actor, r.action, r.target, r.outcome])).toEqual([
      ['alice', 'key.create', created.id, 'success'],
      ['token-2', 'key.update', created.id, 'success'],
      ['alice', 'key.rotate', created.id, 'success'],
      ['token-2', 'key.revoke', rotated.id, 'success'],
      ['token-2', 'key.revoke', 'key_nope', 'failure'],
      [null, 'key.revoke', created.id, 'refused'],
      [null, 'read', null, 'refused'],
      [null, 'read', null, 'refused'],
      ['alice', 'config.reload', null, 'failure'],
    ]);
    expect(items.every((r) => r.kind === 'admin')).toBe(true);
    const openapi = new OpenApiValidator((await call(g, ALICE, 'GET', '/openapi.json')).json());
    openapi.check('GET', '/requests', await call(g, ALICE, 'GET', '/requests?kind=admin'));
    openapi.check('GET', '/requests/{id}', await call(g, ALICE, 'GET', `/requests/${items[0]!.request_id}`));
    expect(items.slice(5, 8).map((r) => r.problem)).toEqual([
      'invalid-credentials',
      'missing-credentials',
      'forbidden',
    ]);
    // Filters; the default list is the request trail, without admin records.
    const alice = (await call(g, ALICE, 'GET', '/requests?kind=admin&actor=alice')).json().items;
    expect(alice.map((r: any) => r.action).sort()).toEqual(['config.reload', 'key.create', 'key.rotate']);
    const plain = (await call(g, ALICE, 'GET', '/requests')).json().items;
    expect(plain.some((r: any) => r.kind === 'admin')).toBe(false);
    expect((await call(g, ALICE, 'GET', '/requests?kind=bogus')).status).toBe(400);
    // One admin record by its request id.
    const one = (await call(g, ALICE, 'GET', `/requests/${items[0]!.request_id}`)).json();
    expect(one).toMatchObject({ kind: 'admin', action: 'key.create', actor: 'alice' });

    // An access-log line for every admin call, reads included; no token, no plaintext key in any line.
    const adminLines = lines.filter((l) => l.includes('"msg":"admin request"')).map((l) => JSON.parse(l));
    expect(adminLines.length).toBeGreaterThanOrEqual(10);
    expect(adminLines.find((l) => l.action === 'key.create')).toMatchObject({ actor: 'alice', status: 201 });
    const all = lines.join('\n') + JSON.stringify(await list());
    for (const secret of [ALICE, PLAIN, 'wrong-token-0123456789', created.key, rotated.key])
      expect(all).not.toContain(secret);
  });
});
