import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGateway } from '../helpers/gateway.js';
import { request, waitFor } from '../helpers/http.js';
import { startUpstream } from '../helpers/upstream.js';
import { GatewayProcess } from '../../src/main.js';

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

const mockConfig = (version: number) => ({
  routes: [{ id: 'v', path: '/v', mock: { body: { version } } }],
});

describe('config reload', () => {
  it('swaps the config atomically under concurrent requests; none fails, an invalid one changes nothing', async () => {
    const gw = await startGateway(mockConfig(1));
    cleanup.push(() => gw.close());
    const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
    cleanup.push(() => agent.destroy());
    const seen: number[] = [];
    const failures: string[] = [];
    let stop = false;
    const worker = async () => {
      while (!stop) {
        try {
          const res = await request(`${gw.url}/v`, { agent });
          if (res.status !== 200) failures.push(`status ${res.status}`);
          else seen.push(res.json().version as number);
        } catch (err) {
          failures.push(String(err));
        }
      }
    };
    const workers = Array.from({ length: 16 }, worker);
    await waitFor(() => seen.length > 200, 10_000);
    expect(gw.gateway.reload({ routes: [{ id: 'broken', path: 'no-slash', mock: {} }] }).ok).toBe(false);
    const afterInvalid = seen.length;
    await waitFor(() => seen.length > afterInvalid + 100, 10_000);
    expect(seen.slice(afterInvalid).every((v) => v === 1)).toBe(true);
    const result = gw.gateway.reload(mockConfig(2));
    expect(result.ok).toBe(true);
    const afterValid = seen.length;
    await waitFor(() => seen.length > afterValid + 200, 10_000);
    stop = true;
    await Promise.all(workers);
    expect(failures).toEqual([]);
    // Requests already dispatched may finish on v1; every later one is v2.
    expect(seen.slice(afterValid + 32).every((v) => v === 2)).toBe(true);
    expect(gw.gateway.reloadStatus).toMatchObject({ count: 2, failures: 1, lastSuccess: true });
  });

  it('lets an in-flight proxied request finish on the config it started with', async () => {
    let release: () => void = () => undefined;
    const up = await startUpstream((_req, res) => {
      release = () => res.end('slow answer');
    });
    cleanup.push(() => up.close());
    const gw = await startGateway({
      routes: [{ id: 'p', path: '/p', auth: 'none', upstream: { targets: [up.url], timeoutMs: 5000 } }],
    });
    cleanup.push(() => gw.close());
    const pending = request(`${gw.url}/p`);
    await waitFor(() => up.calls.length === 1, 2000);
    expect(gw.gateway.reload(mockConfig(3)).ok).toBe(true);
    expect((await request(`${gw.url}/v`)).json()).toEqual({ version: 3 });
    release();
    const res = await pending;
    expect(res.status).toBe(200);
    expect(res.text).toBe('slow answer');
  });

  it('reloads when a ConfigMap-style volume swaps the directory its file points into', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-configmap-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const yaml = (v: number) =>
      `listen: { host: 127.0.0.1, port: 0 }\nroutes:\n  - { id: v, path: /v, mock: { body: { version: ${v} } } }\n`;
    // The kubelet's layout: gateway.yaml -> ..data/gateway.yaml, ..data -> ..v1 (a timestamped dir).
    const version = (v: number) => {
      mkdirSync(join(dir, `..v${v}`));
      writeFileSync(join(dir, `..v${v}`, 'gateway.yaml'), yaml(v));
    };
    version(1);
    symlinkSync(`..v1`, join(dir, '..data'));
    symlinkSync(join('..data', 'gateway.yaml'), join(dir, 'gateway.yaml'));
    const proc = await GatewayProcess.start({ configPath: join(dir, 'gateway.yaml'), env: {} });
    cleanup.push(() => proc.shutdown());
    const url = `http://127.0.0.1:${proc.addresses().public!.port}/v`;
    expect((await request(url)).json()).toEqual({ version: 1 });
    // An update: a new dir, a new symlink to it renamed over ..data (atomic), the old dir removed.
    version(2);
    symlinkSync(`..v2`, join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    rmSync(join(dir, '..v1'), { recursive: true });
    await waitFor(async () => (await request(url)).json().version === 2, 5000, 50);
  });

  it('reloads when the file changes; a broken file is logged and the old config stays', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-reload-'));
    cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, 'gateway.yaml');
    const yaml = (v: number) =>
      `listen: { host: 127.0.0.1, port: 0 }\nroutes:\n  - { id: v, path: /v, mock: { body: { version: ${v} } } }\n`;
    writeFileSync(file, yaml(1));
    const lines: string[] = [];
    const proc = await GatewayProcess.start({
      configPath: file,
      env: {},
      logDestination: { write: (line: string) => void lines.push(line) },
    });
    cleanup.push(() => proc.shutdown());
    const url = `http://127.0.0.1:${proc.addresses().public!.port}/v`;
    expect((await request(url)).json()).toEqual({ version: 1 });
    writeFileSync(file, yaml(2));
    await waitFor(async () => (await request(url)).json().version === 2, 5000, 50);
    writeFileSync(file, 'routes: [ { id: v, path: /v, mock: { body: { version: 3 } } }, { broken');
    await waitFor(() => lines.some((l) => l.includes('config reload rejected')), 5000, 50);
    expect((await request(url)).json()).toEqual({ version: 2 });
    expect(await proc.reload()).toBe(false);
  });
});
