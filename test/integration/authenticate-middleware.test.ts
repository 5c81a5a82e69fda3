import { describe, expect, it } from 'vitest';
import express from 'express';
import { authenticate, contextOf, problemDetails, requestId, sign } from '../../src/index.js';
import { request } from '../helpers/http.js';
import { listenApp } from '../helpers/express.js';
import { expectProblem } from '../helpers/problem.js';

describe('authenticate() in a plain Express app', () => {
  it('sets the identity from an API key and enforces scopes', async () => {
    const auth = authenticate({ route: { methods: ['apiKey'], scopes: ['orders:read'] } });
    const app = express();
    app.use(requestId());
    app.get('/orders', auth, (req, res) => {
      res.json({ subject: contextOf(req)?.identity?.subject });
    });
    app.use(problemDetails());
    const base = await listenApp(app);
    const ok = await auth.keys.create({ name: 'k', ownerId: 'alice', scopes: ['orders:read'] });
    const res = await request(`${base}/orders`, { headers: { 'x-api-key': ok.key } });
    expect(res.json()).toEqual({ subject: 'alice' });
    const weak = await auth.keys.create({ name: 'w', scopes: [] });
    expectProblem(
      await request(`${base}/orders`, { headers: { 'x-api-key': weak.key } }),
      'insufficient-scope',
    );
    expectProblem(await request(`${base}/orders`), 'missing-credentials');
  });

  it('verifies HMAC signatures over the raw body', async () => {
    const auth = authenticate({ route: { methods: ['apiKey'], hmac: 'required' } });
    const app = express();
    app.use(requestId());
    app.post('/pay', auth, (req, res) => {
      res.json({ bytes: contextOf(req)?.rawBody?.length });
    });
    app.use(problemDetails());
    const base = await listenApp(app);
    const k = await auth.keys.create({ name: 's', hmac: true });
    const ts = String(Math.floor(Date.now() / 1000));
    const body = '{"amount":100}';
    const res = await request(`${base}/pay`, {
      method: 'POST',
      body,
      headers: {
        'x-api-key': k.key,
        'x-timestamp': ts,
        'x-signature': sign(k.signingSecret!, ts, 'POST', '/pay', body),
      },
    });
    expect(res.json()).toEqual({ bytes: body.length });
  });

  it('verifies a signature over the path as sent when mounted under a prefix', async () => {
    const auth = authenticate({ route: { methods: ['apiKey'], hmac: 'required' } });
    const app = express();
    app.use(requestId());
    const orders = express.Router();
    orders.get('/:id', (req, res) => {
      res.json({ id: req.params.id });
    });
    app.use('/orders', auth, orders); // inside, req.url is `/7?x=1`; the client signed `/orders/7?x=1`
    app.use(problemDetails());
    const base = await listenApp(app);
    const k = await auth.keys.create({ name: 's', hmac: true });
    const ts = String(Math.floor(Date.now() / 1000));
    const res = await request(`${base}/orders/7?x=1`, {
      headers: {
        'x-api-key': k.key,
        'x-timestamp': ts,
        'x-signature': sign(k.signingSecret!, ts, 'GET', '/orders/7?x=1', ''),
      },
    });
    expect(res.status).toBe(200);
    expect(res.json()).toEqual({ id: '7' });
  });
});
