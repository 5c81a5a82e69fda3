import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { startReceiver as startWebhookReceiver } from '../helpers/webhooks.js';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { sharedRedisUrl, uniquePrefix } from '../helpers/redis.js';
import { validateConfig } from '../../src/config/load.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { ManualClock } from '../../src/core/clock.js';
import { OpenApiValidator } from '../helpers/openapi.js';

const ADMIN = 'admin-token-0123456789';
const SECRET = `whsec_${randomBytes(32).toString('base64')}`;

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

const verifier = new Webhook(SECRET);

/** A receiver verifying with SECRET (test/helpers/webhooks.ts). */
const startReceiver = (
  ...args: Parameters<typeof startWebhookReceiver> extends [string, ...infer R] ? R : never
) => startWebhookReceiver(SECRET, ...args);

const admin = (g: RunningGateway, method: string, path: string, body?: unknown) =>
  request(`${g.adminUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

function config(
  url: string,
  extra: Partial<ConfigInput> = {},
  hook: Record<string, unknown> = {},
): ConfigInput {
  return {
    admin: { tokens: [ADMIN] },
    plans: { small: { quota: { limit: 10, period: 'month' } } },
    routes: [
      {
        id: 'metered',
        path: '/m',
        auth: { methods: ['apiKey'] },
        quota: { cost: 1 },
        mock: { status: 200, body: { ok: true } },
      },
    ],
    webhooks: [
      {
        url,
        secret: SECRET,
        events: [
          'key.created',
          'key.updated',
          'key.rotated',
          'key.revoked',
          'key.expired',
          'quota.threshold',
          'quota.exhausted',
        ],
        thresholds: [0.5, 1],
        retry: { initialDelayMs: 20, maxDelayMs: 100 },
        timeoutMs: 2_000,
        ...hook,
      },
    ],
    ...extra,
  };
}

const fast = { webhooks: { pollMs: 20 } };

describe('webhook config (SPEC §11)', () => {
  const base = (hook: Record<string, unknown>) =>
    validateConfig(
      { webhooks: [{ url: 'https://h.example/x', secret: SECRET, events: ['key.created'], ...hook }] },
      {},
    );
  const paths = (r: ReturnType<typeof validateConfig>) => (r.ok ? [] : r.issues.map((i) => i.path));

  it('takes http and https URLs only, without credentials, and whsec_ secrets', () => {
    expect(base({}).ok).toBe(true);
    expect(paths(base({ url: 'ftp://h.example/x' }))).toEqual(['webhooks[0].url']);
    expect(paths(base({ url: 'file:///etc/passwd' }))).toEqual(['webhooks[0].url']);
    expect(paths(base({ url: 'https://user:pw@h.example/x' }))).toEqual(['webhooks[0].url']);
    expect(paths(base({ url: 'not a url' }))).toEqual(['webhooks[0].url']);
    expect(paths(base({ secret: 'plain-secret' }))).toEqual(['webhooks[0].secret']);
    expect(paths(base({ secret: 'whsec_c2hvcnQ=' }))).toEqual(['webhooks[0].secret']);
    expect(paths(base({ events: ['key.exploded'] }))[0]).toMatch(/^webhooks\[0\]\.events/);
    expect(paths(base({ thresholds: [1.5] }))).toEqual(['webhooks[0].thresholds[0]']);
  });

  it('refuses the same URL twice, with the path of the second', () => {
    const hook = { url: 'https://h.example/x', secret: SECRET, events: ['key.created'] };
    const r = validateConfig({ webhooks: [hook, hook] }, {});
    expect(paths(r)).toEqual(['webhooks[1].url']);
  });

  it('a reload with a bad webhook keeps the old config', async () => {
    const rx = await startReceiver();
    cleanup.push(() => rx.close());
    const g = await startGateway(config(rx.url), fast);
    cleanup.push(() => g.close());
    const result = g.gateway.reload({
      ...config(rx.url),
      webhooks: [{ url: 'gopher://x', secret: SECRET, events: ['key.created'] }],
    });
    expect(result.ok).toBe(false);
    expect(g.gateway.config.webhooks[0]!.url).toBe(rx.url);
  });
});

describe('webhook delivery (SPEC §11)', () => {
  it('signs per Standard Webhooks: the receiver verifies with the standardwebhooks package', async () => {
    const rx = await startReceiver();
    cleanup.push(() => rx.close());
    const g = await startGateway(config(rx.url), fast);
    cleanup.push(() => g.close());
    const created = (await admin(g, 'POST', '/keys', { name: 'k1' })).json();
    await waitFor(() => rx.received.length >= 1, 5000);
    expect(rx.rejected).toEqual([]);
    const [first] = rx.received;
    expect(first!.event.type).toBe('key.created');
    expect(Object.keys(first!.event).sort()).toEqual(['data', 'timestamp', 'type']);
    expect(first!.event.data.key.id).toBe(created.id);
    expect(first!.headers['webhook-id']).toMatch(/^msg_/);
    expect(first!.headers['webhook-signature']).toMatch(/^v1,/);
    // No plaintext key in an event: the view is masked.
    expect(first!.body).not.toContain(created.key);
    // A tampered body fails verification.
    expect(() =>
      verifier.verify(first!.body.replace('k1', 'k2'), first!.headers as Record<string, string>),
    ).toThrow();
    // The attempt is listed.
    await waitFor(async () => (await admin(g, 'GET', '/webhooks/deliveries')).json().items.length >= 1, 5000);
    const listed = await admin(g, 'GET', '/webhooks/deliveries');
    const openapi = new OpenApiValidator((await admin(g, 'GET', '/openapi.json')).json());
    openapi.check('GET', '/webhooks/deliveries', listed);
    const items = listed.json().items;
    expect(items[0]).toMatchObject({
      event_id: first!.headers['webhook-id'],
      type: 'key.created',
      url: rx.url,
      status: 200,
      attempts: 1,
      outcome: 'delivered',
      next_retry_at: null,
    });
    const bad = await admin(g, 'GET', '/webhooks/deliveries?limit=0');
    expect(bad.status).toBe(400);
    openapi.check('GET', '/webhooks/deliveries', bad);
  });

  it('a receiver down for a while, then up: every event delivered, in order per key, none lost', async () => {
    // Down: the first 6 attempts get 503.
    const rx = await startReceiver((_q, res, n) => {
      res.statusCode = n <= 6 ? 503 : 204;
      res.end();
    });
    cleanup.push(() => rx.close());
    const g = await startGateway(config(rx.url), fast);
    cleanup.push(() => g.close());
    const a = (await admin(g, 'POST', '/keys', { name: 'a' })).json();
    const b = (await admin(g, 'POST', '/keys', { name: 'b' })).json();
    for (let i = 0; i < 3; i++) {
      await admin(g, 'PATCH', `/keys/${a.id}`, { name: `a${i}` });
      await admin(g, 'PATCH', `/keys/${b.id}`, { name: `b${i}` });
    }
    await admin(g, 'DELETE', `/keys/${a.id}`);
    await waitFor(
      () => rx.received.filter((r) => r.headers['webhook-signature']).length >= 6 + 9,
      20_000,
      20,
      () => JSON.stringify(rx.received.map((r) => r.event.type)),
    );
    // The successful ones (after the first 6 answers), per key, in the order they were raised.
    const delivered = rx.received.slice(6);
    const ids = new Set(delivered.map((r) => r.headers['webhook-id']));
    expect(ids.size).toBe(9);
    const of = (id: string) =>
      delivered
        .filter((r) => r.event.data.key.id === id)
        .map((r) => `${r.event.type}:${r.event.data.key.name}`);
    expect(of(a.id)).toEqual([
      'key.created:a',
      'key.updated:a0',
      'key.updated:a1',
      'key.updated:a2',
      'key.revoked:a2',
    ]);
    expect(of(b.id)).toEqual(['key.created:b', 'key.updated:b0', 'key.updated:b1', 'key.updated:b2']);
    // A retry is the same message: the same webhook-id, signed again.
    const retried = rx.received[0]!.headers['webhook-id'];
    expect(delivered.some((r) => r.headers['webhook-id'] === retried)).toBe(true);
    const metrics = (await request(`${g.adminUrl}/metrics`)).text;
    expect(metrics).toMatch(/tollgate_webhook_deliveries_total\{outcome="retry"\} [1-9]/);
    expect(metrics).toMatch(/tollgate_webhook_deliveries_total\{outcome="delivered"\} 9/);
    expect(metrics).toMatch(/tollgate_webhook_queue_depth 0/);
  });

  it('does not follow redirects, and reads at most a small part of an answer body', async () => {
    const other = await startReceiver();
    cleanup.push(() => other.close());
    const redirecting = await startReceiver((_q, res) => {
      res.writeHead(307, { location: other.url });
      res.end();
    });
    cleanup.push(() => redirecting.close());
    const g = await startGateway(config(redirecting.url), fast);
    cleanup.push(() => g.close());
    await admin(g, 'POST', '/keys', { name: 'r' });
    await waitFor(() => redirecting.calls() >= 2, 5000);
    expect(other.calls()).toBe(0);
    const items = (await admin(g, 'GET', '/webhooks/deliveries')).json().items;
    expect(items[0]).toMatchObject({ status: 307, outcome: 'retry' });
    expect(items[0].next_retry_at).not.toBeNull();

    // A 200 whose body never ends: delivered once the cap is read, not after the stream.
    const endless = await startReceiver((_q, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const chunk = 'x'.repeat(16_384);
      const timer = setInterval(() => res.write(chunk), 5);
      res.on('close', () => clearInterval(timer));
    });
    cleanup.push(() => endless.close());
    const g2 = await startGateway(config(endless.url), fast);
    cleanup.push(() => g2.close());
    await admin(g2, 'POST', '/keys', { name: 'e' });
    await waitFor(
      async () => (await admin(g2, 'GET', '/webhooks/deliveries')).json().items[0]?.outcome === 'delivered',
      5000,
    );
  });

  it('a dead receiver never slows requests: the queue is bounded, the oldest dropped and counted', async () => {
    // Accepts the connection and never answers.
    const hang = http.createServer(() => undefined);
    const sockets = new Set<Socket>();
    hang.on('connection', (s) => sockets.add(s));
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
    cleanup.push(
      () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          hang.close(() => r());
        }),
    );
    const url = `http://127.0.0.1:${(hang.address() as AddressInfo).port}/`;
    const g = await startGateway(config(url, {}, { timeoutMs: 60_000 }), {
      webhooks: { pollMs: 20, maxQueueDepth: 5 },
    });
    cleanup.push(() => g.close());
    const started = Date.now();
    for (let i = 0; i < 12; i++)
      expect((await admin(g, 'POST', '/keys', { name: `k${i}` })).status).toBe(201);
    // Twelve admin calls never waited for the receiver (bounded well below one 60 s timeout).
    expect(Date.now() - started).toBeLessThan(30_000);
    await waitFor(
      async () =>
        /tollgate_webhook_events_dropped_total 7/.test((await request(`${g.adminUrl}/metrics`)).text),
      5000,
    );
    expect((await request(`${g.adminUrl}/metrics`)).text).toMatch(/tollgate_webhook_queue_depth 5/);
  });

  it('quota.threshold once per key, period and threshold; quota.exhausted when the limit is reached', async () => {
    const rx = await startReceiver();
    cleanup.push(() => rx.close());
    const g = await startGateway(
      config(rx.url, {}, { events: ['quota.threshold', 'quota.exhausted'] }),
      fast,
    );
    cleanup.push(() => g.close());
    const key = (await admin(g, 'POST', '/keys', { name: 'q', plan: 'small' })).json();
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++)
      statuses.push((await request(`${g.url}/m`, { headers: { 'x-api-key': key.key } })).status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(10);
    await waitFor(() => rx.received.length >= 3, 5000);
    // Nothing more comes: the refusals after exhaustion raise no second event.
    await g.gateway.services.webhooks.tick();
    const events = rx.received.map((r) => `${r.event.type}:${r.event.data.threshold ?? ''}`);
    expect(events.sort()).toEqual(['quota.exhausted:', 'quota.threshold:0.5', 'quota.threshold:1']);
    const half = rx.received.find((r) => r.event.data.threshold === 0.5)!.event.data;
    expect(half).toMatchObject({
      keyId: key.id,
      limit: 10,
      used: 5,
      holder: { by: 'credential', id: key.id },
      period: 'month',
    });
  });

  it('key.expired: raised when an expired key is first presented, once', async () => {
    const rx = await startReceiver();
    cleanup.push(() => rx.close());
    const clock = new ManualClock(Date.now());
    const g = await startGateway(config(rx.url, {}, { events: ['key.expired'] }), { ...fast, clock });
    cleanup.push(() => g.close());
    const key = (
      await admin(g, 'POST', '/keys', { name: 'x', expiresAt: new Date(clock.now() + 60_000).toISOString() })
    ).json();
    expect((await request(`${g.url}/m`, { headers: { 'x-api-key': key.key } })).status).toBe(200);
    clock.advance(61_000);
    for (let i = 0; i < 3; i++)
      expect((await request(`${g.url}/m`, { headers: { 'x-api-key': key.key } })).status).toBe(401);
    await waitFor(() => rx.received.length >= 1, 5000);
    await g.gateway.services.webhooks.tick();
    expect(rx.received.map((r) => r.event.type)).toEqual(['key.expired']);
    expect(rx.received[0]!.event.data.key.id).toBe(key.id);
  });
});

describe('webhook retries for 24 h (ManualClock)', () => {
  it('retries with backoff until the event is retry.maxAgeSec old, then gives it up', async () => {
    const rx = await startReceiver((_q, res) => {
      res.statusCode = 500;
      res.end();
    });
    cleanup.push(() => rx.close());
    const clock = new ManualClock(Date.now());
    const start = clock.now();
    // Default retry settings (5 s doubling to 1 h, for 24 h); the poll timer is out of the way.
    const g = await startGateway(config(rx.url, {}, { retry: {}, events: ['key.created'] }), {
      clock,
      webhooks: { pollMs: 3_600_000, random: () => 1 },
    });
    cleanup.push(() => g.close());
    await admin(g, 'POST', '/keys', { name: 'doomed' });
    const attemptsAt: number[] = [];
    for (let i = 0; i < 60; i++) {
      const before = rx.calls();
      await g.gateway.services.webhooks.tick();
      if (rx.calls() === before && i > 0) {
        await waitFor(async () => {
          await g.gateway.services.webhooks.tick();
          return (
            rx.calls() > before ||
            (await admin(g, 'GET', '/webhooks/deliveries')).json().items[0]?.outcome === 'failed'
          );
        }, 5000);
      }
      const last = (await admin(g, 'GET', '/webhooks/deliveries')).json().items[0];
      if (rx.calls() > before) attemptsAt.push(clock.now() - start);
      if (last?.outcome === 'failed') break;
      // Jump to the next attempt's time.
      if (last?.next_retry_at) clock.set(Date.parse(last.next_retry_at));
    }
    const items = (await admin(g, 'GET', '/webhooks/deliveries?limit=500')).json().items;
    expect(items[0]).toMatchObject({ outcome: 'failed', status: 500, next_retry_at: null });
    // The first retry after 5 s, then doubling, the last on the 24 h mark.
    expect(attemptsAt.slice(0, 4)).toEqual([0, 5_000, 15_000, 35_000]);
    expect(attemptsAt.at(-1)).toBe(86_400_000);
    expect(items.filter((r: any) => r.outcome === 'retry').length).toBe(attemptsAt.length - 1);
    expect((await request(`${g.adminUrl}/metrics`)).text).toMatch(
      /tollgate_webhook_deliveries_total\{outcome="failed"\} 1/,
    );
  });
});

describe('webhooks across instances (Redis)', () => {
  it('two instances crossing a threshold together raise one event', async () => {
    const rx = await startReceiver();
    cleanup.push(() => rx.close());
    const redis = { url: sharedRedisUrl, keyPrefix: uniquePrefix('webhooks-two') };
    const cfg = config(rx.url, { redis }, { events: ['quota.threshold', 'quota.exhausted'] });
    const one = await startGateway(cfg, fast);
    cleanup.push(() => one.close());
    const two = await startGateway(cfg, fast);
    cleanup.push(() => two.close());
    const key = (await admin(one, 'POST', '/keys', { name: 'q', plan: 'small' })).json();
    // Both instances at once, 10 requests each: 10 admitted in all.
    const all = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        request(`${(i % 2 ? one : two).url}/m`, { headers: { 'x-api-key': key.key } }),
      ),
    );
    expect(all.filter((r) => r.status === 200)).toHaveLength(10);
    await waitFor(() => rx.received.length >= 3, 10_000);
    await Promise.all([one.gateway.services.webhooks.tick(), two.gateway.services.webhooks.tick()]);
    const events = rx.received.map((r) => `${r.event.type}:${r.event.data.threshold ?? ''}`).sort();
    expect(events).toEqual(['quota.exhausted:', 'quota.threshold:0.5', 'quota.threshold:1']);
  });

  it('a second instance delivers what the first queued (its receiver was down)', async () => {
    const redis = { url: sharedRedisUrl, keyPrefix: uniquePrefix('webhooks-handover') };
    // A port nothing listens on yet.
    const probe = await startReceiver();
    const port = probe.port;
    await probe.close();
    const url = `http://127.0.0.1:${port}/hooks`;
    const one = await startGateway(config(url, { redis }), fast);
    const created = (await admin(one, 'POST', '/keys', { name: 'h' })).json();
    await one.close();
    const rx = await startReceiver(undefined, port);
    cleanup.push(() => rx.close());
    const two = await startGateway(config(url, { redis }), fast);
    cleanup.push(() => two.close());
    await waitFor(() => rx.received.length >= 1, 10_000);
    expect(rx.received[0]!.event).toMatchObject({ type: 'key.created', data: { key: { id: created.id } } });
  });
});
