import { afterEach, describe, expect, it } from 'vitest';
import express from 'express';
import { createGateway, problemDetails, proxy, Problem, requestId } from '../../src/index.js';
import { request } from '../helpers/http.js';
import { listenApp } from '../helpers/express.js';
import { startUpstream } from '../helpers/upstream.js';
import { expectProblem } from '../helpers/problem.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

describe('Tollgate as Express middleware', () => {
  it('requestId(), proxy() and problemDetails() work in a plain Express app', async () => {
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const app = express();
    app.use(requestId());
    app.use('/orders', proxy({ targets: [up.url + '/svc'], timeoutMs: 2000 }));
    app.get('/forbidden', () => {
      throw new Problem('forbidden', { detail: 'Not for you.' });
    });
    app.get('/boom', () => {
      throw new Error('database password is hunter2');
    });
    app.use(problemDetails({ typeBase: 'https://errors.example.com/problems/' }));
    const base = await listenApp(app);

    const proxied = await request(`${base}/orders/7?x=1`, { headers: { 'x-request-id': 'lib-1' } });
    expect(proxied.status).toBe(200);
    expect(up.calls[0]!.url).toBe('/svc/7?x=1');
    expect(up.calls[0]!.headers['x-request-id']).toBe('lib-1');
    expect(proxied.headers['x-request-id']).toBe('lib-1');

    const forbidden = await request(`${base}/forbidden`);
    expect(expectProblem(forbidden, 'forbidden', 'https://errors.example.com/problems/').detail).toBe(
      'Not for you.',
    );

    const boom = await request(`${base}/boom`);
    expectProblem(boom, 'internal-error');
    expect(boom.text).not.toContain('hunter2');
  });

  it('proxy() hands upstream failures to problemDetails()', async () => {
    const app = express();
    app.use(requestId());
    app.use('/down', proxy({ targets: ['http://127.0.0.1:1'], retries: 0 }));
    app.use(problemDetails());
    const base = await listenApp(app);
    expectProblem(await request(`${base}/down`), 'bad-gateway');
  });

  it('createGateway(config).app mounts under an Express app', async () => {
    const gateway = createGateway({
      routes: [{ id: 'demo', path: '/demo', mock: { body: { from: 'gateway' } } }],
    });
    cleanup.push(() => gateway.close());
    const app = express();
    app.use('/gw', gateway.app);
    const base = await listenApp(app);
    const res = await request(`${base}/gw/demo`);
    expect(res.json()).toEqual({ from: 'gateway' });
  });
});
