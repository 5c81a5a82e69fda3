import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { createSecretKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { Redis } from 'ioredis';
import { runCli } from '../../src/cli/index.js';
import { spawnCli, type RunningCli } from '../helpers/cli.js';
import { request, waitFor, type Reply } from '../helpers/http.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';

const TOKEN = 'workers-hardening-admin-token';
const JWT_SECRET = 'workers-hardening-jwt-secret-0123456789';
const ISSUER = 'https://idp.workers.test/';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

function tempFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-workers-hardening-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, text);
  return file;
}

const yaml = (redis: string) => `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0, tokens: ["${TOKEN}"] }
${redis}
workers: 2
auth:
  jwt: [ { issuer: "${ISSUER}", secret: "${JWT_SECRET}" } ]
selfService: { path: /v1/keys }
routes:
  - { id: private, path: /private, auth: { methods: [apiKey] }, mock: { body: { ok: true } } }
`;

function jwtFor(sub: string): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(ISSUER)
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime('5m')
    .sign(createSecretKey(Buffer.from(JWT_SECRET, 'utf8')));
}

function logLines(lines: string[]): Array<Record<string, any>> {
  return lines.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, any>];
    } catch {
      return [];
    }
  });
}

/**
 * `n` requests with a key, each on a new connection (so node:cluster spreads them), and which
 * worker answered each (from the access-log line with its request id).
 */
async function useKey(cli: RunningCli, base: string, key: string, tag: string, n = 16) {
  const answers: Array<{ status: number; id: string }> = [];
  for (let i = 0; i < n; i++) {
    const id = `${tag}-${i}`;
    const res: Reply = await request(`${base}/private`, {
      headers: { 'x-api-key': key, 'x-request-id': id },
      agent: new http.Agent({ keepAlive: false }),
    });
    answers.push({ status: res.status, id });
  }
  const ids = new Set(answers.map((a) => a.id));
  await waitFor(
    () => logLines(cli.lines).filter((l) => l.msg === 'request' && ids.has(l.request_id)).length === n,
    5000,
    25,
  );
  const pidOf = new Map(
    logLines(cli.lines)
      .filter((l) => l.msg === 'request' && ids.has(l.request_id))
      .map((l) => [l.request_id as string, l.pid as number]),
  );
  return answers.map((a) => ({ status: a.status, pid: pidOf.get(a.id) }));
}

describe('workers: 2 and the key store (13.16)', () => {
  it('with redis, admin-created and self-service keys work on every worker, and the admin sees and revokes both', async () => {
    const prefix = uniquePrefix('workers-keys');
    cleanup.push(async () => {
      const redis = new Redis(sharedRedisUrl, { maxRetriesPerRequest: 1 });
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
        if (keys.length > 0) await redis.del(...keys);
        cursor = next;
      } while (cursor !== '0');
      redis.disconnect();
    });
    const cli = spawnCli([
      '--config',
      tempFile(yaml(`redis: { url: "${sharedRedisUrl}", keyPrefix: "${prefix}" }`)),
    ]);
    cleanup.push(() => cli.stop());
    const listening = () => logLines(cli.lines).filter((l) => l.msg === 'tollgate listening');
    await waitFor(() => listening().length === 3, 20_000, 50);
    const base = `http://${String(listening().find((l) => l.listen !== null)!.listen)}`;
    const admin = `http://${String(listening().find((l) => l.admin !== null)!.admin)}`;
    const workers = new Set(
      listening()
        .filter((l) => l.listen !== null)
        .map((l) => l.pid as number),
    );
    expect(workers.size).toBe(2);
    const asAdmin = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };

    // A key made through the admin API (in the primary) authenticates on both workers.
    const made = await request(`${admin}/keys`, {
      method: 'POST',
      headers: asAdmin,
      body: JSON.stringify({ name: 'admin-made' }),
    });
    expect(made.status).toBe(201);
    const adminKey = await useKey(cli, base, made.json().key as string, 'admin-key');
    expect(adminKey.map((a) => a.status)).toEqual(adminKey.map(() => 200));
    expect(new Set(adminKey.map((a) => a.pid))).toEqual(workers);

    // A self-service key (made on one worker) authenticates on both, every time.
    const jwt = await jwtFor('user-7');
    const own = await request(`${base}/v1/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${jwt}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'self-made' }),
    });
    expect(own.status).toBe(201);
    const selfKey = own.json() as { id: string; key: string };
    const used = await useKey(cli, base, selfKey.key, 'self-key');
    expect(used.map((a) => a.status)).toEqual(used.map(() => 200));
    expect(new Set(used.map((a) => a.pid))).toEqual(workers);

    // The admin sees it (list and GET) and revokes it; then no worker accepts it.
    const listed = await request(`${admin}/keys?ownerId=user-7`, { headers: asAdmin });
    expect(listed.status).toBe(200);
    expect((listed.json().items as Array<{ id: string }>).map((k) => k.id)).toEqual([selfKey.id]);
    expect((await request(`${admin}/keys/${selfKey.id}`, { headers: asAdmin })).status).toBe(200);
    const revoked = await request(`${admin}/keys/${selfKey.id}`, { method: 'DELETE', headers: asAdmin });
    expect(revoked.status).toBe(204);
    let after: Array<{ status: number; pid: number | undefined }> = [];
    await waitFor(
      async () => {
        after = await useKey(cli, base, selfKey.key, `revoked-${Date.now()}`, 8);
        return after.every((a) => a.status === 401);
      },
      5000,
      100,
    );
    expect(after.map((a) => a.status)).toEqual(after.map(() => 401));
  }, 60_000);

  it('without redis, validate and start refuse workers: 2 with the path workers', async () => {
    const file = tempFile(yaml(''));
    const out: string[] = [];
    const err: string[] = [];
    const io = { out: (l: string) => out.push(l), err: (l: string) => err.push(l), env: {} };
    expect(await runCli(['validate', '--config', file], io)).toBe(1);
    expect(err.join('\n')).toMatch(/^[^ ]*?:(?:\d+:\d+:)? workers: more than one worker needs redis/m);
    err.length = 0;
    expect(await runCli(['start', '--config', file], io)).toBe(1);
    expect(err.join('\n')).toMatch(/ {2}(?:\d+:\d+: )?workers: more than one worker needs redis/);
    // REDIS_URL in the environment turns Redis on: then the same file is valid.
    expect(await runCli(['validate', '--config', file], { ...io, env: { REDIS_URL: sharedRedisUrl } })).toBe(
      0,
    );
  });
});
