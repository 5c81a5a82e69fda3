/// <reference lib="dom" />
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.js';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';

/** A tiny site: one empty page, on its own port (so its own origin). */
async function startSite(): Promise<{ origin: string; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>app</title><p>app</p>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

let app: Awaited<ReturnType<typeof startSite>>;
let other: Awaited<ReturnType<typeof startSite>>;
let up: Upstream;
let gw: RunningGateway;
let browser: Browser;

beforeAll(async () => {
  app = await startSite();
  other = await startSite();
  up = await startUpstream();
  gw = await startGateway({
    cors: { origins: [app.origin] },
    routes: [
      {
        id: 'orders',
        path: '/v1/orders',
        methods: ['GET', 'POST'],
        auth: { methods: ['apiKey'] },
        upstream: { targets: [up.url] },
      },
    ],
  });
  browser = await launchChromium();
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await gw?.close();
  await up?.close();
  await app?.close();
  await other?.close();
});

/** A page of `origin` calling the gateway with fetch; what the page could read. */
async function fetchFrom(origin: string, init: { method?: string; headers?: Record<string, string> }) {
  const page: Page = await browser.newPage();
  try {
    await page.goto(`${origin}/`);
    return await page.evaluate(
      async ({ url, init }) => {
        try {
          const res = await fetch(url, init);
          return {
            ok: true as const,
            status: res.status,
            requestId: res.headers.get('x-request-id'),
            contentType: res.headers.get('content-type'),
            body: (await res.json()) as Record<string, unknown>,
          };
        } catch (err) {
          return { ok: false as const, error: String(err), name: (err as Error).name };
        }
      },
      { url: `${gw.url}/v1/orders`, init },
    );
  } finally {
    await page.close();
  }
}

describe('CORS in a real headless Chromium', () => {
  it('a page on an allowed origin reads a 401 problem and its X-Request-Id (after a preflight)', async () => {
    // The API-key header makes it a non-simple request: Chromium sends a preflight first.
    const got = await fetchFrom(app.origin, {
      method: 'POST',
      headers: { 'x-api-key': 'tg_live_notarealkey' },
    });
    expect(got.ok).toBe(true);
    if (!got.ok) return;
    expect(got.status).toBe(401);
    expect(got.contentType).toBe('application/problem+json');
    expect(got.requestId).toMatch(/^[A-Za-z0-9._:-]+$/);
    expect(got.body.request_id).toBe(got.requestId);
    expect(got.body.status).toBe(401);
    // A simple GET without credentials: 401 missing-credentials, readable as well.
    const simple = await fetchFrom(app.origin, {});
    expect(simple.ok && simple.status).toBe(401);
    expect(up.calls).toHaveLength(0);
  }, 60_000);

  it('a page on another origin is blocked: fetch rejects with a TypeError, for both kinds of request', async () => {
    const preflighted = await fetchFrom(other.origin, {
      method: 'POST',
      headers: { 'x-api-key': 'tg_live_x' },
    });
    expect(preflighted).toMatchObject({ ok: false, name: 'TypeError' });
    const simple = await fetchFrom(other.origin, {});
    expect(simple).toMatchObject({ ok: false, name: 'TypeError' });
    expect(up.calls).toHaveLength(0);
  }, 60_000);
});
