import { afterEach, describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import { startGateway } from '../helpers/gateway.js';
import { request } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';

// A file of its own: vitest runs each file in a fresh process, so the module cache below is this
// test's alone (the telemetry tests load OpenTelemetry on purpose).
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

describe('telemetry off', () => {
  it('never loads the OpenTelemetry SDK or exporter: a proxied request and a reload without telemetry.otlp leave it out of the process', async () => {
    const up = await startUpstream();
    cleanup.push(() => up.close());
    const config = {
      listen: { host: '127.0.0.1', port: 0 },
      routes: [{ id: 'open', path: '/open', auth: 'none' as const, upstream: { targets: [up.url] } }],
    };
    const gw = await startGateway(config);
    cleanup.push(() => gw.close());
    expect((await request(`${gw.url}/open`)).status).toBe(200);
    expect(gw.gateway.reload(config).ok).toBe(true);
    expect((await request(`${gw.url}/open`)).status).toBe(200);
    // `@opentelemetry/api` itself is loaded by prom-client (its exemplars) whatever the config.
    const loaded = Object.keys(createRequire(import.meta.url).cache).filter(
      (k) => k.includes('@opentelemetry') && !k.includes('@opentelemetry/api/'),
    );
    expect(loaded).toEqual([]);
  });
});
