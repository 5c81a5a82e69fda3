import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import net from 'node:net';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { parseRaw, rawExchange } from '../helpers/http.js';

describe('HTTP server: what Node refuses, and slow clients', () => {
  let gw: RunningGateway;

  beforeAll(async () => {
    gw = await startGateway({
      problems: { typeBase: 'https://errors.example.com/problems/' },
      server: { headersTimeoutMs: 300, requestTimeoutMs: 600, keepAliveTimeoutMs: 300, maxHeaderBytes: 2048 },
      routes: [{ id: 'demo', path: '/demo', mock: { body: { ok: true } } }],
    });
  });
  afterAll(() => gw.close());

  it('passes the timeouts and header limit to http.createServer', () => {
    expect(gw.server.headersTimeout).toBe(300);
    expect(gw.server.requestTimeout).toBe(600);
    expect(gw.server.keepAliveTimeout).toBe(300);
    expect((gw.server as unknown as { maxHeaderSize: number }).maxHeaderSize).toBe(2048);
  });

  it('answers a malformed request line with 400 bad-request problem+json and closes', async () => {
    const { response, closed } = await rawExchange(
      gw.port,
      'GET /demo HTTP/1.1 extra garbage\r\nHost: x\r\n\r\n',
    );
    const parsed = parseRaw(response);
    expect(parsed.status).toBe(400);
    expect(parsed.headers['content-type']).toBe('application/problem+json');
    expect(parsed.headers.connection).toBe('close');
    const body = JSON.parse(parsed.body);
    expect(body.type).toBe('https://errors.example.com/problems/bad-request');
    expect(body.request_id).toBe(parsed.headers['x-request-id']);
    expect(body.instance).toBe(`/requests/${parsed.headers['x-request-id']}`);
    expect(closed).toBe(true);
    // Its instance dereferences like any other request's (SPEC §4: logged and stored).
    expect(await gw.gateway.services.audit.get(body.request_id)).toMatchObject({
      request_id: body.request_id,
      status: 400,
      problem: 'bad-request',
      client_ip: '127.0.0.1',
    });
  });

  it('answers malformed header framing with 400', async () => {
    const { response } = await rawExchange(
      gw.port,
      'GET /demo HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n',
    );
    expect(parseRaw(response).status).toBe(400);
  });

  it('answers headers over the limit with 431 headers-too-large', async () => {
    const { response } = await rawExchange(
      gw.port,
      `GET /demo HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`,
    );
    const parsed = parseRaw(response);
    expect(parsed.status).toBe(431);
    expect(JSON.parse(parsed.body).type).toMatch(/headers-too-large$/);
  });

  it('closes a connection whose headers never finish (slowloris)', async () => {
    const { closed } = await rawExchange(gw.port, 'GET /demo HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n', 5000);
    expect(closed).toBe(true);
  });

  it('closes a request whose body never finishes within requestTimeoutMs', async () => {
    const { closed } = await rawExchange(
      gw.port,
      'POST /demo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial',
      5000,
    );
    expect(closed).toBe(true);
  });

  it('closes idle keep-alive connections after keepAliveTimeoutMs', async () => {
    const closedAfterResponse = await new Promise<boolean>((resolve) => {
      const socket = net.connect(gw.port, '127.0.0.1');
      let data = '';
      const timer = setTimeout(() => {
        socket.destroy();
        resolve(false);
      }, 5000);
      socket.on('data', (c: Buffer) => (data += c.toString()));
      socket.on('close', () => {
        clearTimeout(timer);
        resolve(data.startsWith('HTTP/1.1 200'));
      });
      socket.write('GET /demo HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    expect(closedAfterResponse).toBe(true);
  });
});
