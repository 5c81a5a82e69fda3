import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import { expectProblem as expectProblemOf } from '../helpers/problem.js';

const TYPE_BASE = 'https://errors.example.com/problems/';
const expectProblem = (
  res: Parameters<typeof expectProblemOf>[0],
  slug: Parameters<typeof expectProblemOf>[1],
) => expectProblemOf(res, slug, TYPE_BASE);

describe('routing, local answers and correlation', () => {
  let gw: RunningGateway;

  beforeAll(async () => {
    gw = await startGateway({
      problems: { typeBase: TYPE_BASE },
      routes: [
        {
          id: 'demo',
          path: '/demo',
          methods: ['GET', 'POST'],
          mock: { status: 201, headers: { 'x-demo': '1' }, body: { ok: true } },
        },
        { id: 'text', path: '/demo/text', mock: { body: 'plain words' } },
        {
          id: 'legacy',
          path: '/v0',
          gone: { redirectEndpoint: '/v1/orders', sunset: '2026-01-01T00:00:00Z' },
        },
      ],
    });
  });
  afterAll(() => gw.close());

  it('answers a mock route locally with its status, headers, body and security headers', async () => {
    const res = await request(`${gw.url}/demo`);
    expect(res.status).toBe(201);
    expect(res.headers['x-demo']).toBe('1');
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['content-security-policy']).toContain("default-src 'none'");
    expect(res.json()).toEqual({ ok: true });
  });

  it('matches the longest segment prefix', async () => {
    const text = await request(`${gw.url}/demo/text/x`);
    expect(text.text).toBe('plain words');
    expect(text.headers['content-type']).toBe('text/plain; charset=utf-8');
    expectProblem(await request(`${gw.url}/demox`), 'not-found');
  });

  it('an escaped spelling of a path reaches the same route (no slipping past a more specific one)', async () => {
    // `%74` is `t`: `/demo/%74ext` is `/demo/text`, which an upstream that decodes would also see.
    expect((await request(`${gw.url}/demo/%74ext/x`)).text).toBe('plain words');
    // Case is ignored by default (routing.caseSensitive), so `/demo/TEXT` is the `/demo/text` route.
    expect((await request(`${gw.url}/%64emo/%54EXT`)).text).toBe('plain words');
  });

  it('405 with Allow for a method the route does not list; HEAD comes with GET', async () => {
    const res = await request(`${gw.url}/demo`, { method: 'DELETE' });
    expectProblem(res, 'method-not-allowed');
    expect(res.headers.allow).toBe('GET, POST, HEAD');
    const head = await request(`${gw.url}/demo`, { method: 'HEAD' });
    expect(head.status).toBe(201);
    expect(head.body.length).toBe(0);
  });

  it('410 gone with redirect_endpoint, Sunset and Deprecation', async () => {
    const res = await request(`${gw.url}/v0/anything`);
    const body = expectProblem(res, 'gone');
    expect(body.redirect_endpoint).toBe('/v1/orders');
    expect(res.headers.sunset).toBe('Thu, 01 Jan 2026 00:00:00 GMT');
    expect(res.headers.deprecation).toBe('@1767225600');
  });

  it('HEAD of an error gets the headers only', async () => {
    const res = await request(`${gw.url}/nowhere`, { method: 'HEAD' });
    expect(res.status).toBe(404);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.body.length).toBe(0);
  });

  it('keeps a well-formed X-Request-Id and replaces a bad one', async () => {
    const kept = await request(`${gw.url}/demo`, { headers: { 'x-request-id': 'abc.DEF_1:2-3' } });
    expect(kept.headers['x-request-id']).toBe('abc.DEF_1:2-3');
    for (const bad of ['has space', 'x'.repeat(129), 'ünïcode', 'a,b']) {
      const res = await request(`${gw.url}/nowhere`, {
        headers: { 'x-request-id': encodeURI(bad).replace(/%20/g, ' ') },
      });
      const id = String(res.headers['x-request-id']);
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
      expect(res.json().request_id).toBe(id);
    }
  });

  it('refuses encoded slashes in the path with 400 bad-request', async () => {
    expectProblem(await request(`${gw.url}/demo/%2F..%2Fadmin`), 'bad-request');
  });

  it('routes on the normalised path: dot segments cannot reach another route unseen', async () => {
    const res = await request(`${gw.url}/v0/../demo/text`);
    expect(res.status).toBe(200);
    expect(res.text).toBe('plain words');
  });
});
