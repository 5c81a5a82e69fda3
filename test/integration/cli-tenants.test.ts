import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../../src/cli/index.js';
import { startGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import {
  keyInvalidationChannel,
  sharedRedisUrl,
  uniquePrefix,
  waitForSubscribers,
} from '../helpers/redis.js';

/*
 * `tollgate tenants set-plan|show` (issue 21 item 3) and `keys create --env/--rate-limit`: on the
 * config's Redis store, seen at once by a running gateway on the same Redis.
 */

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function run(args: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(args, { out: (l) => out.push(l), err: (l) => err.push(l), env: {} });
  return { code, out, err };
}

function configFile(body: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-tenants-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'gw.yaml');
  writeFileSync(file, body);
  return file;
}

describe('tollgate tenants', () => {
  it('set-plan moves a running gateway’s keys of the tenant at once; show prints it (--json)', async () => {
    const prefix = uniquePrefix('cli-tenants');
    const plans = `plans: { free: { rateLimits: [{ name: per-key, by: key, limit: 2, windowSec: 60 }] }, blocked: { apiAccess: false } }`;
    const file = configFile(
      `redis: { url: "${sharedRedisUrl}", keyPrefix: "${prefix}" }\n${plans}\nroutes: []\n`,
    );
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGateway({
      redis: { url: sharedRedisUrl, keyPrefix: prefix },
      plans: {
        free: { rateLimits: [{ name: 'per-key', by: 'key', limit: 2, windowSec: 60 }] },
        blocked: { apiAccess: false },
      },
      routes: [{ id: 'r', path: '/v1/r', auth: { methods: ['apiKey'] }, upstream: { targets: [up.url] } }],
    });
    cleanup.push(() => gw.close());
    await waitForSubscribers(sharedRedisUrl, keyInvalidationChannel(prefix), 1);
    const key = (await gw.gateway.services.keys.create({ name: 'k', tenantId: 'acme' })).key;
    const call = () => request(`${gw.url}/v1/r`, { headers: { 'x-api-key': key } });
    expect((await call()).status).toBe(200);

    const set = await run(['tenants', 'set-plan', 'acme', 'blocked', '--config', file, '--json']);
    expect(set.err).toEqual([]);
    expect(set.code).toBe(0);
    expect(JSON.parse(set.out[0]!)).toMatchObject({ id: 'acme', plan: 'blocked' });
    await waitFor(async () => (await call()).status === 403, 2000, 10);

    const show = await run(['tenants', 'show', 'acme', '--config', file]);
    expect(show.code).toBe(0);
    expect(show.out.join('\n')).toMatch(/plan:\s+blocked/);
    expect((await run(['tenants', 'set-plan', 'acme', '--none', '--config', file])).code).toBe(0);
    await waitFor(async () => (await call()).status === 200, 2000, 10);
    expect(
      JSON.parse((await run(['tenants', 'show', 'acme', '--config', file, '--json'])).out[0]!).plan,
    ).toBeNull();

    // Bad input: exit 1 with a message, or 2 with the usage.
    const unknown = await run(['tenants', 'set-plan', 'acme', 'gold', '--config', file]);
    expect(unknown.code).toBe(1);
    expect(unknown.err.join('\n')).toContain('plan "gold" is not in the config');
    for (const plan of ['__proto__', 'constructor'])
      expect((await run(['tenants', 'set-plan', 'acme', plan, '--config', file])).code).toBe(1);
    expect((await run(['tenants', 'show', 'nobody', '--config', file])).code).toBe(3);
    expect((await run(['tenants', 'show', 't'.repeat(201), '--config', file])).code).toBe(1);
    expect((await run(['tenants', 'set-plan', 'acme', '--config', file])).code).toBe(2);
    expect((await run(['tenants', 'set-plan', 'acme', 'free', '--none', '--config', file])).code).toBe(2);
    expect((await run(['tenants', 'frobnicate'])).code).toBe(2);
    expect((await run(['tenants', 'show', 'acme', '--bogus'])).code).toBe(2);
    const help = await run(['tenants', 'set-plan', '--help']);
    expect(help.code).toBe(0);
    expect(help.out.join('\n')).toContain('Exit codes');
    expect((await run(['--help'])).out.join('\n')).toContain('tenants set-plan|show');
    // Without redis the CLI cannot reach a gateway's in-memory store.
    const memory = configFile('routes: []\n');
    const noRedis = await run(['tenants', 'set-plan', 'acme', '--none', '--config', memory]);
    expect(noRedis.code).toBe(1);
    expect(noRedis.err.join('\n')).toContain('PUT /tenants/{id}');
  });

  it('keys create --env test --rate-limit makes a test key with its own limit replacing the plan’s', async () => {
    const prefix = uniquePrefix('cli-keys-env');
    const file = configFile(
      `redis: { url: "${sharedRedisUrl}", keyPrefix: "${prefix}" }\nplans: { free: { rateLimits: [{ name: per-key, by: key, limit: 2, windowSec: 60 }] } }\nroutes: []\n`,
    );
    const r = await run([
      'keys',
      'create',
      '--config',
      file,
      '--name',
      'n',
      '--plan',
      'free',
      '--env',
      'test',
      '--rate-limit',
      'per-key:key:7:60',
      '--rate-limit',
      'burst:ip:3:1:1',
      '--json',
    ]);
    expect(r.err).toEqual([]);
    expect(r.code).toBe(0);
    const created = JSON.parse(r.out[0]!);
    expect(created.key).toMatch(/^tg_test_/);
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGateway({
      redis: { url: sharedRedisUrl, keyPrefix: prefix },
      plans: { free: { rateLimits: [{ name: 'per-key', by: 'key', limit: 2, windowSec: 60 }] } },
      routes: [{ id: 'r', path: '/v1/r', auth: { methods: ['apiKey'] }, upstream: { targets: [up.url] } }],
    });
    cleanup.push(() => gw.close());
    const res = await request(`${gw.url}/v1/r`, { headers: { 'x-api-key': created.key } });
    expect(res.status).toBe(200);
    expect(res.headers['ratelimit-policy']).toBe('"per-key";q=7;w=60, "burst";q=3;w=1');
    for (const bad of ['per-key:key:0:60', 'x:nobody:1:1', 'a:key:1', 'a:key:1:1:1:1', 'a:key:1:1:2'])
      expect(
        (await run(['keys', 'create', '--config', file, '--name', 'n', '--rate-limit', bad])).code,
      ).not.toBe(0);
    expect((await run(['keys', 'create', '--config', file, '--name', 'n', '--env', 'prod'])).code).toBe(2);
  });
});
