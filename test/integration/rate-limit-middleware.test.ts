import { describe, expect, it } from 'vitest';
import express from 'express';
import { authenticate, problemDetails, quota, rateLimit, requestId } from '../../src/index.js';
import { request, waitFor, type Reply } from '../helpers/http.js';
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

  it('counts a meter the handler reports, in a sliding window, and a shadow limit never refuses', async () => {
    const app = express();
    app.use(requestId());
    let served = 0;
    app.post(
      '/complete',
      rateLimit({
        id: 'llm',
        meters: { tokens: { responseHeader: 'x-usage-tokens' } },
        limits: [
          {
            name: 'tokens',
            by: 'ip',
            limit: 10,
            windowSec: 3600,
            meter: 'tokens',
            algorithm: 'sliding-window',
          },
          { name: 'trial', by: 'ip', limit: 1, windowSec: 3600, mode: 'shadow' },
        ],
      }),
      (_req, res) => {
        served++;
        res.setHeader('x-usage-tokens', '6');
        res.json({ ok: true });
      },
    );
    app.use(problemDetails());
    const base = await listenApp(app);
    const first = await request(`${base}/complete`, { method: 'POST' });
    expect(first.status).toBe(200);
    // The metered limit only: a shadow limit is nothing a client should plan for (SPEC §10).
    expect(first.headers['ratelimit-policy']).toBe('"tokens";q=10;w=3600;qu="tokens"');
    // 6 tokens settled once the response ended: under 10, so the next one is admitted (shadow
    // `trial` is over its limit of 1 and still refuses nothing), and it brings the meter to 12.
    expect((await request(`${base}/complete`, { method: 'POST' })).status).toBe(200);
    expect(served).toBe(2);
    const answers: Reply[] = [];
    await waitFor(async () => {
      answers.push(await request(`${base}/complete`, { method: 'POST' }));
      return answers.at(-1)!.status === 429;
    });
    expect(expectProblem(answers.at(-1)!, 'rate-limit-exceeded').policy).toBe('tokens');
    // Settlement is asynchronous (batched): a request racing it may still be admitted, never more.
    expect(served).toBeLessThanOrEqual(3);
  });

  it('refuses at set-up a limit counting a meter it was not given', () => {
    expect(() =>
      rateLimit({ limits: [{ name: 'tokens', by: 'ip', limit: 10, windowSec: 60, meter: 'tokens' }] }),
    ).toThrow(/meter "tokens"/);
  });
});
