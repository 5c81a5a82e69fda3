import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../../src/cli/index.js';
import { startGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
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
