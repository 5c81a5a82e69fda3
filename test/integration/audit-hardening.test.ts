import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { rawExchange, parseRaw, request, waitFor } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { spawnCli, type RunningCli } from '../helpers/cli.js';
import { deleteRedisKeys } from '../helpers/redis-cleanup.js';
import { OpenApiValidator } from '../helpers/openapi.js';
import { expectProblem } from '../helpers/problem.js';
import { createLogger } from '../../src/observability/logger.js';
import { MemoryAuditStore, type AuditRecord } from '../../src/observability/audit.js';
import { ManualClock } from '../../src/core/clock.js';
import type { ConfigInput } from '../../src/config/schema.js';
import type { GatewayOptions } from '../../src/gateway/create-gateway.js';

const TOKEN = 'audit-hardening-admin-token';
const auth = { authorization: `Bearer ${TOKEN}` };
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

function capturedLogger(failOn?: (line: string) => boolean) {
  const lines: string[] = [];
  const logger = createLogger({
    level: 'info',
    format: 'json',
    destination: {
      write: (s: string) => {
        if (failOn?.(s)) throw new Error('log destination failed');
        lines.push(s);
      },
    },
  });
  return { logger, lines };
}

async function upstream(handler?: Parameters<typeof startUpstream>[0], streaming = false): Promise<Upstream> {
  const up = await startUpstream(handler, { streaming });
  cleanup.push(() => up.close());
  return up;
}

async function gateway(config: Partial<ConfigInput>, options: GatewayOptions = {}): Promise<RunningGateway> {
  const gw = await startGateway(
    { admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] }, ...config },
    options,
  );
  cleanup.push(() => gw.close());
  return gw;
}

/** Deletes every key under `prefix` in the shared Redis (the keys a test made). */
function dropKeysAfterwards(prefix: string): void {
  cleanup.push(async () => {
    const redis = new Redis(sharedRedisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await redis.connect();
      const keys = await redis.keys(`${prefix}*`);
      if (keys.length > 0) await redis.del(...keys);
    } finally {
      redis.disconnect();
    }
  });
}

/** `GET /requests/{id}` once it answers 200 with at least `count` records (bounded). */
async function lookup(adminUrl: string, id: string, count = 1): Promise<any> {
  let body: any;
  await waitFor(
    async () => {
      const res = await request(`${adminUrl}/requests/${id}`, { headers: auth });
      if (res.status !== 200) return false;
      body = res.json();
      return 1 + (body.others as unknown[]).length >= count;
    },
    3000,
    25,
  );
  return body;
}

function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && line.split(' ')[0] !== name) continue;
    const series = line.slice(0, line.lastIndexOf(' '));
    if (Object.entries(labels).every(([k, v]) => series.includes(`${k}="${v}"`)))
      return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('a client-chosen X-Request-Id never hides another request (13.14)', () => {
  it('GET /requests/{id} answers the newest record and lists the others; a unique id has none', async () => {
    const up = await upstream();
    const gw = await gateway({
      routes: [{ id: 'orders', path: '/orders', auth: 'none', upstream: { targets: [up.url] } }],
    });
    // The victim's request, then another client reusing its id on purpose.
    const victim = await request(`${gw.url}/orders/1`, { headers: { 'x-request-id': 'shared-id-1' } });
    expect(victim.status).toBe(200);
    await lookup(gw.adminUrl, 'shared-id-1');
    const attacker = expectProblem(
      await request(`${gw.url}/elsewhere`, { headers: { 'x-request-id': 'shared-id-1' } }),
      'not-found',
    );
    expect(attacker.instance).toBe('/requests/shared-id-1');

    const answer = await lookup(gw.adminUrl, 'shared-id-1', 2);
    expect(answer).toMatchObject({ request_id: 'shared-id-1', status: 404, path: '/elsewhere' });
    expect(answer.others).toHaveLength(1);
    expect(answer.others[0]).toMatchObject({
      request_id: 'shared-id-1',
      status: 200,
      path: '/orders/1',
      upstream_status: 200,
    });
    // Both stay in the listing too.
    const listed = (await request(`${gw.adminUrl}/requests?limit=10`, { headers: auth })).json().items;
    expect(listed.filter((r: AuditRecord) => r.request_id === 'shared-id-1')).toHaveLength(2);

    await request(`${gw.url}/orders/2`, { headers: { 'x-request-id': 'unique-id-1' } });
    expect((await lookup(gw.adminUrl, 'unique-id-1')).others).toEqual([]);

    // The answer is the one the OpenAPI document describes.
    const doc = (await request(`${gw.adminUrl}/openapi.json`, { headers: auth })).json();
    const openapi = new OpenApiValidator(doc);
    openapi.check(
      'GET',
      '/requests/shared-id-1',
      await request(`${gw.adminUrl}/requests/shared-id-1`, { headers: auth }),
    );
    openapi.check(
      'GET',
      '/requests/unique-id-1',
      await request(`${gw.adminUrl}/requests/unique-id-1`, { headers: auth }),
    );
    expect(openapi.checked).toBe(2);
  });

  it('the memory store keeps every record of a reused id, newest first, within its bounds', async () => {
    const clock = new ManualClock(Date.UTC(2030, 0, 1));
    const store = new MemoryAuditStore({ maxEntries: 4, retentionSec: 60, clock });
    const record = (n: number): AuditRecord =>
      ({ time: new Date(clock.now()).toISOString(), request_id: 'same', path: `/${n}` }) as AuditRecord;
    store.append(record(1), JSON.stringify(record(1)));
    clock.advance(1000);
    store.append(record(2), JSON.stringify(record(2)));
    clock.advance(1000);
    store.append(
      { ...record(3), request_id: 'other' },
      JSON.stringify({ ...record(3), request_id: 'other' }),
    );
    store.append(record(4), JSON.stringify(record(4)));
    expect((await store.getAll('same')).map((r) => r.path)).toEqual(['/4', '/2', '/1']);
    expect((await store.get('same'))?.path).toBe('/4');
    // Past the retention a record goes, whatever shares its id.
    clock.advance(59_500);
    expect((await store.getAll('same')).map((r) => r.path)).toEqual(['/4']);
  });

  it('Redis keeps the records of one id from two instances, and either instance finds all of them', async () => {
    const prefix = uniquePrefix('audit-dup');
    dropKeysAfterwards(prefix);
    const redis = { url: sharedRedisUrl, keyPrefix: prefix };
    const routes = [{ id: 'demo', path: '/demo', mock: { body: { ok: true } } }];
    const a = await gateway({ redis, routes });
    const b = await gateway({ redis, routes });
    await waitFor(() => a.gateway.services.redis!.ready && b.gateway.services.redis!.ready, 5000);
    // A record an earlier version wrote (one string per id) is still found next to the new ones.
    const legacy = { time: new Date().toISOString(), request_id: 'dup-redis', path: '/legacy', status: 200 };
    await a.gateway.services.redis!.client.set(
      `${prefix}{audit}:req:dup-redis`,
      JSON.stringify(legacy),
      'PX',
      60_000,
    );

    await request(`${a.url}/demo/a`, { headers: { 'x-request-id': 'dup-redis' } });
    await request(`${b.url}/demo/b`, { headers: { 'x-request-id': 'dup-redis' } });
    await request(`${a.url}/nowhere`, { headers: { 'x-request-id': 'dup-redis' } });
    for (const gw of [a, b]) {
      const answer = await lookup(gw.adminUrl, 'dup-redis', 4);
      const all = [answer, ...answer.others];
      expect(all.map((r: AuditRecord) => r.path).sort()).toEqual([
        '/demo/a',
        '/demo/b',
        '/legacy',
        '/nowhere',
      ]);
      expect(new Set(all.map((r: AuditRecord) => r.request_id))).toEqual(new Set(['dup-redis']));
      // Newest first, by arrival.
      const times = all.map((r: AuditRecord) => Date.parse(r.time));
      expect([...times].sort((x, y) => y - x)).toEqual(times);
    }
  });

  it('Redis bounds one reused id to the newest maxEntries records, as the stream is bounded', async () => {
    const prefix = uniquePrefix('audit-dup-cap');
    dropKeysAfterwards(prefix);
    const gw = await gateway({
      redis: { url: sharedRedisUrl, keyPrefix: prefix },
      audit: { maxEntries: 3 },
      routes: [{ id: 'demo', path: '/demo', mock: {} }],
    });
    await waitFor(() => gw.gateway.services.redis!.ready, 5000);
    const audit = gw.gateway.services.audit;
    // One flush (one batch) per request: five batches hold a record of the id.
    for (let i = 0; i < 5; i++) {
      await request(`${gw.url}/demo/${i}`, { headers: { 'x-request-id': 'hot-id' } });
      await waitFor(async () => (await audit.get('hot-id'))?.path === `/demo/${i}`, 3000);
      await audit.flush();
    }
    // Redis itself keeps no more than that: the id's entry in the shard's id index names the
    // newest 3 batches.
    const client = gw.gateway.services.redis!.client;
    const [index] = await client.keys(`${prefix}{a*}:reqs-ids:*`);
    expect(index).toBeDefined();
    expect((await client.hget(index!, 'hot-id'))?.split(' ')).toHaveLength(3);
    const answer = await lookup(gw.adminUrl, 'hot-id', 3);
    expect([answer, ...answer.others].map((r: AuditRecord) => r.path)).toEqual([
      '/demo/4',
      '/demo/3',
      '/demo/2',
    ]);
  });
});

describe('workers: 2 — the record of a reused id is kept from every worker (13.14)', () => {
  let cli: RunningCli | undefined;
  let dir: string | undefined;
  const prefix = uniquePrefix('audit-workers');
  afterEach(async () => {
    await cli?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
    cli = undefined;
    dir = undefined;
    await deleteRedisKeys(prefix);
  });

  it('the primary answers every request that carried the id, whichever worker served it', async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-audit-dup-'));
    const file = join(dir, 'gw.yaml');
    writeFileSync(
      file,
      `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0, tokens: ["${TOKEN}"] }
redis: { url: "${sharedRedisUrl}", keyPrefix: "${prefix}" }
workers: 2
routes:
  - { id: demo, path: /demo, mock: { body: { ok: true } } }
`,
    );
    cli = spawnCli(['--config', file]);
    const listening = () => cli!.lines.filter((l) => l.includes('"msg":"tollgate listening"'));
    await waitFor(() => listening().length === 3, 15_000, 50);
    const lines = listening().map((l) => JSON.parse(l) as Record<string, unknown>);
    const base = `http://${String(lines.find((l) => l.listen !== null)!.listen)}`;
    const admin = `http://${String(lines.find((l) => l.admin !== null)!.admin)}`;
    // Separate connections spread over both workers (the test of node:cluster asserts that).
    for (let i = 0; i < 8; i++)
      await request(`${base}/demo/${i}`, {
        headers: { 'x-request-id': 'dup-workers' },
        agent: new http.Agent({ keepAlive: false }),
      });
    const answer = await lookup(admin, 'dup-workers', 8);
    expect(answer.others).toHaveLength(7);
    expect([answer, ...answer.others].map((r: AuditRecord) => r.path).sort()).toEqual(
      Array.from({ length: 8 }, (_, i) => `/demo/${i}`).sort(),
    );
    // Both workers served some of them (their access-log lines say which process).
    const accessLines = () =>
      cli!.lines.filter((l) => l.includes('"msg":"request"') && l.includes('"request_id":"dup-workers"'));
    await waitFor(() => accessLines().length === 8, 3000);
    expect(new Set(accessLines().map((l) => (JSON.parse(l) as { pid: number }).pid)).size).toBe(2);
  });
});

describe('a request whose body streams upstream has its audit record, log line and count (14.1)', () => {
  it('a small POST, a chunked PUT and a POST the client abandons mid-body are all recorded', async () => {
    const { logger, lines } = capturedLogger();
    const received: string[] = [];
    const up = await upstream((req, res) => {
      req.on('data', (c: Buffer) => received.push(`${String(req.headers['x-request-id'])}:${c.length}`));
      req.on('end', () => res.end('stored'));
    }, true);
    const gw = await gateway(
      { routes: [{ id: 'write', path: '/write', auth: 'none', upstream: { targets: [up.url] } }] },
      { logger },
    );

    const small = await request(`${gw.url}/write/1`, {
      method: 'POST',
      body: '{"a":1}',
      headers: { 'x-request-id': 'stream-small', 'content-type': 'application/json' },
    });
    expect(small.status).toBe(200);

    // Chunked: no Content-Length, the body arrives in pieces after the head.
    const chunked = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${gw.url}/write/2`, {
        method: 'PUT',
        agent: false,
        headers: { 'x-request-id': 'stream-chunked', 'transfer-encoding': 'chunked' },
      });
      req.on('response', (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.write('first-piece;');
      void waitFor(() => received.some((r) => r.startsWith('stream-chunked:')), 3000).then(
        () => req.end('second-piece'),
        reject,
      );
    });
    expect(chunked).toBe(200);

    // The client sends half its announced body, waits until it reached the upstream, and leaves.
    const abandoned = http.request(`${gw.url}/write/3`, {
      method: 'POST',
      agent: false,
      headers: { 'x-request-id': 'stream-abandoned', 'content-length': '1000' },
    });
    abandoned.on('error', () => undefined);
    abandoned.write('x'.repeat(500));
    await waitFor(() => received.some((r) => r.startsWith('stream-abandoned:')), 3000);
    abandoned.destroy();

    const small1 = await lookup(gw.adminUrl, 'stream-small');
    expect(small1).toMatchObject({ method: 'POST', route: 'write', status: 200, client_ip: '127.0.0.1' });
    expect(small1.bytes_in).toBe(7);
    expect(await lookup(gw.adminUrl, 'stream-chunked')).toMatchObject({
      method: 'PUT',
      status: 200,
      client_ip: '127.0.0.1',
      bytes_in: 'first-piece;second-piece'.length,
    });
    const gone = await lookup(gw.adminUrl, 'stream-abandoned');
    // Left before any answer: 499, as any client that leaves early.
    expect(gone).toMatchObject({
      method: 'POST',
      route: 'write',
      client_ip: '127.0.0.1',
      aborted: true,
      status: 499,
    });

    for (const id of ['stream-small', 'stream-chunked', 'stream-abandoned'])
      await waitFor(
        () => lines.some((l) => l.includes(`"request_id":"${id}"`) && l.includes('"msg":"request"')),
        2000,
      );
    expect(lines.filter((l) => l.includes('observer failed'))).toEqual([]);

    const text = (await request(`${gw.adminUrl}/metrics`)).text;
    expect(
      sample(text, 'tollgate_requests_total', { route: 'write', method: 'POST', status_class: '2xx' }),
    ).toBe(1);
    expect(
      sample(text, 'tollgate_requests_total', { route: 'write', method: 'PUT', status_class: '2xx' }),
    ).toBe(1);
    expect(
      sample(text, 'tollgate_requests_total', { route: 'write', method: 'POST', status_class: '4xx' }),
    ).toBe(1);
  });

  it('the client IP of a streamed request follows trustProxy from the peer seen on arrival; a spoofed X-Forwarded-For is ignored', async () => {
    const up = await upstream();
    const routes = [{ id: 'write', path: '/write', auth: 'none' as const, upstream: { targets: [up.url] } }];
    const trusting = await gateway({ trustProxy: 'loopback', routes });
    const trustingNobody = await gateway({ routes });
    const post = (gw: RunningGateway, id: string) =>
      request(`${gw.url}/write`, {
        method: 'POST',
        body: 'payload',
        headers: { 'x-request-id': id, 'x-forwarded-for': '203.0.113.9, 127.0.0.1' },
      });
    expect((await post(trusting, 'xff-trusted')).status).toBe(200);
    expect((await post(trustingNobody, 'xff-spoofed')).status).toBe(200);
    expect((await lookup(trusting.adminUrl, 'xff-trusted')).client_ip).toBe('203.0.113.9');
    expect((await lookup(trustingNobody.adminUrl, 'xff-spoofed')).client_ip).toBe('127.0.0.1');
  });
});

describe('one failing observer output does not lose the others (14.1)', () => {
  it('an audit store that throws: the access-log line and the metrics are still written', async () => {
    const { logger, lines } = capturedLogger();
    const failing = new MemoryAuditStore({ maxEntries: 10, retentionSec: 60, clock: new ManualClock() });
    failing.append = () => {
      throw new Error('audit store broke');
    };
    const gw = await gateway(
      { routes: [{ id: 'demo', path: '/demo', mock: {} }] },
      { logger, audit: failing },
    );
    await request(`${gw.url}/demo`, { headers: { 'x-request-id': 'audit-broke' } });
    await waitFor(() => lines.some((l) => l.includes('observer failed')), 2000);
    expect(lines.some((l) => l.includes('"request_id":"audit-broke"') && l.includes('"msg":"request"'))).toBe(
      true,
    );
    const failure = JSON.parse(lines.find((l) => l.includes('observer failed'))!);
    expect(failure).toMatchObject({ request_id: 'audit-broke', output: 'audit' });
    const text = (await request(`${gw.adminUrl}/metrics`)).text;
    expect(sample(text, 'tollgate_requests_total', { route: 'demo', status_class: '2xx' })).toBe(1);

    // A request Node refused before routing: the same guard.
    const { response } = await rawExchange(gw.port, 'GET /demo HTTP/1.1 junk\r\nHost: x\r\n\r\n');
    const refusedId = parseRaw(response).headers['x-request-id']!;
    await waitFor(
      () => lines.some((l) => l.includes(`"request_id":"${refusedId}"`) && l.includes('"msg":"request"')),
      2000,
    );
    const after = (await request(`${gw.adminUrl}/metrics`)).text;
    expect(sample(after, 'tollgate_requests_total', { route: 'unmatched', status_class: '4xx' })).toBe(1);
  });

  it('a log destination that throws on the access line: the audit record and the metrics are still kept', async () => {
    const { logger, lines } = capturedLogger((line) => line.includes('"msg":"request"'));
    const gw = await gateway({ routes: [{ id: 'demo', path: '/demo', mock: {} }] }, { logger });
    await request(`${gw.url}/demo`, { headers: { 'x-request-id': 'log-broke' } });
    expect(await lookup(gw.adminUrl, 'log-broke')).toMatchObject({ status: 200, route: 'demo' });
    expect(JSON.parse(lines.find((l) => l.includes('observer failed'))!)).toMatchObject({
      request_id: 'log-broke',
      output: 'access log',
    });
    const text = (await request(`${gw.adminUrl}/metrics`)).text;
    expect(sample(text, 'tollgate_requests_total', { route: 'demo', status_class: '2xx' })).toBe(1);
  });

  it('metrics that throw: the access-log line and the audit record are still written', async () => {
    const { logger, lines } = capturedLogger();
    const gw = await gateway({ routes: [{ id: 'demo', path: '/demo', mock: {} }] }, { logger });
    gw.gateway.services.metrics.observe = () => {
      throw new Error('metrics broke');
    };
    await request(`${gw.url}/demo`, { headers: { 'x-request-id': 'metrics-broke' } });
    expect(await lookup(gw.adminUrl, 'metrics-broke')).toMatchObject({ status: 200 });
    expect(
      lines.some((l) => l.includes('"request_id":"metrics-broke"') && l.includes('"msg":"request"')),
    ).toBe(true);
    expect(JSON.parse(lines.find((l) => l.includes('observer failed'))!)).toMatchObject({
      output: 'metrics',
    });
  });
});
