import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../../src/cli/index.js';
import { startGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { startReceiver } from '../helpers/webhooks.js';
import { startUpstream } from '../helpers/upstream.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { sign } from '../../src/policies/signature/signature.js';
import { PROCESS_TEST_MS, spawnCli } from '../helpers/cli.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function run(args: string[], env: Record<string, string> = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(args, { out: (l) => out.push(l), err: (l) => err.push(l), env });
  return { code, out, err };
}

describe('tollgate keys create', { timeout: PROCESS_TEST_MS }, () => {
  it('creates a key in the Redis store that a gateway on the same Redis accepts, with a signing secret', async () => {
    const prefix = uniquePrefix('cli-keys');
    const secretKey = 'cli-test-secret-key-0123456789abcdef';
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-keys-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'gw.yaml');
    writeFileSync(
      file,
      `redis: { url: "${sharedRedisUrl}", keyPrefix: "${prefix}" }\nplans: { gold: {} }\nroutes: []\n`,
    );
    const r = await run(
      [
        'keys',
        'create',
        '--config',
        file,
        '--name',
        'deploy-bot',
        '--scopes',
        'a,b',
        '--plan',
        'gold',
        '--owner',
        'u1',
        '--tenant',
        't1',
        '--hmac',
        '--json',
      ],
      {
        TOLLGATE_SECRET_KEY: secretKey,
      },
    );
    expect(r.err).toEqual([]);
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.out[0]!);
    expect(printed.key).toMatch(/^tg_live_/);
    expect(printed.signingSecret).toMatch(/^whsec_/);

    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGateway(
      {
        redis: { url: sharedRedisUrl, keyPrefix: prefix },
        plans: { gold: {} },
        routes: [
          {
            id: 'r',
            path: '/r',
            auth: { methods: ['apiKey'], scopes: ['a'], hmac: 'required' },
            upstream: { targets: [up.url] },
          },
        ],
      },
      { env: { TOLLGATE_SECRET_KEY: secretKey } },
    );
    cleanup.push(() => gw.close());
    const ts = String(Math.floor(Date.now() / 1000));
    const res = await request(`${gw.url}/r`, {
      headers: {
        'x-api-key': printed.key,
        'x-timestamp': ts,
        'x-signature': sign(printed.signingSecret, ts, 'GET', '/r', ''),
      },
    });
    expect(res.status).toBe(200);
    expect(up.calls[0]!.headers).toMatchObject({
      'x-consumer-id': 'u1',
      'x-tenant-id': 't1',
      'x-scopes': 'a b',
    });
  });

  it('raises key.created as the admin API does: a gateway on the same Redis delivers it, signed', async () => {
    const prefix = uniquePrefix('cli-events');
    const secret = `whsec_${randomBytes(32).toString('base64')}`;
    const rx = await startReceiver(secret);
    cleanup.push(() => rx.close());
    const webhooks = [{ url: rx.url, secret, events: ['key.created'] }];
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-keys-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'gw.yaml');
    writeFileSync(
      file,
      JSON.stringify({ redis: { url: sharedRedisUrl, keyPrefix: prefix }, webhooks, routes: [] }),
    );
    // A running gateway with the same store and webhooks: it delivers what the CLI queued.
    const gw = await startGateway({ redis: { url: sharedRedisUrl, keyPrefix: prefix }, webhooks } as any);
    cleanup.push(() => gw.close());
    const r = await run(['keys', 'create', '--config', file, '--name', 'from-cli', '--json']);
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.out[0]!);
    await waitFor(() => rx.received.length >= 1, 10_000);
    expect(rx.rejected).toEqual([]);
    const [event] = rx.received.map((x) => x.event);
    expect(event!.type).toBe('key.created');
    expect(event!.data.key).toMatchObject({ id: printed.id, name: 'from-cli' });
    expect(rx.received[0]!.body).not.toContain(printed.key);
  });

  it('prints the key once in text form from the real binary', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-keys-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'gw.yaml');
    writeFileSync(file, `redis: { url: "${sharedRedisUrl}", keyPrefix: "${uniquePrefix('cli-bin')}" }\n`);
    const cli = spawnCli(['keys', 'create', '--config', file, '--name', 'x']);
    expect(await cli.exited).toBe(0);
    const text = cli.lines.join('\n');
    expect(text).toMatch(/key: +tg_live_[0-9A-Za-z]{36}/);
    expect(text).toContain('will not be shown again');
  });

  it('refuses without Redis, with an unknown plan, with --hmac but no secret key, and without --name', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-keys-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const memory = join(dir, 'mem.yaml');
    writeFileSync(memory, 'routes: []\n');
    expect((await run(['keys', 'create', '--config', memory, '--name', 'x'])).code).toBe(1);
    const redis = join(dir, 'redis.yaml');
    writeFileSync(redis, `redis: { url: "${sharedRedisUrl}", keyPrefix: "${uniquePrefix('cli-refuse')}" }\n`);
    expect((await run(['keys', 'create', '--config', redis, '--name', 'x', '--plan', 'nope'])).code).toBe(1);
    expect((await run(['keys', 'create', '--config', redis, '--name', 'x', '--hmac'])).code).toBe(1);
    expect((await run(['keys', 'create', '--config', redis])).code).toBe(2);
  });
});

describe('tollgate keys list|show|update|rotate|revoke', { timeout: PROCESS_TEST_MS }, () => {
  function redisConfig(extra = ''): string {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-keys-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'gw.yaml');
    writeFileSync(
      file,
      `redis: { url: "${sharedRedisUrl}", keyPrefix: "${uniquePrefix('cli-manage')}" }\nplans: { gold: {}, free: {} }\nroutes: []\n${extra}`,
    );
    return file;
  }

  it('lists, shows, updates, rotates and revokes a key in the Redis store, text and --json', async () => {
    const file = redisConfig();
    const created = JSON.parse(
      (await run(['keys', 'create', '--config', file, '--name', 'ci', '--plan', 'gold', '--json'])).out[0]!,
    ) as { id: string; key: string };

    const list = await run(['keys', 'list', '--config', file, '--json']);
    expect(list.code).toBe(0);
    const page = JSON.parse(list.out[0]!) as { items: Array<Record<string, unknown>>; nextCursor: null };
    expect(page.items.map((i) => i.id)).toEqual([created.id]);
    expect(page.items[0]).toMatchObject({ name: 'ci', plan: 'gold', enabled: true });
    // Masked, never the key or its hash.
    expect(list.out[0]).not.toContain(created.key);
    expect(page.items[0]).not.toHaveProperty('hash');
    const table = await run(['keys', 'list', '--config', file]);
    expect(table.out[0]).toMatch(/^ID +NAME +KEY +ENABLED/);
    expect(table.out[1]).toContain(created.id);

    const show = await run(['keys', 'show', created.id, '--config', file]);
    expect(show.code).toBe(0);
    expect(show.out.join('\n')).toMatch(/plan: +gold/);

    const update = await run([
      'keys',
      'update',
      created.id,
      '--config',
      file,
      '--plan',
      'free',
      '--disable',
      '--remaining',
      '5',
      '--json',
    ]);
    expect(update.err).toEqual([]);
    expect(JSON.parse(update.out[0]!)).toMatchObject({ plan: 'free', enabled: false, remaining: 5 });
    // Validated as the admin API validates: an unknown plan, a bad number, a bad date.
    expect((await run(['keys', 'update', created.id, '--config', file, '--plan', 'nope'])).code).toBe(1);
    expect((await run(['keys', 'update', created.id, '--config', file, '--remaining', '-1'])).code).toBe(2);
    expect((await run(['keys', 'update', created.id, '--config', file, '--expires', 'soon'])).code).toBe(2);
    expect((await run(['keys', 'update', created.id, '--config', file])).code).toBe(2);

    const rotate = await run(['keys', 'rotate', created.id, '--config', file, '--grace', '60', '--json']);
    expect(rotate.code).toBe(0);
    const rotated = JSON.parse(rotate.out[0]!) as { id: string; key: string; previous: { id: string } };
    expect(rotated.key).toMatch(/^tg_live_/);
    expect(rotated.previous.id).toBe(created.id);
    expect((await run(['keys', 'rotate', created.id, '--config', file, '--grace', '999999999'])).code).toBe(
      2,
    );

    const revoke = await run(['keys', 'revoke', rotated.id, '--config', file]);
    expect(revoke.code).toBe(0);
    expect(revoke.out).toEqual([`revoked ${rotated.id}`]);
    // Gone: every command that names it exits 3.
    for (const command of ['show', 'revoke', 'rotate'])
      expect((await run(['keys', command, rotated.id, '--config', file])).code).toBe(3);
    expect((await run(['keys', 'update', rotated.id, '--config', file, '--name', 'x'])).code).toBe(3);
    const left = JSON.parse((await run(['keys', 'list', '--config', file, '--json'])).out[0]!) as {
      items: Array<{ id: string }>;
    };
    expect(left.items.map((i) => i.id)).toEqual([created.id]);
  });

  it('a key revoked by the CLI stops authenticating at a gateway on the same Redis', async () => {
    const prefix = uniquePrefix('cli-revoke');
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-keys-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'gw.yaml');
    writeFileSync(file, `redis: { url: "${sharedRedisUrl}", keyPrefix: "${prefix}" }\nroutes: []\n`);
    const created = JSON.parse(
      (await run(['keys', 'create', '--config', file, '--name', 'x', '--json'])).out[0]!,
    ) as {
      id: string;
      key: string;
    };
    const gw = await startGateway({
      redis: { url: sharedRedisUrl, keyPrefix: prefix },
      auth: { apiKeys: { cacheTtlMs: 0 } },
      routes: [{ id: 'm', path: '/m', auth: { methods: ['apiKey'] }, mock: { body: { ok: true } } }],
    });
    cleanup.push(() => gw.close());
    expect((await request(`${gw.url}/m`, { headers: { 'x-api-key': created.key } })).status).toBe(200);
    expect((await run(['keys', 'revoke', created.id, '--config', file])).code).toBe(0);
    expect((await request(`${gw.url}/m`, { headers: { 'x-api-key': created.key } })).status).toBe(401);
  });

  it('refuses without Redis (exit 1) and without an id or with extra words (exit 2)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-keys-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const memory = join(dir, 'mem.yaml');
    writeFileSync(memory, 'routes: []\n');
    const r = await run(['keys', 'list', '--config', memory]);
    expect(r.code).toBe(1);
    expect(r.err.join('\n')).toContain('admin API');
    expect((await run(['keys', 'show', '--config', memory])).code).toBe(2);
    expect((await run(['keys', 'show', 'a', 'b', '--config', memory])).code).toBe(2);
    expect((await run(['keys', 'list', '--config', memory, '--limit', '0'])).code).toBe(2);
    expect((await run(['keys', 'frobnicate'])).code).toBe(2);
  });
});
