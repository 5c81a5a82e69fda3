/// <reference lib="dom" />
import { mkdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Browser, type Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.js';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';

/**
 * The usage charts of a key's and a tenant's page, fed by the real usage API (`GET /keys/{id}/usage`,
 * `GET /tenants/{id}/usage`, SPEC §11) after real traffic: requests by status class, a meter's sum,
 * rate-limit and quota refusals, by hour and by day, and the same after a page reload.
 */
const TOKEN = 'console-usage-admin-token-0123';
const SHOTS = 'test-output/console';
const UI = { timeout: 15_000 };

let gw: RunningGateway;
let browser: Browser;
let page: Page;
const browserErrors: string[] = [];

const admin = (method: string, path: string, body?: unknown) =>
  request(`${gw.adminUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  gw = await startGateway({
    admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
    routes: [
      {
        id: 'chat',
        path: '/v1/chat',
        auth: { methods: ['apiKey'] },
        meters: { tokens: { responseHeader: 'x-usage-tokens' } },
        rateLimits: [{ name: 'per-key', by: 'key', limit: 3, windowSec: 3600 }],
        mock: { headers: { 'x-usage-tokens': '25' }, body: { ok: true } },
      },
    ],
  });
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
});

/** The totals table of a usage block, as {row: value}. */
async function totals(root: string): Promise<Record<string, string>> {
  const cells = await page
    .locator(`${root} .usage-totals td`)
    .evaluateAll((tds) => tds.map((td) => [(td as HTMLElement).dataset.total ?? '', td.textContent ?? '']));
  return Object.fromEntries(cells);
}

describe('usage charts in the console, from the usage API', () => {
  it('charts a key’s and its tenant’s requests, meter and refusals, by hour and day, across a reload', async () => {
    const busy = (await admin('POST', '/keys', { name: 'busy', tenantId: 'acme' })).json();
    const capped = (await admin('POST', '/keys', { name: 'capped', tenantId: 'acme', remaining: 1 })).json();
    // busy: 3 answered (25 tokens each), then 2 over its rate limit; capped: 1 answered, then 1 over its uses.
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++)
      statuses.push((await request(`${gw.url}/v1/chat`, { headers: { 'x-api-key': busy.key } })).status);
    for (let i = 0; i < 2; i++)
      statuses.push((await request(`${gw.url}/v1/chat`, { headers: { 'x-api-key': capped.key } })).status);
    expect(statuses).toEqual([200, 200, 200, 429, 429, 200, 402]);

    await page.goto(`${gw.adminUrl}/console/`);
    await page.getByLabel('Admin token').fill(TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForSelector('#view-keys:not([hidden])');
    await page.locator('#keys-table a', { hasText: 'busy' }).click();
    await page.waitForSelector('#view-key:not([hidden])');
    await expect
      .poll(() => page.locator('#key-usage .usage-note').textContent(), UI)
      .toContain('Hourly usage');
    const expected = {
      Requests: '5',
      'Requests 2xx': '3',
      'Requests 4xx': '2',
      'Meter tokens': '75',
      'Rate-limit refusals': '2',
      'Quota refusals': '0',
    };
    expect(await totals('#key-usage')).toMatchObject(expected);
    // The bars: one 2xx and one 4xx piece (this hour), a tokens bar, a rate-limit bar.
    expect(
      await page.locator('#key-usage .usage-requests rect[data-series="2xx"]').getAttribute('data-value'),
    ).toBe('3');
    expect(
      await page.locator('#key-usage .usage-requests rect[data-series="4xx"]').getAttribute('data-value'),
    ).toBe('2');
    expect(
      await page.locator('#key-usage .usage-meters rect[data-series=tokens]').getAttribute('data-value'),
    ).toBe('75');
    expect(await page.locator('#key-usage .usage-meter-legend').textContent()).toContain('tokens');
    expect(await page.locator('#key-usage .usage-refusals rect[data-series="rate limit"]').count()).toBe(1);
    expect(await page.locator('#key-usage .usage-requests .x-axis text').count()).toBeGreaterThanOrEqual(2);
    await page.screenshot({ path: `${SHOTS}/usage-key.png`, fullPage: true });

    // The range is in the page's address: a reload asks the usage API again and shows the same.
    await page.getByRole('button', { name: '7 days' }).click();
    await expect.poll(() => page.url(), UI).toContain('granularity=hour');
    await expect
      .poll(() => page.locator('#key-usage .usage-note').textContent(), UI)
      .toContain('Hourly usage');
    await page.reload();
    await expect
      .poll(() => page.locator('#key-usage .usage-note').textContent(), UI)
      .toContain('Hourly usage');
    await expect.poll(() => totals('#key-usage'), UI).toMatchObject(expected);

    // By day, over 30 days: one bar for today.
    await page.getByRole('button', { name: '30 days' }).click();
    await expect
      .poll(() => page.locator('#key-usage .usage-note').textContent(), UI)
      .toContain('Daily usage');
    expect(await page.locator('#key-usage [name=granularity]').inputValue()).toBe('day');
    await expect.poll(() => totals('#key-usage'), UI).toMatchObject(expected);
    expect(await page.locator('#key-usage .usage-requests rect[data-series="2xx"]').count()).toBe(1);
    await page.screenshot({ path: `${SHOTS}/usage-key-days.png`, fullPage: true });

    // The tenant: both keys together, the quota refusal included.
    await page.locator('#key-details a', { hasText: 'acme' }).click();
    await page.waitForSelector('#view-tenant:not([hidden])');
    await expect.poll(() => page.locator('#tenant-usage .usage-note').textContent(), UI).toContain('usage');
    await expect
      .poll(() => totals('#tenant-usage'), UI)
      .toMatchObject({
        Requests: '7',
        'Requests 2xx': '4',
        'Requests 4xx': '3',
        'Meter tokens': '100',
        'Rate-limit refusals': '2',
        'Quota refusals': '1',
      });
    await page.screenshot({ path: `${SHOTS}/usage-tenant.png`, fullPage: true });

    // A range the API refuses is reported with its parameter, not drawn.
    await page.goto(
      `${gw.adminUrl}/console/#/key/${busy.id}?from=2000-01-01T00:00:00.000Z&to=2000-01-02T00:00:00.000Z&granularity=hour`,
    );
    await expect
      .poll(() => page.locator('#key-usage .usage-note').textContent(), UI)
      .toContain('/query/from');
    expect(browserErrors.filter((e) => !e.includes('status of 400'))).toEqual([]);
    expect(capped.id).toMatch(/^key_/);
  }, 120_000);
});
