/// <reference lib="dom" />
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Browser, type Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.js';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';

/**
 * The console's pages of issue 19 in a real Chromium: admin activity (with the actor's token name),
 * webhook deliveries (a real receiver that refuses once, then accepts), revoked keys behind a
 * filter, audit credential ids linking to their key's page, shadow-mode marks, the traffic page's
 * time axis and per-route breakdown, and the tenant page. Screenshots go to test-output/console.
 */
const TOKEN = 'console-pages-admin-token-0123';
const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const SHOTS = 'test-output/console';
const UI = { timeout: 15_000 };

let gw: RunningGateway;
let browser: Browser;
let page: Page;
const browserErrors: string[] = [];
let receiver: http.Server;
const sockets = new Set<Socket>();
let calls = 0;

const admin = (method: string, path: string, body?: unknown, token = TOKEN) =>
  request(`${gw.adminUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  // A webhook receiver that is down for its first delivery (503), then takes everything.
  receiver = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      calls++;
      res.statusCode = calls === 1 ? 503 : 204;
      res.end();
    });
  });
  receiver.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const port = (receiver.address() as AddressInfo).port;
  gw = await startGateway(
    {
      admin: { host: '127.0.0.1', port: 0, tokens: [{ name: 'ops-alice', token: TOKEN }] },
      routes: [
        {
          id: 'orders',
          path: '/v1/orders',
          auth: { methods: ['apiKey'] },
          rateLimits: [{ name: 'trial', by: 'key', limit: 1, windowSec: 60, mode: 'shadow' }],
          mock: { body: { ok: true } },
        },
        { id: 'health', path: '/health', mock: { body: { ok: true } } },
      ],
      webhooks: [
        {
          url: `http://127.0.0.1:${port}/hooks`,
          secret: SECRET,
          events: ['key.created', 'key.revoked'],
          retry: { initialDelayMs: 50, maxDelayMs: 200 },
          timeoutMs: 2000,
        },
      ],
    },
    { webhooks: { pollMs: 20 } },
  );
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('console', (m) => {
    // A 404 the page asked for and handled (a revoked key's GET /keys/{id}; usage where the gateway
    // has none) is logged by Chromium as a failed resource: not an error of the page.
    if (m.type() === 'error' && !m.text().includes('status of 404')) browserErrors.push(m.text());
  });
  page.on('pageerror', (e) => browserErrors.push(String(e)));
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await gw?.close();
  for (const s of sockets) s.destroy();
  await new Promise<void>((resolve) => (receiver ? receiver.close(() => resolve()) : resolve()));
});

async function signIn(): Promise<void> {
  await page.goto(`${gw.adminUrl}/console/`);
  await page.getByLabel('Admin token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('#view-keys:not([hidden])');
}

describe('the console pages of issue 19 in a real headless Chromium', () => {
  it('shows admin activity, webhook deliveries, revoked keys, key and tenant pages, shadow marks and routes', async () => {
    const kept = (await admin('POST', '/keys', { name: 'acme-prod', tenantId: 'acme' })).json();
    const gone = (await admin('POST', '/keys', { name: 'acme-old', tenantId: 'acme' })).json();
    expect((await admin('DELETE', `/keys/${gone.id}`)).status).toBe(204);
    expect((await admin('GET', '/keys', undefined, 'not-the-admin-token-at-all')).status).toBe(401);
    // The shadow limit allows 1 a minute: the next two are marked, and let through.
    for (let i = 0; i < 3; i++)
      expect((await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': kept.key } })).status).toBe(200);
    for (let i = 0; i < 2; i++) expect((await request(`${gw.url}/health`)).status).toBe(200);
    await signIn();

    // Revoked keys: not in the list, but behind the State filter, with when.
    await expect.poll(() => page.locator('#keys-table tbody').textContent(), UI).toContain('acme-prod');
    expect(await page.locator('#keys-table tbody').textContent()).not.toContain('acme-old');
    await page.locator('#key-filter [name=state]').selectOption('revoked');
    await page.getByRole('button', { name: 'Filter' }).click();
    await expect.poll(() => page.locator('#keys-table tbody').textContent(), UI).toContain('acme-old');
    const revokedRow = page.locator('#keys-table tr', { hasText: 'acme-old' });
    expect(await revokedRow.textContent()).toContain('revoked');
    expect(await revokedRow.getByRole('button').count()).toBe(0);
    expect(await page.locator('#keys-table tbody').textContent()).not.toContain('acme-prod');
    await page.screenshot({ path: `${SHOTS}/keys-revoked.png` });
    await page.locator('#key-filter [name=state]').selectOption('active');

    // The audit trail: shadow-mode marks, and the credential id links to its key's page.
    await page.getByRole('link', { name: 'Audit' }).click();
    await page.locator('#audit-filter [name=shadow]').check();
    // Badges and rows read together: the unfiltered list (shown until the filtered answer comes)
    // holds the same two shadow rows among others.
    await expect
      .poll(async () => {
        await page.getByRole('button', { name: 'Show' }).click();
        const badges = await page.locator('#audit-table tbody .badge.shadow').count();
        const rows = await page.locator('#audit-table tbody tr').count();
        return `${badges} shadow of ${rows}`;
      }, UI)
      .toBe('2 shadow of 2');
    expect(await page.locator('#audit-table tbody .badge.shadow').first().textContent()).toBe(
      'shadow: trial',
    );
    await page.screenshot({ path: `${SHOTS}/audit-shadow.png` });
    const link = page.locator('#audit-table a.key-link', { hasText: kept.id }).first();
    expect(await link.getAttribute('href')).toBe(`#/key/${kept.id}`);
    await link.click();
    await page.waitForSelector('#view-key:not([hidden])');
    await expect.poll(() => page.locator('#key-title').textContent(), UI).toBe('Key acme-prod');
    expect(await page.locator('#key-details').textContent()).toContain(kept.maskedKey);
    // The usage block: a range form and the three charts, fed by the usage API.
    expect(await page.locator('#key-usage .usage-form [name=granularity]').inputValue()).toBe('hour');
    expect(await page.locator('#key-usage svg.usage-requests').count()).toBe(1);
    await expect
      .poll(() => page.locator('#key-usage .usage-note').textContent(), UI)
      .not.toBe('Loading usage…');
    await page.screenshot({ path: `${SHOTS}/key.png`, fullPage: true });

    // Its tenant's page.
    await page.locator('#key-details a', { hasText: 'acme' }).click();
    await page.waitForSelector('#view-tenant:not([hidden])');
    expect(await page.locator('#tenant-title').textContent()).toBe('Tenant acme');
    await expect.poll(() => page.locator('#tenant-details').textContent(), UI).toContain('Plannone');
    await page.screenshot({ path: `${SHOTS}/tenant.png`, fullPage: true });
    await page.getByRole('button', { name: 'Show its keys' }).click();
    await page.waitForSelector('#view-keys:not([hidden])');
    await expect.poll(() => page.locator('#keys-table tbody tr').count(), UI).toBe(1);
    expect(await page.locator('#keys-table tbody').textContent()).toContain('acme-prod');

    // A revoked key's page still opens (from the remembered list).
    await page.goto(`${gw.adminUrl}/console/#/key/${gone.id}`);
    await expect.poll(() => page.locator('#key-details').textContent(), UI).toContain('revoked');

    // Admin activity: who did what to which key, and the refused credential.
    await page.getByRole('link', { name: 'Admin activity' }).click();
    await page.waitForSelector('#view-admin:not([hidden])');
    await expect.poll(() => page.locator('#admin-table tbody').textContent(), UI).toContain('key.revoke');
    const revoke = page.locator('#admin-table tbody tr', { hasText: 'key.revoke' });
    expect(await revoke.textContent()).toContain('ops-alice');
    expect(await revoke.locator('a.key-link').getAttribute('href')).toBe(`#/key/${gone.id}`);
    expect(await page.locator('#admin-table tbody tr', { hasText: 'key.create' }).count()).toBe(2);
    const refused = page.locator('#admin-table tbody tr', { hasText: '(refused credential)' });
    expect(await refused.count()).toBe(1);
    expect(await refused.textContent()).toContain('401');
    await page.screenshot({ path: `${SHOTS}/admin-activity.png` });
    // Its record opens in the audit view.
    await revoke.getByRole('button', { name: /^Open admin call/ }).click();
    await page.waitForSelector('#view-audit:not([hidden])');
    await expect.poll(() => page.locator('#audit-record h3').textContent(), UI).toMatch(/^Admin call /);
    expect(await page.locator('#audit-record').textContent()).toContain('ops-alice');
    await page.getByRole('link', { name: 'Admin activity' }).click();
    await page.locator('#admin-filter [name=action]').selectOption('key.revoke');
    await page.locator('#admin-filter').getByRole('button', { name: 'Show' }).click();
    await expect.poll(() => page.locator('#admin-table tbody tr').count(), UI).toBe(1);

    // Webhook deliveries: the first attempt got 503 (retry), then it and the others were delivered.
    await page.getByRole('link', { name: 'Webhooks' }).click();
    await page.waitForSelector('#view-webhooks:not([hidden])');
    await expect
      .poll(async () => {
        await page.getByRole('button', { name: 'Refresh' }).click();
        return page.locator('#webhooks-table tbody .badge.delivered').count();
      }, UI)
      .toBe(3);
    const retried = page.locator('#webhooks-table tbody tr', { hasText: 'retry' });
    expect(await retried.count()).toBe(1);
    expect(await retried.textContent()).toContain('503');
    expect(await page.locator('#webhooks-table tbody').textContent()).toContain('key.revoked');
    await page.screenshot({ path: `${SHOTS}/webhooks.png` });

    // Traffic: a real time axis and the per-route breakdown.
    await page.getByRole('link', { name: 'Traffic' }).click();
    await page.waitForSelector('#traffic-routes tbody tr[data-route]', UI);
    expect(
      await page.locator('#traffic-routes tr[data-route=orders] [data-total=requests]').textContent(),
    ).toBe('3');
    expect(
      await page.locator('#traffic-routes tr[data-route=health] [data-total=requests]').textContent(),
    ).toBe('2');
    const ticks = await page.locator('#chart-rps .x-axis text').allTextContents();
    expect(ticks.length).toBeGreaterThanOrEqual(2);
    for (const t of ticks) expect(t).toMatch(/^\d\d:\d\d(:\d\d)?$/);
    expect(await page.locator('#chart-limited polyline[data-series=shadow]').count()).toBe(1);
    await page.screenshot({ path: `${SHOTS}/traffic-routes.png` });

    // A phone: nothing overflows sideways on the new pages.
    await page.setViewportSize({ width: 390, height: 844 });
    for (const [view, id] of [
      ['Admin activity', 'admin'],
      ['Webhooks', 'webhooks'],
    ] as const) {
      await page.getByRole('link', { name: view }).click();
      // Measured once the view is shown (and its table drawn), not while the traffic charts still are.
      await page.waitForSelector(`#view-${id}:not([hidden])`);
      await page.locator(`#view-${id} table tbody tr`).first().waitFor(UI);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      expect(overflow, view).toBeLessThanOrEqual(1);
    }
    await page.goto(`${gw.adminUrl}/console/#/key/${kept.id}`);
    await expect.poll(() => page.locator('#key-title').textContent(), UI).toBe('Key acme-prod');
    expect(
      await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth),
    ).toBeLessThanOrEqual(1);
    await page.screenshot({ path: `${SHOTS}/key-phone.png`, fullPage: true });
    await page.screenshot({ path: `${SHOTS}/webhooks-phone.png`, fullPage: true });
    expect(browserErrors).toEqual([]);
  }, 120_000);
});
