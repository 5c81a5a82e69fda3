/// <reference lib="dom" />
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync } from 'node:fs';
import { type Browser, type Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.js';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';
import { sign } from '../../src/policies/signature/signature.js';

const TOKEN = 'console-e2e-admin-token-42';
const SHOTS = 'test-output/console';
// How long the page may take to show a change: a hang detector, not a speed expectation (expect.poll's
// own default is 1 s, which Chromium on a busy 2-core machine need not meet).
const UI = { timeout: 15_000 };

let up: Upstream;
let gw: RunningGateway;
let browser: Browser;
let page: Page;
const browserErrors: string[] = [];

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  up = await startUpstream();
  gw = await startGateway(
    {
      admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
      problems: { typeBase: 'https://errors.example.com/problems/' },
      plans: { free: { rateLimits: [{ name: 'per-key', by: 'key', limit: 2, windowSec: 60 }] } },
      routes: [
        {
          id: 'orders',
          path: '/v1/orders',
          auth: { methods: ['apiKey'], hmac: 'optional' },
          upstream: { targets: [up.url] },
          rateLimits: [{ name: 'burst', by: 'key', limit: 100, windowSec: 1 }],
        },
      ],
    },
    { env: { TOLLGATE_SECRET_KEY: 'console-e2e-secret-key-0123456789abcdef' } },
  );
  browser = await launchChromium();
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('console', (m) => {
    if (m.type() === 'error') browserErrors.push(m.text());
  });
  page.on('pageerror', (e) => browserErrors.push(String(e)));
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await gw?.close();
  await up?.close();
});

describe('the admin console in a real headless Chromium', () => {
  it('signs in, creates a key, finds its request in the audit, charts traffic, reproduces its signature, revokes it', async () => {
    await page.goto(`${gw.adminUrl}/console/`);
    await page.getByLabel('Admin token').fill(TOKEN);
    await page.keyboard.press('Enter'); // keyboard, not a click
    await page.waitForSelector('#view-keys:not([hidden])');
    expect(await page.evaluate(() => sessionStorage.getItem('tollgate.adminToken'))).toBe(TOKEN);
    expect(page.url()).not.toContain(TOKEN);

    // Create a key with a signing secret: both shown once.
    await page.getByText('Create a key').click();
    await page.locator('#create-form [name=name]').fill('e2e-key');
    await page.locator('#create-form [name=scopes]').fill('orders:read');
    await page.getByLabel('Signing secret (HMAC)').check();
    await page.getByRole('button', { name: 'Create key' }).click();
    await page.waitForSelector('#secret-dialog[open]');
    await expect
      .poll(() => page.locator('#secret-dialog').textContent(), UI)
      .toContain('You will not see this again');
    const key = (await page.locator('#secret-key').textContent())!;
    const secret = (await page.locator('#secret-value').textContent())!;
    expect(key).toMatch(/^tg_live_/);
    expect(secret).toMatch(/^whsec_/);
    await page.screenshot({ path: `${SHOTS}/keys-created.png` });
    await page.getByRole('button', { name: 'I have stored it' }).click();
    await expect.poll(() => page.locator('#keys-table tbody').textContent(), UI).toContain('e2e-key');
    expect(await page.locator('#keys-table').textContent()).not.toContain(key);
    await page.screenshot({ path: `${SHOTS}/keys.png` });

    // Use it through the proxy, signed.
    const ts = String(Math.floor(Date.now() / 1000));
    const body = '{"sku":"A1","qty":2}';
    const signature = sign(secret, ts, 'POST', '/v1/orders?expand=items', body);
    const used = await request(`${gw.url}/v1/orders?expand=items`, {
      method: 'POST',
      body,
      headers: {
        'x-api-key': key,
        'x-timestamp': ts,
        'x-signature': signature,
        'content-type': 'application/json',
      },
    });
    expect(used.status).toBe(200);
    const requestId = String(used.headers['x-request-id']);

    // Find it in the audit view by its problem-style instance.
    await page.getByRole('link', { name: 'Audit' }).click();
    await page.waitForSelector('#view-audit:not([hidden])');
    await page.locator('#audit-search [name=id]').fill(`/requests/${requestId}`);
    await expect
      .poll(async () => {
        await page.getByRole('button', { name: 'Find' }).click();
        return page.locator('#audit-record').textContent();
      }, UI)
      .toContain(requestId);
    const record = (await page.locator('#audit-record').textContent())!;
    expect(record).toContain('api-key');
    expect(record).not.toContain(key);
    await page.screenshot({ path: `${SHOTS}/audit.png` });

    // A failing request: its problem slug links to the documentation — the catalog the admin
    // listener serves, since errors.example.com names no real page.
    const refused = await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': 'tg_live_notarealkey' } });
    await page.locator('#audit-filter [name=status]').selectOption('4xx');
    await expect
      .poll(async () => {
        await page.getByRole('button', { name: 'Show' }).click();
        return page.locator('#audit-table tbody').textContent();
      }, UI)
      .toContain('invalid-credentials');
    expect(
      await page.locator('#audit-table a', { hasText: 'invalid-credentials' }).first().getAttribute('href'),
    ).toBe('problems#invalid-credentials');
    await page
      .getByRole('button', { name: `Open request ${String(refused.headers['x-request-id'])}` })
      .click();
    await expect.poll(() => page.locator('#audit-record').textContent(), UI).toContain('401');

    // Live traffic.
    await page.getByRole('link', { name: 'Traffic' }).click();
    for (let i = 0; i < 20; i++) await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key } });
    await page.waitForSelector('#traffic-now td', UI);
    expect(await page.locator('#chart-rps polyline').count()).toBe(4);
    expect(await page.locator('#chart-latency polyline').count()).toBe(2);
    await page.screenshot({ path: `${SHOTS}/traffic.png` });

    // The playground reproduces the signature the gateway accepted, beside what it received.
    await page.getByRole('link', { name: 'Signature playground' }).click();
    await page.locator('#playground-form [name=method]').selectOption('POST');
    await page.locator('#playground-form [name=path]').fill('/v1/orders?expand=items');
    await page.locator('#playground-form [name=body]').fill(body);
    await page.locator('#playground-form [name=timestamp]').fill(ts);
    await page.locator('#playground-form [name=secret]').fill(secret);
    await expect.poll(() => page.locator('#pg-signature').textContent(), UI).toBe(signature);
    await page.locator('#playground-compare [name=id]').fill(requestId);
    await page.getByRole('button', { name: 'Compare' }).click();
    await page.waitForSelector('#pg-verdict');
    expect(await page.locator('#pg-verdict').textContent()).toBe('valid');
    expect(await page.locator('#pg-received .match').count()).toBe(2);
    await page.screenshot({ path: `${SHOTS}/playground.png` });

    // Revoke, with confirmation; the next call fails.
    await page.getByRole('link', { name: 'Keys' }).click();
    const row = page.locator('#keys-table tr', { hasText: 'e2e-key' });
    await row.getByRole('button', { name: 'Revoke' }).click();
    await page.waitForSelector('#confirm-dialog[open]');
    await page.getByRole('button', { name: 'Confirm' }).click();
    await expect.poll(() => page.locator('#keys-table tbody').textContent(), UI).not.toContain('e2e-key');
    expect((await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key } })).status).toBe(401);

    // A phone: nothing overflows sideways.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByRole('link', { name: 'Audit' }).click();
    await page.screenshot({ path: `${SHOTS}/audit-phone.png`, fullPage: true });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow).toBeLessThanOrEqual(1);

    expect(browserErrors).toEqual([]);
  }, 90_000);

  it('creates a test key with its own limit replacing its plan’s, and sets a tenant’s plan', async () => {
    const p = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    p.on('pageerror', (e) => errors.push(String(e)));
    await p.goto(`${gw.adminUrl}/console/`);
    await p.getByLabel('Admin token').fill(TOKEN);
    await p.keyboard.press('Enter');
    await p.waitForSelector('#view-keys:not([hidden])');
    await p.getByText('Create a key').click();
    await p.locator('#create-form [name=name]').fill('e2e-test-key');
    await p.locator('#create-form [name=tenantId]').fill('e2e-org');
    await p.locator('#create-form [name=environment]').selectOption('test');
    await p.locator('#create-form [name=rateLimits]').fill('per-key:key:5:60');
    await p.getByRole('button', { name: 'Create key' }).click();
    await p.waitForSelector('#secret-dialog[open]');
    const key = (await p.locator('#secret-key').textContent())!;
    expect(key).toMatch(/^tg_test_/);
    await p.getByRole('button', { name: 'I have stored it' }).click();
    const row = p.locator('#keys-table tr', { hasText: 'e2e-test-key' });
    await expect.poll(() => row.textContent(), UI).toContain('per-key 5/60s');
    expect(await row.textContent()).toContain('test');

    // The tenant's plan: the key has none of its own, so it follows; its own limit still replaces the plan's.
    await p.locator('#tenant-form [name=tenant]').fill('e2e-org');
    await p.locator('#tenant-form [name=plan]').fill('free');
    await p.getByRole('button', { name: 'Set plan' }).click();
    await expect.poll(() => p.locator('#tenant-result').textContent(), UI).toContain('e2e-org: free');
    const res = await request(`${gw.url}/v1/orders`, { headers: { 'x-api-key': key } });
    expect(res.headers['ratelimit-policy']).toBe('"burst";q=100;w=1, "per-key";q=5;w=60');
    await p.locator('#tenant-form [name=plan]').fill('gold');
    await p.getByRole('button', { name: 'Set plan' }).click();
    await expect
      .poll(() => p.locator('#status').textContent(), UI)
      .toContain('/plan: is not a plan in the config');
    await p.locator('#tenant-show').click();
    await expect.poll(() => p.locator('#tenant-result').textContent(), UI).toContain('e2e-org: free');
    await p.screenshot({ path: `${SHOTS}/tenant-plan.png` });
    expect(errors).toEqual([]);
    await p.close();
  }, 90_000);

  it('refuses a wrong token and keeps it out of the URL', async () => {
    const fresh = await browser.newPage();
    const errors: string[] = [];
    fresh.on('pageerror', (e) => errors.push(String(e)));
    await fresh.goto(`${gw.adminUrl}/console/`);
    await fresh.getByLabel('Admin token').fill('not-the-admin-token-at-all');
    await fresh.getByRole('button', { name: 'Sign in' }).click();
    await expect
      .poll(() => fresh.locator('#signin-error').textContent(), UI)
      .toBe('That token is not valid.');
    expect(await fresh.evaluate(() => sessionStorage.getItem('tollgate.adminToken'))).toBeNull();
    expect(errors).toEqual([]);
    await fresh.close();
  }, 30_000);
});
