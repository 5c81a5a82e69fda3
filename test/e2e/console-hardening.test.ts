/// <reference lib="dom" />
import http from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Browser, type Page } from 'playwright-core';
import { launchChromium } from '../helpers/browser.js';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import type { ConfigInput } from '../../src/config/schema.js';

const TOKEN = 'console-hardening-admin-token';

let browser: Browser;
const cleanup: Array<() => Promise<void>> = [];

beforeAll(async () => {
  browser = await launchChromium();
}, 60_000);
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});
afterAll(async () => {
  await browser?.close();
});

async function gateway(extra: Partial<ConfigInput> = {}): Promise<RunningGateway> {
  const gw = await startGateway({
    admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
    routes: [{ id: 'private', path: '/private', auth: { methods: ['apiKey'] }, mock: { body: { ok: 1 } } }],
    ...extra,
  });
  cleanup.push(() => gw.close());
  return gw;
}

async function open(gw: RunningGateway): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  cleanup.push(() => page.close());
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${gw.adminUrl}/console/`);
  return { page, errors };
}

async function signIn(page: Page): Promise<void> {
  await page.getByLabel('Admin token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('#view-keys:not([hidden])');
}

/** The first audit-table link of a slug, after a request that earns it. */
async function problemHref(page: Page, gw: RunningGateway): Promise<string> {
  await request(`${gw.url}/private`, { headers: { 'x-api-key': 'tg_live_notarealkey' } });
  await page.getByRole('link', { name: 'Audit' }).click();
  await page.waitForSelector('#view-audit:not([hidden])');
  await page.locator('#audit-filter [name=status]').selectOption('4xx');
  await expect
    .poll(
      async () => {
        await page.getByRole('button', { name: 'Show' }).click();
        return page.locator('#audit-table tbody').textContent();
      },
      { timeout: 5000 },
    )
    .toContain('invalid-credentials');
  const link = page.locator('#audit-table a', { hasText: 'invalid-credentials' }).first();
  return link.evaluate((a) => (a as HTMLAnchorElement).href);
}

describe('the console, signed out and with the admin API off (14.5)', () => {
  it('shows neither the navigation nor "Sign out" while signed out (hidden beats nav{display:flex})', async () => {
    const gw = await gateway();
    const { page, errors } = await open(gw);
    expect(await page.locator('#nav').isVisible()).toBe(false);
    expect(await page.getByRole('button', { name: 'Sign out' }).isVisible()).toBe(false);
    expect(await page.getByRole('link', { name: 'Keys' }).isVisible()).toBe(false);
    await signIn(page);
    expect(await page.getByRole('button', { name: 'Sign out' }).isVisible()).toBe(true);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForSelector('#view-signin:not([hidden])');
    expect(await page.locator('#nav').isVisible()).toBe(false);
    expect(errors).toEqual([]);
  }, 30_000);

  it('with no admin token configured, says the admin API is off instead of "That token is not valid"', async () => {
    const gw = await gateway({ admin: { host: '127.0.0.1', port: 0, tokens: [] } });
    const { page, errors } = await open(gw);
    await page.waitForSelector('#admin-off:not([hidden])');
    expect(await page.locator('#admin-off').textContent()).toContain('The admin API is off');
    expect(await page.getByRole('button', { name: 'Sign in' }).isDisabled()).toBe(true);
    expect(await page.locator('#signin-error').textContent()).toBe('');
    expect(errors).toEqual([]);
  }, 30_000);

  it('when the tokens are removed by a reload after the page loaded, a sign-in says the API is off', async () => {
    const gw = await gateway();
    const { page } = await open(gw);
    await expect.poll(() => page.getByRole('button', { name: 'Sign in' }).isEnabled()).toBe(true);
    const reloaded = gw.gateway.reload({
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0, tokens: [] },
      routes: [],
    });
    expect(reloaded.ok).toBe(true);
    await page.getByLabel('Admin token').fill(TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForSelector('#admin-off:not([hidden])');
    expect(await page.locator('#signin-error').textContent()).not.toBe('That token is not valid.');
    // A token that is simply wrong, with the API on, still reads as not valid.
    const on = await gateway();
    const second = await open(on);
    await second.page.getByLabel('Admin token').fill('a-wrong-admin-token-here');
    await second.page.getByRole('button', { name: 'Sign in' }).click();
    await expect
      .poll(() => second.page.locator('#signin-error').textContent())
      .toBe('That token is not valid.');
    expect(await second.page.locator('#admin-off').isVisible()).toBe(false);
  }, 30_000);
});

describe('problem links in the console (14.5)', () => {
  it('link to the catalog the admin listener serves when problems.typeBase names no real page', async () => {
    for (const typeBase of ['https://tollgate.dev/problems/', 'https://errors.example.com/problems/']) {
      const gw = await gateway({ problems: { typeBase } });
      const { page, errors } = await open(gw);
      await signIn(page);
      const href = await problemHref(page, gw);
      expect(href, typeBase).toBe(`${gw.adminUrl}/console/problems#invalid-credentials`);
      await page.goto(href);
      await expect.poll(() => page.locator('#invalid-credentials').textContent()).toContain('401');
      expect(errors).toEqual([]);
    }
  }, 60_000);

  it('link to problems.typeBase + slug when the operator set it to a real URL', async () => {
    const gw = await gateway({ problems: { typeBase: 'https://docs.acme.io/problems/' } });
    const { page } = await open(gw);
    await signIn(page);
    expect(await problemHref(page, gw)).toBe('https://docs.acme.io/problems/invalid-credentials');
  }, 30_000);
});

/** A request with its path sent exactly as given (a URL string would percent-encode `<`, `>` and `"`). */
function rawPath(base: string, method: string, path: string, headers: Record<string, string> = {}) {
  const { hostname, port } = new URL(base);
  return new Promise<number>((resolve, reject) => {
    const req = http.request({ host: hostname, port, method, path, headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

describe('values from audit records are text in every page, never markup (issue 19)', () => {
  it('an attacker-chosen request path and a refused admin call’s target inject nothing', async () => {
    const gw = await gateway();
    const { page, errors } = await open(gw);
    // Anyone can choose a proxied path and, without a valid token, an admin path: both are recorded.
    const path = `/private/"><img/src=x/onerror=window.__pwned=1>`;
    expect(await rawPath(gw.url, 'GET', path)).toBe(401);
    // The admin audit decodes the id it records: percent-escapes carry spaces and slashes into it.
    const target = `key_"><svg onload=window.__pwned=2>`;
    expect(
      await rawPath(gw.adminUrl, 'DELETE', `/keys/${encodeURIComponent(target)}`, {
        authorization: 'Bearer not-a-real-admin-token',
      }),
    ).toBe(401);
    await signIn(page);
    const injected = () =>
      page.evaluate(() => ({
        pwned: (window as unknown as { __pwned?: number }).__pwned ?? null,
        elements: document.querySelectorAll('main img, main svg [onload], main [onerror], main [onload]')
          .length,
      }));

    await page.getByRole('link', { name: 'Audit' }).click();
    await expect
      .poll(
        async () => {
          await page.getByRole('button', { name: 'Show' }).click();
          return page.locator('#audit-table tbody').textContent();
        },
        { timeout: 10_000 },
      )
      .toContain('onerror=window.__pwned=1');
    await page
      .getByRole('button', { name: /^Open request/ })
      .first()
      .click();
    expect(await page.locator('#audit-record').textContent()).toContain(
      '<img/src=x/onerror=window.__pwned=1>',
    );

    await page.getByRole('link', { name: 'Admin activity' }).click();
    await expect
      .poll(() => page.locator('#admin-table tbody').textContent(), { timeout: 10_000 })
      .toContain('onload=window.__pwned=2');
    // A key-like target links to its key page, the id URI-encoded into the hash, shown as text.
    const link = page.locator('#admin-table a.key-link').first();
    expect(await link.getAttribute('href')).toBe(`#/key/${encodeURIComponent(target)}`);
    await link.click();
    await page.waitForSelector('#view-key:not([hidden])');
    expect(await page.locator('#key-title').textContent()).toContain('<svg onload=window.__pwned=2>');
    // And a hostile id typed into the hash.
    await page.goto(
      `${gw.adminUrl}/console/#/tenant/${encodeURIComponent('<img src=x onerror=window.__pwned=3>')}`,
    );
    await expect.poll(() => page.locator('#tenant-title').textContent()).toContain('<img src=x');
    expect(await injected()).toEqual({ pwned: null, elements: 0 });
    expect(errors).toEqual([]);
  }, 60_000);
});
