import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROCESS_START_MS, spawnCli, type RunningCli } from '../helpers/cli.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { Redis } from 'ioredis';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';

const TOKEN = 'workers-admin-token-123';
let cli: RunningCli | undefined;
let dir: string | undefined;
const servers: Array<{ close(): Promise<void> }> = [];
// More than one worker needs Redis (in-memory stores cannot be shared): a prefix of its own.
const prefixes: string[] = [];
function redisBlock(name: string): string {
  const prefix = uniquePrefix(name);
  prefixes.push(prefix);
  return `redis: { url: "${sharedRedisUrl}", keyPrefix: "${prefix}" }`;
}
afterEach(async () => {
  await cli?.stop();
  for (const s of servers.splice(0)) await s.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
  cli = undefined;
  const redis = new Redis(sharedRedisUrl, { maxRetriesPerRequest: 1 });
  for (const prefix of prefixes.splice(0)) {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
  }
  redis.disconnect();
});

function listeningLines(lines: string[]): Array<Record<string, any>> {
  return lines
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, any>;
      } catch {
        return {};
      }
    })
    .filter((l) => l.msg === 'tollgate listening');
}

describe('workers: 2 (node:cluster)', () => {
  it('shares the listener, aggregates metrics and audit in the primary, reloads all on SIGHUP, drains all on SIGTERM', async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-workers-'));
    const file = join(dir, 'gw.yaml');
    const redis = redisBlock('workers');
    const yaml = (v: number) => `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0, tokens: ["${TOKEN}"] }
${redis}
workers: 2
routes:
  - { id: demo, path: /demo, mock: { body: { v: ${v} } } }
`;
    writeFileSync(file, yaml(1));
    cli = spawnCli(['--config', file]);
    await waitFor(() => listeningLines(cli!.lines).length === 3, PROCESS_START_MS, 50, cli.log);
    const lines = listeningLines(cli.lines);
    const publicLine = lines.find((l) => l.listen !== null)!;
    const adminLine = lines.find((l) => l.admin !== null)!;
    const base = `http://${String(publicLine.listen)}`;
    const admin = `http://${String(adminLine.admin)}`;
    const workerPids = new Set(lines.filter((l) => l.listen !== null).map((l) => l.pid as number));
    expect(workerPids.size).toBe(2);

    // Separate connections are spread over both workers.
    for (let i = 0; i < 20; i++) {
      const res = await request(`${base}/demo`, {
        headers: { 'x-request-id': `w-${i}` },
        agent: new http.Agent({ keepAlive: false }),
      });
      expect(res.json()).toEqual({ v: 1 });
    }
    // Access lines leave in batches, at the latest 250 ms later: all 20 are waited for.
    const accessLines = () => cli!.lines.filter((l) => l.includes('"msg":"request"'));
    await waitFor(() => accessLines().length === 20, 5000, 50, cli.log);
    const served = new Set(accessLines().map((l) => (JSON.parse(l) as { pid: number }).pid));
    expect(served).toEqual(workerPids);

    let total = 0;
    await waitFor(
      async () => {
        const text = (await request(`${admin}/metrics`)).text;
        const line = text.split('\n').find((l) => l.startsWith('tollgate_requests_total{route="demo"'));
        total = line ? Number(line.split(' ').pop()) : 0;
        return total === 20;
      },
      5000,
      100,
    );
    expect(total).toBe(20);
    await waitFor(
      async () =>
        (await request(`${admin}/requests/w-7`, { headers: { authorization: `Bearer ${TOKEN}` } })).status ===
        200,
      2000,
      50,
    );

    writeFileSync(file, yaml(2));
    cli.child.kill('SIGHUP');
    await waitFor(
      async () => {
        const answers = await Promise.all(
          Array.from({ length: 6 }, () =>
            request(`${base}/demo`, { agent: new http.Agent({ keepAlive: false }) }).then(
              (r) => r.json().v as number,
            ),
          ),
        );
        return answers.every((v) => v === 2);
      },
      10_000,
      100,
    );

    cli.child.kill('SIGTERM');
    const code = await cli.exited;
    // On failure, show what the processes said (not the request lines).
    expect({ code, log: code === 0 ? [] : cli.lines.filter((l) => !l.includes('"msg":"request"')) }).toEqual({
      code: 0,
      log: [],
    });
    // Three node processes start here: on a busy 2-core machine that alone can take many seconds.
  }, 90_000);
});

describe('workers: faults', () => {
  it('a worker that dies while the file is broken is replaced once it is fixed; /metrics keeps answering; /readyz is 503 from the start of the drain', async () => {
    // The upstream holds its answer until the test has seen /readyz turn 503: a timer here raced
    // the drain on a busy machine (the worker drained and the primary exited before the check).
    const held: http.ServerResponse[] = [];
    const slow = await startUpstream((_req, res) => void held.push(res));
    servers.push(slow);
    dir = mkdtempSync(join(tmpdir(), 'tollgate-workers-'));
    const file = join(dir, 'gw.yaml');
    const good = `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0, tokens: ["${TOKEN}"] }
${redisBlock('workers-faults')}
workers: 2
routes:
  - { id: slow, path: /slow, auth: none, upstream: { targets: ["${slow.url}"] } }
`;
    writeFileSync(file, good);
    cli = spawnCli(['--config', file]);
    await waitFor(() => listeningLines(cli!.lines).length === 3, PROCESS_START_MS, 50, cli.log);
    const lines = listeningLines(cli.lines);
    const admin = `http://${String(lines.find((l) => l.admin !== null)!.admin)}`;
    const workerPids = lines.filter((l) => l.listen !== null).map((l) => l.pid as number);

    writeFileSync(file, 'routes: [ { broken');
    process.kill(workerPids[0]!, 'SIGKILL');
    await waitFor(
      () => cli!.lines.filter((l) => l.includes('worker died')).length >= 2,
      PROCESS_START_MS,
      50,
      cli.log,
    );
    // The failed replacement exited (it did not hang on its IPC channel): metrics still aggregate.
    const metrics = await request(`${admin}/metrics`, { timeoutMs: 4000 });
    expect(metrics.status).toBe(200);

    writeFileSync(file, good);
    await waitFor(() => listeningLines(cli!.lines).length >= 4, PROCESS_START_MS, 50, cli.log);
    expect((await request(`${admin}/metrics`, { timeoutMs: 4000 })).status).toBe(200);

    // A request in flight keeps a worker draining; meanwhile the primary already says not ready.
    const base = `http://${String(lines.find((l) => l.listen !== null)!.listen)}`;
    const inFlight = request(`${base}/slow`, { timeoutMs: 60_000 });
    await waitFor(() => held.length === 1, 10_000, 10);
    cli.child.kill('SIGTERM');
    await waitFor(async () => (await request(`${admin}/readyz`)).status === 503, 10_000, 20, cli.log);
    for (const res of held) res.end('done');
    expect((await inFlight).status).toBe(200);
    expect(await cli.exited).toBe(0);
    // Five node processes start here, two of them after a 1 s restart delay each.
  }, 120_000);
});
