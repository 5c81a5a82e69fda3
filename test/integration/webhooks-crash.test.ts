import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { Socket } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { PROCESS_START_MS, PROCESS_TEST_MS, spawnCli, type RunningCli } from '../helpers/cli.js';
import { freePort, request, waitFor } from '../helpers/http.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';

const TOKEN = 'webhooks-crash-admin-token';
const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const clis: RunningCli[] = [];
const closers: Array<() => Promise<void>> = [];
let dir: string | undefined;

afterEach(async () => {
  for (const c of clis.splice(0)) await c.stop();
  while (closers.length) await closers.pop()!();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function adminAddress(cli: RunningCli): Promise<string> {
  let admin: string | undefined;
  await waitFor(
    () => {
      for (const l of cli.lines) {
        try {
          const parsed = JSON.parse(l) as Record<string, any>;
          if (parsed.msg === 'tollgate listening' && parsed.admin) admin = `http://${String(parsed.admin)}`;
        } catch {
          /* not JSON */
        }
      }
      return admin !== undefined;
    },
    PROCESS_START_MS,
    50,
    cli.log,
  );
  return admin!;
}

describe('webhooks survive a crash (Redis)', { timeout: PROCESS_TEST_MS }, () => {
  it('a gateway SIGKILLed with deliveries pending: they are delivered after a restart', async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-webhooks-'));
    const port = await freePort();
    const file = join(dir, 'gw.yaml');
    writeFileSync(
      file,
      `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0, tokens: [{ name: ops, token: "${TOKEN}" }] }
redis: { url: "${sharedRedisUrl}", keyPrefix: "${uniquePrefix('webhooks-crash')}" }
webhooks:
  - url: "http://127.0.0.1:${port}/hooks"
    secret: "${SECRET}"
    events: [key.created, key.revoked]
    retry: { initialDelayMs: 50, maxDelayMs: 200 }
    timeoutMs: 1000
routes:
  - { id: demo, path: /demo, mock: { body: { ok: true } } }
`,
    );
    // The receiver is down: nothing listens on its port.
    const first = spawnCli(['--config', file]);
    clis.push(first);
    const admin = await adminAddress(first);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await request(`${admin}/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: `crash-${i}` }),
      });
      expect(res.status).toBe(201);
      ids.push(res.json().id as string);
    }
    // The admin calls are in the (Redis) admin trail, under the token's name.
    await waitFor(
      async () => {
        const trail = await request(`${admin}/requests?kind=admin&action=key.create`, {
          headers: { authorization: `Bearer ${TOKEN}` },
        });
        const items = trail.json().items as Array<Record<string, unknown>>;
        return items.length === 3 && items.every((r) => r.actor === 'ops' && r.outcome === 'success');
      },
      5000,
      50,
      first.log,
    );
    // Each answer came after its event was queued in Redis: killing the gateway now loses nothing.
    first.child.kill('SIGKILL');
    await first.exited;

    const received: Array<{ type: string; data: any }> = [];
    const wh = new Webhook(SECRET);
    const sockets = new Set<Socket>();
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push(
          wh.verify(Buffer.concat(chunks).toString('utf8'), req.headers as Record<string, string>) as {
            type: string;
            data: any;
          },
        );
        res.end();
      });
    });
    server.on('connection', (s) => sockets.add(s));
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
    closers.push(
      () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          server.close(() => r());
        }),
    );
    const second = spawnCli(['--config', file]);
    clis.push(second);
    await waitFor(() => received.length >= 3, PROCESS_START_MS + 10_000, 50, second.log);
    expect(received.map((e) => e.type)).toEqual(['key.created', 'key.created', 'key.created']);
    expect(received.map((e) => e.data.key.id).sort()).toEqual([...ids].sort());

    // POST /reload re-reads the file, and is in the admin trail with its actor.
    const adminTwo = await adminAddress(second);
    const auth = { authorization: `Bearer ${TOKEN}` };
    expect((await request(`${adminTwo}/reload`, { method: 'POST', headers: auth })).status).toBe(200);
    await second.waitForLog('config reloaded', 5000);
    await waitFor(async () => {
      const items = (
        await request(`${adminTwo}/requests?kind=admin&action=config.reload`, { headers: auth })
      ).json().items as Array<Record<string, unknown>>;
      return items.length === 1 && items[0]!.actor === 'ops' && items[0]!.outcome === 'success';
    }, 5000);
  });
});
