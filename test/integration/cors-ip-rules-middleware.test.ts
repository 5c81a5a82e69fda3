import express from 'express';
import { describe, expect, it } from 'vitest';
import { Problem, cors, ipRules, problemDetails, requestId } from '../../src/index.js';
import { listenApp } from '../helpers/express.js';
import { request } from '../helpers/http.js';
import { expectProblem } from '../helpers/problem.js';

const APP = 'https://app.example.com';

describe('cors() and ipRules() as Express middleware', () => {
  it('cors(): preflight 204, and problemDetails() errors of later middleware keep the CORS headers', async () => {
    const app = express();
    app.use(requestId());
    app.use(cors({ origins: [APP] }));
    app.get('/x', () => {
      throw new Problem('forbidden', { detail: 'no' });
    });
    app.use(problemDetails());
    const url = await listenApp(app);
    const pre = await request(`${url}/x`, {
      method: 'OPTIONS',
      headers: { origin: APP, 'access-control-request-method': 'GET' },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers['access-control-allow-origin']).toBe(APP);
    const refused = await request(`${url}/x`, { headers: { origin: APP } });
    expectProblem(refused, 'forbidden');
    expect(refused.headers['access-control-allow-origin']).toBe(APP);
    expect(refused.headers['access-control-expose-headers']).toContain('X-Request-Id');
    const evil = await request(`${url}/x`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.test', 'access-control-request-method': 'GET' },
    });
    expectProblem(evil, 'forbidden');
    expect(() => cors({ origins: '*', credentials: true })).toThrow();
  });

  it('ipRules(): the socket peer is judged; X-Forwarded-For only through trustProxy', async () => {
    const app = express();
    app.use('/denied', ipRules({ deny: ['127.0.0.0/8'] }));
    app.use('/proxied', ipRules({ allow: ['10.0.0.0/8'], trustProxy: 'loopback' }));
    app.use((_req, res) => {
      res.json({ ok: true });
    });
    app.use(problemDetails());
    const url = await listenApp(app);
    expectProblem(
      await request(`${url}/denied`, { headers: { 'x-forwarded-for': '10.1.1.1' } }),
      'forbidden',
    );
    expect((await request(`${url}/proxied`, { headers: { 'x-forwarded-for': '10.1.1.1' } })).status).toBe(
      200,
    );
    expectProblem(
      await request(`${url}/proxied`, { headers: { 'x-forwarded-for': '192.0.2.1' } }),
      'forbidden',
    );
    expect(() => ipRules({ allow: ['10.0.0/8'] })).toThrow();
  });
});
