import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import express from 'express';
import { startGateway } from '../helpers/gateway.js';
import { freePort, request, waitFor } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { startOtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver.js';
import { createLogger } from '../../src/observability/logger.js';
import { validateConfig } from '../../src/config/load.js';
import { proxy } from '../../src/policies/proxy/middleware.js';
import { problemDetails } from '../../src/problems/problem-details.js';
import { requestId } from '../../src/core/middleware.js';

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

const TOKEN = 'telemetry-admin-token-0123';
const COLLECTOR_SECRET = 'collector-secret-8d1f0c9e';
const QUERY_SECRET = 'query-secret-77ab01';
const INBOUND = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
// Export within milliseconds: the tests wait on the receiver, never on a clock.
const fast = { scheduledDelayMs: 10, exportTimeoutMs: 2_000, shutdownTimeoutMs: 2_000 };

function capturedLogger() {
  const lines: string[] = [];
  const logger = createLogger({
    level: 'info',
    format: 'json',
    destination: { write: (s: string) => void lines.push(s) },
  });
  return { logger, lines };
}

const byKind = (spans: ReceivedSpan[], kind: string) => spans.filter((s) => s.kind === kind);

describe('telemetry.otlp: spans over OTLP/HTTP, decoded with the official protos', () => {
  it('exports a server span and a client span per request, parented on the inbound traceparent and matching what the upstream saw; no secret in the payload', async () => {
    const receiver = await startOtlpReceiver();
    cleanup.push(() => receiver.close());
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const { logger, lines } = capturedLogger();
    const jwtSecret = 'telemetry-jwt-secret-0123456789abcdef';
    const gw = await startGateway(
      {
        admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
        auth: { jwt: [{ issuer: 'https://idp.test/', secret: jwtSecret }] },
        telemetry: {
          otlp: {
            endpoint: `${receiver.url}/`,
            serviceName: 'edge-gateway',
            headers: { authorization: `Bearer ${COLLECTOR_SECRET}`, 'x-tenant': 'ops' },
          },
        },
        routes: [
          {
            id: 'orders',
            path: '/v1/orders',
            auth: { methods: ['apiKey', 'jwt'] },
            upstream: { targets: [up.url] },
          },
        ],
      },
      { logger, telemetry: fast },
    );
    cleanup.push(() => gw.close());
    const { key, record } = await gw.gateway.services.keys.create({ name: 'k' });
    const { SignJWT } = await import('jose');
    const bearer = await new SignJWT({ sub: 'someone' })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer('https://idp.test/')
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode(jwtSecret));

    const res = await request(`${gw.url}/v1/orders/7?token=${QUERY_SECRET}`, {
      headers: { 'x-api-key': key, traceparent: INBOUND },
    });
    expect(res.status).toBe(200);
    // A second request with a bearer token (its spans are checked for secrets below).
    const viaJwt = await request(`${gw.url}/v1/orders?access=${QUERY_SECRET}`, {
      headers: { authorization: `Bearer ${bearer}` },
    });
    expect(viaJwt.status).toBe(200);
    await receiver.waitForSpans(4);
    const spans = await receiver.waitForSpans(4);
    const server = spans.find((s) => s.kind === 'SPAN_KIND_SERVER' && s.parentSpanId === '00f067aa0ba902b7');
    const client = spans.find((s) => s.kind === 'SPAN_KIND_CLIENT' && s.parentSpanId === server?.spanId);
    expect(server).toBeDefined();
    expect(client).toBeDefined();

    // The inbound trace continues: the caller's span is the server span's parent.
    expect(server!.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(server!.parentSpanId).toBe('00f067aa0ba902b7');
    expect(client!.traceId).toBe(server!.traceId);
    expect(client!.parentSpanId).toBe(server!.spanId);
    // The upstream's parent is the client span.
    expect(up.calls[0]!.headers.traceparent).toBe(`00-${client!.traceId}-${client!.spanId}-01`);
    const jwtServer = spans.find((s) => s.kind === 'SPAN_KIND_SERVER' && s !== server)!;
    expect(jwtServer.attributes['tollgate.auth.method']).toBe('jwt');
    expect(typeof jwtServer.attributes['tollgate.credential.id']).toBe('string');

    expect(server!.name).toBe('GET /v1/orders');
    expect(server!.attributes).toMatchObject({
      'http.request.method': 'GET',
      'http.route': '/v1/orders',
      'http.response.status_code': 200,
      'tollgate.route.id': 'orders',
      'tollgate.credential.id': record.id,
      'tollgate.auth.method': 'api-key',
      'tollgate.request.id': res.headers['x-request-id'],
    });
    expect(client!.attributes).toMatchObject({
      'http.request.method': 'GET',
      'server.address': '127.0.0.1',
      'server.port': up.port,
      'http.response.status_code': 200,
    });
    expect(client!.attributes['http.request.resend_count']).toBeUndefined();
    expect(server!.resource['service.name']).toBe('edge-gateway');

    // The exporter's headers reached the collector; nothing secret is in what it got.
    const exported = receiver.requests.find((r) => r.path === '/v1/traces')!;
    expect(exported.headers.authorization).toBe(`Bearer ${COLLECTOR_SECRET}`);
    expect(exported.headers['x-tenant']).toBe('ops');
    for (const r of receiver.requests)
      for (const secret of [
        key,
        key.slice(-12),
        bearer,
        bearer.split('.')[2]!,
        QUERY_SECRET,
        COLLECTOR_SECRET,
        'token=',
      ])
        expect(r.body.includes(secret)).toBe(false);
    const decoded = JSON.stringify(spans);
    for (const secret of [key, bearer, QUERY_SECRET, COLLECTOR_SECRET]) expect(decoded).not.toContain(secret);
    // Nor in the log.
    expect(lines.join('')).not.toContain(COLLECTOR_SECRET);
  });

  it('starts the trace the gateway logs when no valid traceparent came in: a root server span with the logged trace id', async () => {
    const receiver = await startOtlpReceiver();
    cleanup.push(() => receiver.close());
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGateway(
      {
        admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
        telemetry: { otlp: { endpoint: receiver.url } },
        routes: [{ id: 'open', path: '/open', auth: 'none', upstream: { targets: [up.url] } }],
      },
      { telemetry: fast },
    );
    cleanup.push(() => gw.close());
    const res = await request(`${gw.url}/open`, { headers: { traceparent: 'not-a-traceparent' } });
    expect(res.status).toBe(200);
    const spans = await receiver.waitForSpans(2);
    const server = byKind(spans, 'SPAN_KIND_SERVER')[0]!;
    const client = byKind(spans, 'SPAN_KIND_CLIENT')[0]!;
    expect(server.parentSpanId).toBe('');
    expect(server.resource['service.name']).toBe('tollgate');
    expect(up.calls[0]!.headers.traceparent).toBe(`00-${server.traceId}-${client.spanId}-01`);
    let audit: { trace_id?: string } = {};
    await waitFor(async () => {
      const r = await request(`${gw.adminUrl}/requests/${String(res.headers['x-request-id'])}`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      if (r.status === 200) audit = r.json();
      return r.status === 200;
    });
    expect(audit.trace_id).toBe(server.traceId);
  });

  it('gives every upstream attempt its own client span: a retry after a refused connection', async () => {
    const receiver = await startOtlpReceiver();
    cleanup.push(() => receiver.close());
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const dead = `http://127.0.0.1:${await freePort()}`;
    const gw = await startGateway(
      {
        telemetry: { otlp: { endpoint: receiver.url } },
        routes: [
          {
            id: 'retry',
            path: '/retry',
            auth: 'none',
            upstream: { targets: [dead, up.url], retries: 1 },
          },
        ],
      },
      { telemetry: fast },
    );
    cleanup.push(() => gw.close());
    // Round robin: one of two requests starts on the dead target.
    for (let i = 0; i < 2; i++)
      expect((await request(`${gw.url}/retry`, { headers: { traceparent: INBOUND } })).status).toBe(200);
    const spans = await receiver.waitForSpans(5);
    const servers = byKind(spans, 'SPAN_KIND_SERVER');
    const clients = byKind(spans, 'SPAN_KIND_CLIENT');
    expect(servers).toHaveLength(2);
    // At least one refused attempt and its retry (passive health may send both requests there first).
    expect(clients.length).toBeGreaterThanOrEqual(3);
    const failed = clients.find((c) => c.attributes['error.type'] === 'ECONNREFUSED')!;
    expect(failed.status).toBe('STATUS_CODE_ERROR');
    const retried = clients.find((c) => c.attributes['http.request.resend_count'] === 1)!;
    expect(retried.parentSpanId).toBe(failed.parentSpanId);
    expect(retried.attributes['http.response.status_code']).toBe(200);
    // The upstream saw only the attempts that reached it, each with its own span as parent.
    const seen = up.calls.map((c) => c.headers.traceparent);
    expect(seen).toContain(`00-${retried.traceId}-${retried.spanId}-01`);
    expect(seen).not.toContain(`00-${failed.traceId}-${failed.spanId}-01`);
    for (const c of clients) expect(servers.map((s) => s.spanId)).toContain(c.parentSpanId);
  });

  it('marks a 5xx answer as an error on the server span (the gateway refused: the problem slug is named)', async () => {
    const receiver = await startOtlpReceiver();
    cleanup.push(() => receiver.close());
    // An upstream that hangs up on every connection (a merely free port may be taken by another
    // test file's server before the request is sent).
    const hangUp = net.createServer((socket) => socket.destroy());
    await new Promise<void>((resolve) => hangUp.listen(0, '127.0.0.1', resolve));
    cleanup.push(() => new Promise<void>((resolve) => hangUp.close(() => resolve())));
    const gw = await startGateway(
      {
        telemetry: { otlp: { endpoint: receiver.url } },
        routes: [
          {
            id: 'down',
            path: '/down',
            auth: 'none',
            upstream: { targets: [`http://127.0.0.1:${(hangUp.address() as AddressInfo).port}`] },
          },
        ],
      },
      { telemetry: fast },
    );
    cleanup.push(() => gw.close());
    expect((await request(`${gw.url}/down`)).status).toBe(502);
    const spans = await receiver.waitForSpans(2);
    const server = byKind(spans, 'SPAN_KIND_SERVER')[0]!;
    expect(server.status).toBe('STATUS_CODE_ERROR');
    expect(server.attributes).toMatchObject({
      'http.response.status_code': 502,
      'error.type': '502',
      'tollgate.problem': 'bad-gateway',
    });
  });

  it('keeps serving when the collector is down, and counts the spans it drops', async () => {
    const { logger, lines } = capturedLogger();
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGateway(
      {
        admin: { host: '127.0.0.1', port: 0, tokens: [TOKEN] },
        telemetry: {
          otlp: {
            endpoint: `http://127.0.0.1:${await freePort()}`,
            headers: { 'x-api-key': COLLECTOR_SECRET },
          },
        },
        routes: [{ id: 'open', path: '/open', auth: 'none', upstream: { targets: [up.url] } }],
      },
      // A tiny queue: most spans find it full while the first export is still being refused.
      { logger, telemetry: { ...fast, maxQueueSize: 4, exportTimeoutMs: 300 } },
    );
    cleanup.push(() => gw.close());
    // Concurrent: spans end faster than one refused export takes.
    const answers = await Promise.all(Array.from({ length: 20 }, () => request(`${gw.url}/open`)));
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
    const metric = (text: string, reason: string) =>
      Number(
        new RegExp(`tollgate_telemetry_spans_dropped_total\\{reason="${reason}"\\} (\\d+)`).exec(text)?.[1] ??
          0,
      );
    let text = '';
    await waitFor(
      async () => {
        text = (await request(`${gw.adminUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } }))
          .text;
        return metric(text, 'queue_full') + metric(text, 'export_failed') === 40;
      },
      10_000,
      50,
      () =>
        text
          .split('\n')
          .filter((l) => l.startsWith('tollgate_telemetry'))
          .join('\n'),
    );
    // Every span is accounted for: 20 requests, a server and a client span each, none exported.
    expect(text).toMatch(/tollgate_telemetry_spans_exported_total 0/);
    // Logged once for the outage, without the collector's headers.
    const warned = lines.filter((l) => l.includes('spans are being dropped'));
    expect(warned).toHaveLength(1);
    expect(lines.join('')).not.toContain(COLLECTOR_SECRET);
  });

  it('keeps serving while the collector never answers, and close() is bounded', async () => {
    const sockets = new Set<Socket>();
    const blackHole = http.createServer(() => undefined); // reads the request, never answers
    blackHole.on('connection', (s) => sockets.add(s));
    await new Promise<void>((r) => blackHole.listen(0, '127.0.0.1', r));
    cleanup.push(async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => blackHole.close(() => r()));
    });
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGateway(
      {
        telemetry: { otlp: { endpoint: `http://127.0.0.1:${(blackHole.address() as AddressInfo).port}` } },
        routes: [{ id: 'open', path: '/open', auth: 'none', upstream: { targets: [up.url] } }],
      },
      {
        telemetry: { scheduledDelayMs: 10, maxQueueSize: 4, exportTimeoutMs: 60_000, shutdownTimeoutMs: 200 },
      },
    );
    for (let i = 0; i < 10; i++) expect((await request(`${gw.url}/open`)).status).toBe(200);
    await waitFor(() => sockets.size > 0);
    // One export hangs; the queue behind it holds 4 spans, and the rest are dropped and counted.
    const text = await gw.gateway.services.metricsText();
    expect(
      Number(/tollgate_telemetry_spans_dropped_total\{reason="queue_full"\} (\d+)/.exec(text)?.[1]),
    ).toBeGreaterThan(0);
    // Shutdown waits for the hung export no longer than its bound.
    await gw.close();
  });

  it('replaces the exporter on reload: spans before it go to the old collector (flushed), after it to the new one', async () => {
    const first = await startOtlpReceiver();
    cleanup.push(() => first.close());
    const second = await startOtlpReceiver();
    cleanup.push(() => second.close());
    const config = (endpoint: string | undefined) => ({
      listen: { host: '127.0.0.1', port: 0 },
      ...(endpoint === undefined ? {} : { telemetry: { otlp: { endpoint } } }),
      routes: [{ id: 'm', path: '/m', mock: { body: { ok: true } } }],
    });
    // A long delay: the first span leaves only because the reload retires its exporter.
    const gw = await startGateway(config(first.url), { telemetry: { ...fast, scheduledDelayMs: 60_000 } });
    cleanup.push(() => gw.close());
    expect((await request(`${gw.url}/m`)).status).toBe(200);
    expect(gw.gateway.reload(config(second.url)).ok).toBe(true);
    expect((await first.waitForSpans(1))[0]!.kind).toBe('SPAN_KIND_SERVER');
    expect((await request(`${gw.url}/m`)).status).toBe(200);
    await gw.gateway.flushTelemetry();
    expect(await second.waitForSpans(1)).toHaveLength(1);
    expect(first.spans).toHaveLength(1);
    // Telemetry off again: no span anywhere, the old exporter flushed and stopped.
    expect(gw.gateway.reload(config(undefined)).ok).toBe(true);
    expect((await request(`${gw.url}/m`)).status).toBe(200);
    await gw.gateway.flushTelemetry();
    expect(second.spans).toHaveLength(1);
  });

  it("honours the caller's sampling decision: an unsampled traceparent records nothing and still propagates (Express path too)", async () => {
    const receiver = await startOtlpReceiver();
    cleanup.push(() => receiver.close());
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGateway(
      {
        server: { viaExpress: true },
        telemetry: { otlp: { endpoint: receiver.url } },
        routes: [{ id: 'open', path: '/open', auth: 'none', upstream: { targets: [up.url] } }],
      },
      { telemetry: fast },
    );
    cleanup.push(() => gw.close());
    const unsampled = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00';
    expect((await request(`${gw.url}/open`, { headers: { traceparent: unsampled } })).status).toBe(200);
    const sent = String(up.calls[0]!.headers.traceparent);
    expect(sent).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-00$/);
    // A sampled request through the same (Express) listener is exported: the unsampled one was not.
    expect((await request(`${gw.url}/open`, { headers: { traceparent: INBOUND } })).status).toBe(200);
    const spans = await receiver.waitForSpans(2);
    await gw.gateway.flushTelemetry();
    expect(receiver.spans).toHaveLength(2);
    expect(spans.every((s) => s.traceId === '4bf92f3577b34da6a3ce929d0e0e4736')).toBe(true);
    expect(byKind(spans, 'SPAN_KIND_SERVER')[0]!.parentSpanId).toBe('00f067aa0ba902b7');
  });

  it('ends both spans when the client leaves mid-request: the server span says aborted, the client span client_closed', async () => {
    const receiver = await startOtlpReceiver();
    cleanup.push(() => receiver.close());
    let arrived!: () => void;
    const reached = new Promise<void>((r) => (arrived = r));
    const up = await startUpstream(() => arrived()); // never answers
    cleanup.push(() => up.close());
    const gw = await startGateway(
      {
        telemetry: { otlp: { endpoint: receiver.url } },
        routes: [{ id: 'slow', path: '/slow', auth: 'none', upstream: { targets: [up.url] } }],
      },
      { telemetry: fast },
    );
    cleanup.push(() => gw.close());
    const req = http.get(`${gw.url}/slow`, { agent: false });
    req.on('error', () => undefined);
    await reached;
    req.destroy();
    const spans = await receiver.waitForSpans(2);
    expect(byKind(spans, 'SPAN_KIND_SERVER')[0]!.attributes).toMatchObject({ 'tollgate.aborted': true });
    expect(byKind(spans, 'SPAN_KIND_SERVER')[0]!.attributes['http.response.status_code']).toBeUndefined();
    expect(byKind(spans, 'SPAN_KIND_CLIENT')[0]!.attributes['error.type']).toBe('client_closed');
  });

  it('with telemetry off, sends the inbound traceparent upstream unchanged (no span, no tracer)', async () => {
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const gw = await startGateway({
      routes: [{ id: 'open', path: '/open', auth: 'none', upstream: { targets: [up.url] } }],
    });
    cleanup.push(() => gw.close());
    expect((await request(`${gw.url}/open`, { headers: { traceparent: INBOUND } })).status).toBe(200);
    expect(up.calls[0]!.headers.traceparent).toBe(INBOUND);
    expect(gw.gateway.config.telemetry.otlp).toBeUndefined();
  });

  it('gives a WebSocket handshake a server span and its upstream handshake a client span', async () => {
    const receiver = await startOtlpReceiver();
    cleanup.push(() => receiver.close());
    // An upstream that refuses the upgrade with a plain answer: the handshake is still an attempt.
    const up = await startUpstream((_req, res) => {
      res.writeHead(403, { 'content-type': 'text/plain' }).end('no');
    });
    cleanup.push(() => up.close());
    const gw = await startGateway(
      {
        telemetry: { otlp: { endpoint: receiver.url } },
        routes: [{ id: 'ws', path: '/ws', auth: 'none', websocket: true, upstream: { targets: [up.url] } }],
      },
      { telemetry: fast },
    );
    cleanup.push(() => gw.close());
    const res = await request(`${gw.url}/ws`, {
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
        traceparent: INBOUND,
      },
    });
    expect(res.status).toBe(403);
    const spans = await receiver.waitForSpans(2);
    const server = byKind(spans, 'SPAN_KIND_SERVER')[0]!;
    const client = byKind(spans, 'SPAN_KIND_CLIENT')[0]!;
    expect(server.attributes).toMatchObject({ 'tollgate.route.id': 'ws', 'http.response.status_code': 403 });
    expect(client.parentSpanId).toBe(server.spanId);
    expect(up.calls[0]!.headers.traceparent).toBe(`00-${client.traceId}-${client.spanId}-01`);
  });
});

describe('proxy({ tracer }) in a plain Express app', () => {
  it("makes a client span per attempt with the app's tracer, and the upstream gets it as parent", async () => {
    const { TracerProvider, InMemorySpanExporter, SimpleSpanProcessor } =
      await import('@opentelemetry/sdk-trace');
    const exporter = new InMemorySpanExporter();
    const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
    cleanup.push(() => provider.shutdown());
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const app = express();
    app.use(requestId());
    app.use('/api', proxy({ targets: [up.url], tracer: provider.getTracer('my-app') }));
    app.use(problemDetails());
    const server = http.createServer(app);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanup.push(() => new Promise<void>((r) => server.close(() => r())));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    expect((await request(`${url}/api/x`, { headers: { traceparent: INBOUND } })).status).toBe(200);
    const spans = exporter.getFinishedSpans();
    expect(spans).toHaveLength(1);
    const sc = spans[0]!.spanContext();
    expect(sc.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(spans[0]!.parentSpanContext?.spanId).toBe('00f067aa0ba902b7');
    expect(up.calls[0]!.headers.traceparent).toBe(`00-${sc.traceId}-${sc.spanId}-01`);
  });
});

describe('telemetry config', () => {
  const check = (otlp: unknown) => validateConfig({ telemetry: { otlp } }, {});
  const issuesOf = (otlp: unknown) => {
    const r = check(otlp);
    return r.ok ? [] : r.issues;
  };

  it('takes an http(s) base URL, and headers that are secrets: never quoted in an issue', () => {
    expect(check({ endpoint: 'https://otlp.example.com/otlp' }).ok).toBe(true);
    expect(issuesOf({ endpoint: 'ftp://collector:4318' })[0]).toMatchObject({
      path: 'telemetry.otlp.endpoint',
    });
    expect(issuesOf({ endpoint: 'collector:4318' })[0]).toMatchObject({ path: 'telemetry.otlp.endpoint' });
    expect(issuesOf({ endpoint: 'http://user:pass@collector:4318' })[0]!.message).toMatch(/credentials/);
    expect(issuesOf({ endpoint: 'http://collector:4318/?key=x' })[0]!.message).toMatch(/query/);
    const bad = issuesOf({
      endpoint: 'http://127.0.0.1:4318',
      headers: { authorization: `Bearer ${COLLECTOR_SECRET}\r\nx-injected: 1` },
    });
    expect(bad[0]).toMatchObject({ path: 'telemetry.otlp.headers.authorization' });
    expect(JSON.stringify(bad)).not.toContain(COLLECTOR_SECRET);
    expect(issuesOf({ endpoint: 'http://127.0.0.1:4318', headers: { 'bad name': 'x' } })).toHaveLength(1);
    expect(
      issuesOf({ endpoint: 'http://127.0.0.1:4318', headers: { 'Content-Type': 'x' } })[0]!.message,
    ).toMatch(/exporter/);
    expect(issuesOf({ endpoint: 'http://127.0.0.1:4318', headers: { 'X-A': '1', 'x-a': '2' } })).toHaveLength(
      1,
    );
    expect(issuesOf({ endpoint: 'http://127.0.0.1:4318', extra: true })).toHaveLength(1);
    expect(issuesOf({ endpoint: 'http://127.0.0.1:4318', serviceName: '' })).toHaveLength(1);
  });

  it('warns when credentials would travel in clear text to a host that is not loopback', () => {
    const warnings = (
      endpoint: string,
      headers: Record<string, string> = { 'x-api-key': COLLECTOR_SECRET },
    ) => {
      const r = check({ endpoint, headers });
      expect(r.ok).toBe(true);
      return r.warnings.filter((w) => w.path === 'telemetry.otlp.endpoint');
    };
    const [warning] = warnings('http://collector.internal:4318');
    expect(warning!.message).toMatch(/clear text/);
    expect(JSON.stringify(warning)).not.toContain(COLLECTOR_SECRET);
    expect(warnings('https://collector.internal:4318')).toHaveLength(0);
    expect(warnings('http://127.0.0.1:4318')).toHaveLength(0);
    expect(warnings('http://collector.internal:4318', {})).toHaveLength(0);
  });
});
