import { describe, expect, it } from 'vitest';
import express from 'express';
import { authenticate, problemDetails, quota, rateLimit, requestId } from '../../src/index.js';
import { request } from '../helpers/http.js';
import { listenApp } from '../helpers/express.js';
import { expectProblem } from '../helpers/problem.js';
import { parsePolicies, roomInWindow } from '../helpers/ratelimit.js';

describe('rateLimit() and quota() in a plain Express app', () => {
  it('limits by IP with headers and a 429 problem', async () => {
    await roomInWindow(60, 10_000);
    const app = express();
    app.use(requestId());
    app.get(
      '/search',
      rateLimit({ limits: [{ name: 'burst', by: 'ip', limit: 2, windowSec: 60 }] }),
      (_req, res) => {
        res.json({ ok: true });
      },
    );
    app.use(problemDetails());
    const base = await listenApp(app);
    const first = await request(`${base}/search`);
    expect(parsePolicies(first.headers['ratelimit-policy'])).toEqual([{ name: 'burst', q: 2, w: 60 }]);
    expect((await request(`${base}/search`)).status).toBe(200);
    const refused = await request(`${base}/search`);
    expect(expectProblem(refused, 'rate-limit-exceeded').policy).toBe('burst');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
  });

  it('charges a quota per credential, not for responses of 500 or more', async () => {
    const auth = authenticate({ route: { methods: ['apiKey'] } });
    const app = express();
    app.use(requestId());
    app.get('/report', auth, quota({ limit: 2, period: 'day' }), (req, res) => {
      res.status(req.query.fail ? 500 : 200).json({});
    });
    app.use(problemDetails());
    const base = await listenApp(app);
    const { key } = await auth.keys.create({ name: 'k' });
    const call = (q = '') => request(`${base}/report${q}`, { headers: { 'x-api-key': key } });
    expect((await call('?fail=1')).status).toBe(500);
    expect((await call()).status).toBe(200);
    expect((await call()).status).toBe(200);
    const body = expectProblem(await call(), 'quota-exceeded');
    expect(body.limit).toBe(2);
  });
});
