import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PROCESS_START_MS, PROCESS_TEST_MS } from '../helpers/cli.js';

// The README's library example, extracted by its marker and run as it is written: an ES module
// importing 'tollgate' (resolved by the package's self-reference to the built dist/).
const root = join(import.meta.dirname, '..', '..');
const MARKER = '<!-- readme-library-example -->';

function readmeExample(): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const at = readme.indexOf(MARKER);
  expect(at, `README.md has ${MARKER}`).toBeGreaterThan(-1);
  const block = /```js\n([\s\S]*?)\n```/.exec(readme.slice(at));
  expect(block, 'a ```js block follows the marker').not.toBeNull();
  return block![1]!;
}

// Inside the package (test-output/ is ignored by git), so `import 'tollgate'` resolves to itself.
mkdirSync(join(root, 'test-output'), { recursive: true });
const dir = mkdtempSync(join(root, 'test-output', 'readme-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the README library example', { timeout: PROCESS_TEST_MS }, () => {
  it('runs verbatim: keys, a scoped route, a rate limit, notFound and problem details', async () => {
    const file = join(dir, 'example.mjs');
    writeFileSync(file, readmeExample());
    const child = spawn(process.execPath, [file], {
      env: { ...process.env, PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      let out = '';
      const curl = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no curl line in ${PROCESS_START_MS} ms: ${out}`)),
          PROCESS_START_MS,
        );
        const onData = (chunk: Buffer) => {
          out += chunk.toString();
          const line = out.split('\n').find((l) => l.startsWith('curl '));
          if (line) {
            clearTimeout(timer);
            resolve(line);
          }
        };
        child.stdout.on('data', onData);
        child.stderr.on('data', onData);
        child.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`the example exited (${code}): ${out}`));
        });
      });
      const m = /x-api-key: (\S+)' (http:\/\/\S+)\/orders\/42/.exec(curl);
      expect(m, curl).not.toBeNull();
      const [, key, base] = m!;

      const ok = await fetch(`${base}/orders/42`, { headers: { 'x-api-key': key! } });
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual({ id: '42', status: 'shipped' });

      const anonymous = await fetch(`${base}/orders/42`);
      expect(anonymous.status).toBe(401);
      expect(anonymous.headers.get('content-type')).toMatch(/^application\/problem\+json/);
      const noKey = (await anonymous.json()) as Record<string, string>;
      expect(noKey.type).toMatch(/^https:\/\/errors\.example\.com\/problems\//);
      expect(noKey.instance).toBe(`https://api.example.com/requests/${noKey.request_id}`);

      const missing = await fetch(`${base}/orders/7`, { headers: { 'x-api-key': key! } });
      expect(missing.status).toBe(404);
      expect(((await missing.json()) as { detail: string }).detail).toBe('No order 7.');

      // The third keyed request is still within the limit of 3 a minute; the fourth is not.
      expect((await fetch(`${base}/orders/42`, { headers: { 'x-api-key': key! } })).status).toBe(200);
      const limited = await fetch(`${base}/orders/42`, { headers: { 'x-api-key': key! } });
      expect(limited.status).toBe(429);
      expect(limited.headers.get('ratelimit-policy') ?? limited.headers.get('ratelimit')).toBeTruthy();

      const nowhere = await fetch(`${base}/nowhere`);
      expect(nowhere.status).toBe(404);
      const unrouted = (await nowhere.json()) as Record<string, string>;
      expect(unrouted.type).toBe('https://errors.example.com/problems/not-found');
      expect(nowhere.headers.get('x-request-id')).toBe(unrouted.request_id);
    } finally {
      child.kill('SIGTERM');
    }
  });
});
