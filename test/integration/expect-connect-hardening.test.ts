import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { parseRaw, rawExchange, request, waitFor } from '../helpers/http.js';
import { startUpstream, type Upstream } from '../helpers/upstream.js';

/*
 * Requests Node answers by itself unless the server handles them (issue "Security hardening",
 * item 21): `Expect: 100-continue`, other expectations, CONNECT.
 */

const ADMIN_TOKEN = 'expect-connect-admin-token';

/** A raw connection: what came back so far, and whether the server closed it. */
function connect(port: number) {
  const socket = net.connect(port, '127.0.0.1');
  const state = { text: '', closed: false };
  socket.on('data', (c: Buffer) => (state.text += c.toString('latin1')));
  socket.on('error', () => undefined);
  socket.on('close', () => (state.closed = true));
  return {
    socket,
    state,
    until: (check: () => boolean, ms = 3000) => waitFor(check, ms, 5),
  };
}

const problemOf = (text: string) => {
  const parsed = parseRaw(text);
  return { ...parsed, problem: JSON.parse(parsed.body) as Record<string, any> };
};

function suite(viaExpress: boolean) {
  let up: Upstream;
  let gw: RunningGateway;
  let key: string;

  beforeAll(async () => {
    up = await startUpstream();
    gw = await startGateway({
      server: { viaExpress },
      admin: { host: '127.0.0.1', port: 0, tokens: [ADMIN_TOKEN] },
      routes: [
        { id: 'up', path: '/up', auth: { methods: ['apiKey'] }, upstream: { targets: [up.url] } },
        {
          id: 'buffered',
          path: '/buffered',
          auth: { methods: ['apiKey'] },
          idempotency: {},
          upstream: { targets: [up.url] },
        },
        {
          id: 'limited',
          path: '/limited',
          auth: 'none',
          rateLimits: [{ name: 'one', by: 'ip', limit: 1, windowSec: 3600 }],
          upstream: { targets: [up.url] },
        },
      ],
    });
    key = (await gw.gateway.services.keys.create({ name: 'k' })).key;
  });
  afterAll(async () => {
    await gw.close();
    await up.close();
  });

  const head = (path: string, extra = '') =>
    `POST ${path} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n${extra}\r\n`;

  for (const path of ['/up/x', '/buffered/x']) {
    it(`100 Continue comes only after authentication, then the body is proxied (${path})`, async () => {
      const c = connect(gw.port);
      try {
        c.socket.write(head(path, `X-Api-Key: ${key}\r\nIdempotency-Key: ${path}-ok\r\n`));
        await c.until(() => c.state.text.includes('\r\n\r\n'));
        expect(c.state.text).toBe('HTTP/1.1 100 Continue\r\n\r\n');
        c.socket.write('hello');
        await c.until(() => /\r\n\r\n[^]*"body":"hello"/.test(c.state.text));
        expect(c.state.text.slice('HTTP/1.1 100 Continue\r\n\r\n'.length)).toMatch(/^HTTP\/1\.1 200 /);
      } finally {
        c.socket.destroy();
      }
    });

    it(`a refusal before the body is read answers its final status without 100, unread, and closes (${path})`, async () => {
      const before = up.calls.length;
      const c = connect(gw.port);
      try {
        c.socket.write(head(path));
        await c.until(() => c.state.closed);
        const res = problemOf(c.state.text);
        expect(c.state.text.startsWith('HTTP/1.1 401 ')).toBe(true);
        expect(c.state.text).not.toContain('100 Continue');
        expect(res.headers.connection).toBe('close');
        expect(res.problem.type).toMatch(/missing-credentials$/);
        expect(up.calls.length).toBe(before);
      } finally {
        c.socket.destroy();
      }
    });
  }

  it('a request refused by a rate limit gets no 100 Continue either', async () => {
    expect((await request(`${gw.url}/limited`)).status).toBe(200);
    const c = connect(gw.port);
    try {
      c.socket.write(head('/limited'));
      await c.until(() => c.state.closed);
      expect(c.state.text.startsWith('HTTP/1.1 429 ')).toBe(true);
      expect(c.state.text).not.toContain('100 Continue');
    } finally {
      c.socket.destroy();
    }
  });

  it('the admin listener still answers 100 Continue at once (Node default for handlers that do not defer it)', async () => {
    const port = Number(new URL(gw.adminUrl).port);
    const c = connect(port);
    try {
      c.socket.write(
        `POST /keys HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\n` +
          'Content-Type: application/json\r\nContent-Length: 12\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n',
      );
      await c.until(() => c.state.text.includes('\r\n\r\n'));
      expect(c.state.text).toBe('HTTP/1.1 100 Continue\r\n\r\n');
      c.socket.write('{"name":"e"}');
      await c.until(() => c.state.closed);
      expect(c.state.text).toContain('HTTP/1.1 201 ');
    } finally {
      c.socket.destroy();
    }
  });

  it('an unknown expectation is 417 expectation-failed problem+json with the request id, audited, body unread', async () => {
    const before = up.calls.length;
    const { response, closed } = await rawExchange(
      gw.port,
      `POST /up/x HTTP/1.1\r\nHost: gw.test\r\nExpect: foo\r\nX-Request-Id: expect-${viaExpress}\r\nContent-Length: 5\r\n\r\n`,
    );
    const res = problemOf(response);
    expect(res.status).toBe(417);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.headers['x-request-id']).toBe(`expect-${viaExpress}`);
    expect(res.problem).toMatchObject({ status: 417, request_id: `expect-${viaExpress}` });
    expect(res.problem.type).toMatch(/expectation-failed$/);
    expect(closed).toBe(true);
    expect(up.calls.length).toBe(before);
    await waitFor(
      async () => (await gw.gateway.services.audit.get(`expect-${viaExpress}`)) !== undefined,
      2000,
    );
    expect(await gw.gateway.services.audit.get(`expect-${viaExpress}`)).toMatchObject({
      status: 417,
      problem: 'expectation-failed',
    });
  });

  it('CONNECT is 405 method-not-allowed problem+json with Allow and the request id, audited, then closed', async () => {
    const id = `connect-${viaExpress}`;
    const { response, closed } = await rawExchange(
      gw.port,
      `CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\nX-Request-Id: ${id}\r\n\r\n`,
    );
    const res = problemOf(response);
    expect(res.status).toBe(405);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.headers.allow).toBe('GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS');
    expect(res.headers['x-request-id']).toBe(id);
    expect(res.problem.type).toMatch(/method-not-allowed$/);
    expect(closed).toBe(true);
    await waitFor(async () => (await gw.gateway.services.audit.get(id)) !== undefined, 2000);
    expect(await gw.gateway.services.audit.get(id)).toMatchObject({
      status: 405,
      problem: 'method-not-allowed',
    });
  });

  it('a CONNECT client that resets at once does not take the gateway down', async () => {
    for (let i = 0; i < 5; i++) {
      const c = connect(gw.port);
      c.socket.write('CONNECT internal.example:443 HTTP/1.1\r\nHost: internal.example:443\r\n\r\n');
      c.socket.resetAndDestroy();
    }
    await new Promise((r) => setTimeout(r, 50));
    expect((await request(`${gw.url}/nowhere`)).status).toBe(404);
  });
}

describe('Expect and CONNECT, node:http straight into the pipeline', () => suite(false));
describe('Expect and CONNECT, through the Express app (server.viaExpress)', () => suite(true));
