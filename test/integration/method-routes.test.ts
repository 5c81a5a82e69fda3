import { afterEach, describe, expect, it } from 'vitest';
import { startGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

async function setup() {
  const reads = await startUpstream();
  const writes = await startUpstream();
  cleanup.push(
    () => reads.close(),
    () => writes.close(),
  );
  const config = {
    routes: [
      {
        id: 'docs-write',
        path: '/v1/documents',
        methods: ['POST', 'PUT'],
        auth: { methods: ['apiKey'] },
        rateLimits: [{ name: 'writes', by: 'key', limit: 1, windowSec: 60 }],
        upstream: { targets: [writes.url] },
      },
      {
        id: 'docs-read',
        path: '/v1/documents',
        methods: ['GET'],
        auth: 'none',
        upstream: { targets: [reads.url] },
      },
    ],
  };
  const gw = await startGateway(config as any);
  cleanup.push(() => gw.close());
  return { gw, reads, writes, config };
}

describe('per-method routes through real sockets (SPEC §9)', () => {
  it('the method picks the route: its own auth, limits and upstream', async () => {
    const { gw, reads, writes } = await setup();
    const read = await request(`${gw.url}/v1/documents/7`);
    expect(read.status).toBe(200);
    expect(reads.calls.map((c) => c.url)).toEqual(['/v1/documents/7']);
    expect(read.headers.ratelimit).toBeUndefined();

    expectProblem(
      await request(`${gw.url}/v1/documents`, { method: 'POST', body: '{}' }),
      'missing-credentials',
    );
    const { key } = await gw.gateway.services.keys.create({ name: 'w' });
    const headers = { 'x-api-key': key, 'content-type': 'application/json' };
    const first = await request(`${gw.url}/v1/documents`, { method: 'POST', headers, body: '{}' });
    expect(first.status).toBe(200);
    expect(first.headers['ratelimit-policy']).toContain('writes');
    expect(writes.calls.map((c) => c.method)).toEqual(['POST']);
    const second = await request(`${gw.url}/v1/documents`, { method: 'PUT', headers, body: '{}' });
    expectProblem(second, 'rate-limit-exceeded');
    // Reads stay free and public.
    expect((await request(`${gw.url}/v1/documents`, { method: 'HEAD' })).status).toBe(200);
  });

  it('a method no route of the path lists is 405 with Allow = the union', async () => {
    const { gw, reads, writes } = await setup();
    const res = await request(`${gw.url}/v1/documents/7`, { method: 'DELETE' });
    expectProblem(res, 'method-not-allowed');
    expect(res.headers.allow).toBe('POST, PUT, GET, HEAD');
    expect(reads.calls.length + writes.calls.length).toBe(0);
  });

  it('reload with overlapping methods on one path is refused with the path, and keeps the old routes', async () => {
    const { gw, config } = await setup();
    const bad = structuredClone(config);
    bad.routes[1]!.methods = ['GET', 'POST'];
    const result = gw.gateway.reload(bad);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.issues.map((i) => i.path)).toEqual(['routes[1].methods']);
    expect((await request(`${gw.url}/v1/documents`, { method: 'DELETE' })).headers.allow).toBe(
      'POST, PUT, GET, HEAD',
    );
    expect((await request(`${gw.url}/v1/documents`)).status).toBe(200);
  });
});
