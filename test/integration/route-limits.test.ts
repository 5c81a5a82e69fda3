import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { startGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';
import { validateConfig } from '../../src/config/load.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

/** A chunked POST (no Content-Length): the limit is counted as the body streams. */
function chunked(url: string, chunks: number, size: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: { 'transfer-encoding': 'chunked' } }, (r) => {
      let body = '';
      r.on('data', (c: Buffer) => (body += c.toString()));
      r.on('end', () => resolve({ status: r.statusCode ?? 0, body }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    for (let i = 0; i < chunks; i++) req.write(Buffer.alloc(size));
    req.end();
  });
}

describe('limits.bodyBytes per route (SPEC §9)', () => {
  async function setup() {
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const config = {
      limits: { bodyBytes: 1000 },
      routes: [
        {
          id: 'upload',
          path: '/v1/uploads',
          auth: 'none',
          limits: { bodyBytes: 4000 },
          upstream: { targets: [up.url] },
        },
        {
          id: 'small',
          path: '/v1/notes',
          auth: 'none',
          limits: { bodyBytes: 100 },
          idempotency: { methods: ['POST'] },
          upstream: { targets: [up.url] },
        },
        { id: 'rest', path: '/v1', auth: 'none', upstream: { targets: [up.url] } },
      ],
    };
    const gw = await startGateway(config as any);
    cleanup.push(() => gw.close());
    return { gw, up, config };
  }

  it('an upload route takes more than the top-level limit; the rest keep it', async () => {
    const { gw, up } = await setup();
    const big = Buffer.alloc(3000);
    expect((await request(`${gw.url}/v1/uploads`, { method: 'POST', body: big })).status).toBe(200);
    expect(up.calls[0]!.body.length).toBe(3000);
    expectProblem(await request(`${gw.url}/v1/other`, { method: 'POST', body: big }), 'payload-too-large');
    expectProblem(
      await request(`${gw.url}/v1/uploads`, { method: 'POST', body: Buffer.alloc(5000) }),
      'payload-too-large',
    );
    expect(up.calls.length).toBe(1);
  });

  it('a streamed body is counted against the route limit (proxy), and a buffered one (read-body)', async () => {
    const { gw } = await setup();
    expect((await chunked(`${gw.url}/v1/uploads`, 5, 500)).status).toBe(200);
    expect((await chunked(`${gw.url}/v1/other`, 5, 500)).status).toBe(413);
    expect((await chunked(`${gw.url}/v1/uploads`, 10, 500)).status).toBe(413);
    // The idempotency route buffers the body: its lower limit applies there too.
    expect((await chunked(`${gw.url}/v1/notes`, 3, 50)).status).toBe(413);
    const ok = await request(`${gw.url}/v1/notes`, { method: 'POST', body: Buffer.alloc(80) });
    expect(ok.status).toBe(200);
  });

  it('a bad value is refused with its path; reload with one keeps the old config', async () => {
    const { gw, config } = await setup();
    for (const bodyBytes of [0, -1, 'lots', 1.5]) {
      const bad = structuredClone(config);
      (bad.routes[0] as any).limits = { bodyBytes };
      const result = gw.gateway.reload(bad);
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.issues.map((i) => i.path)).toEqual(['routes[0].limits.bodyBytes']);
    }
    const unknown = validateConfig({ routes: [{ id: 'a', path: '/a', mock: {}, limits: { bytes: 1 } }] });
    expect(unknown.ok).toBe(false);
    if (!unknown.ok) expect(unknown.issues.map((i) => i.path)).toEqual(['routes[0].limits.bytes']);
    expect((await request(`${gw.url}/v1/uploads`, { method: 'POST', body: Buffer.alloc(3000) })).status).toBe(
      200,
    );
  });
});
