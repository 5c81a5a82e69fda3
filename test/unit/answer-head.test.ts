import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { answerHead, type RequestContext } from '../../src/core/context.js';
import { fakeExchange, parseResponse } from '../../src/core/fake-context.js';
import { createGateway, definePolicy, type Gateway } from '../../src/index.js';

const gateways: Gateway[] = [];
afterAll(async () => {
  for (const g of gateways) await g.close();
});

/** One exchange through `gateway.handle`, in-process; the answer as the client would read it. */
function exchange(gateway: Gateway, headers: Record<string, string> = {}, method = 'GET') {
  const { req, res, socket } = fakeExchange({ url: '/m/x', headers, method });
  return new Promise<ReturnType<typeof parseResponse>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no answer within 5 s')), 5000);
    res.once('finish', () => {
      clearTimeout(timer);
      resolve(parseResponse(socket.written));
    });
    gateway.handle(req, res);
  });
}

function gatewayOf(config: Record<string, unknown>, options: Parameters<typeof createGateway>[1] = {}) {
  const g = createGateway({ listen: { host: '127.0.0.1', port: 0 }, ...config }, options);
  gateways.push(g);
  return g;
}

const ORIGIN = 'http://app.test';
const tag = definePolicy<never>({
  name: 'tag',
  create: () => (ctx) => {
    ctx.setResponseHeader('X-Policy', 'set-by-policy');
    ctx.setResponseHeader('cache-control', 'private');
  },
});

describe('answerHead', () => {
  const ctx = (own: string[] | undefined) => ({ responseHeaders: own }) as unknown as RequestContext;

  it('puts the collected headers first; a name in the list wins, in any case', () => {
    expect(answerHead(ctx(['vary', 'Origin', 'x-a', '1']), ['X-A', '2', 'content-length', '0'])).toEqual([
      'vary',
      'Origin',
      'X-A',
      '2',
      'content-length',
      '0',
    ]);
  });

  it('leaves out the collected names it is told to drop, and is the list itself when nothing was collected', () => {
    expect(answerHead(ctx(['etag', '"1"', 'x-b', '1']), ['x-c', '3'], ['etag'])).toEqual([
      'x-b',
      '1',
      'x-c',
      '3',
    ]);
    const list = ['x-c', '3'];
    expect(answerHead(ctx(undefined), list)).toBe(list);
    expect(answerHead(undefined, list)).toBe(list);
  });
});

describe('gateway response headers on the answers the gateway writes', () => {
  it('a mock answer carries CORS, a policy’s and a transform’s headers; the mock’s own win on a conflict', async () => {
    const g = gatewayOf(
      {
        cors: { origins: [ORIGIN] },
        policies: { tag: {} },
        routes: [
          {
            id: 'm',
            path: '/m',
            policies: ['tag'],
            headers: { response: { set: { 'x-transform': 't', 'x-mocked': 'from-transform' } } },
            mock: { body: { ok: true }, headers: { 'X-Mocked': 'from-mock' } },
          },
        ],
      },
      { policies: { tag } },
    );
    const r = await exchange(g, { origin: ORIGIN });
    expect(r.status).toBe(200);
    expect(r.headers['access-control-allow-origin']).toBe(ORIGIN);
    expect(r.headers.vary).toBe('Origin');
    expect(r.headers['x-policy']).toBe('set-by-policy');
    expect(r.headers['cache-control']).toBe('private');
    expect(r.headers['x-transform']).toBe('t');
    expect(r.headers['x-mocked']).toBe('from-mock');
  });

  it('a problem answer keeps CORS and RateLimit headers; its own Cache-Control and Content-Length win', async () => {
    const g = gatewayOf(
      {
        cors: { origins: [ORIGIN] },
        policies: { tag: {} },
        routes: [
          {
            id: 'm',
            path: '/m',
            policies: ['tag'],
            rateLimits: [{ name: 'one', by: 'ip', limit: 1, windowSec: 60 }],
            mock: { body: { ok: true } },
          },
        ],
      },
      { policies: { tag } },
    );
    expect((await exchange(g, { origin: ORIGIN })).status).toBe(200);
    const r = await exchange(g, { origin: ORIGIN });
    expect(r.status).toBe(429);
    expect(r.headers['content-type']).toBe('application/problem+json');
    expect(r.headers['access-control-allow-origin']).toBe(ORIGIN);
    expect(r.headers['access-control-expose-headers']).toContain('RateLimit');
    expect(r.headers['ratelimit-policy']).toBeDefined();
    expect(r.headers['retry-after']).toBeDefined();
    expect(r.headers['cache-control']).toBe('no-store');
    expect(Number(r.headers['content-length'])).toBe(r.body.length);
    expect(r.headers['x-request-id']).toBe((r.json() as { request_id: string }).request_id);
  });

  it('a CORS preflight carries the gateway’s collected headers and its own', async () => {
    const g = gatewayOf({
      cors: { origins: [ORIGIN] },
      routes: [{ id: 'm', path: '/m', mock: { body: { ok: true } } }],
    });
    const r = await exchange(g, { origin: ORIGIN, 'access-control-request-method': 'POST' }, 'OPTIONS');
    expect(r.status).toBe(204);
    expect(r.headers['access-control-allow-origin']).toBe(ORIGIN);
    expect(r.headers['access-control-allow-methods']).toContain('POST');
    expect(r.headers.vary).toBe('Origin, Access-Control-Request-Headers');
    expect(r.headers['content-length']).toBe('0');
  });

  it('an Express middleware policy reads the gateway’s headers on res and answers with them', async () => {
    const seen: unknown[] = [];
    const answering = () => (_req: IncomingMessage, res: ServerResponse) => {
      seen.push(res.getHeader('x-policy'), res.getHeader('access-control-allow-origin'));
      res.setHeader('x-policy', 'replaced-by-middleware');
      res.statusCode = 202;
      res.end('done');
    };
    const g = gatewayOf(
      {
        cors: { origins: [ORIGIN] },
        policies: { tag: {}, answering: {} },
        routes: [{ id: 'm', path: '/m', policies: ['tag', 'answering'], mock: { body: { ok: true } } }],
      },
      { policies: { tag, answering } },
    );
    const r = await exchange(g, { origin: ORIGIN });
    expect(seen).toEqual(['set-by-policy', ORIGIN]);
    expect(r.status).toBe(202);
    expect(r.text).toBe('done');
    expect(r.headers['x-policy']).toBe('replaced-by-middleware');
    expect(r.headers['access-control-allow-origin']).toBe(ORIGIN);
    expect(r.headers.vary).toBe('Origin');
    expect(r.headers['x-request-id']).toBeDefined();
  });
});
