import { describe, expect, it } from 'vitest';
import { validateConfig } from '../../src/config/load.js';
import { isLoopback } from '../../src/config/warnings.js';
import { PROCESS_TEST_MS } from '../helpers/cli.js';
import { startGatewayProcess } from '../helpers/process.js';

// `admin.host`: the admin listener binds loopback unless the config asks for more, and a host that
// is not loopback (a container's 0.0.0.0) is a warning at start and from `validate`.
describe('admin.host', { timeout: PROCESS_TEST_MS }, () => {
  it('knows loopback spellings from the rest', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', 'localhost', 'LOCALHOST', '::1', '[::1]'])
      expect(isLoopback(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.5', '127.0.0.1.evil.example', 'admin.internal', '1.127.0.0.1'])
      expect(isLoopback(h), h).toBe(false);
  });

  it('defaults to loopback without a warning; any other host is a warning naming admin.host', () => {
    const quiet = validateConfig({ admin: {} });
    expect(quiet.ok && quiet.config.admin?.host).toBe('127.0.0.1');
    expect(quiet.warnings.filter((w) => w.path === 'admin.host')).toEqual([]);
    const open = validateConfig({ admin: { host: '0.0.0.0' } });
    expect(open.ok).toBe(true);
    expect(open.warnings).toContainEqual({
      path: 'admin.host',
      message: expect.stringContaining('not loopback'),
    });
    const empty = validateConfig({ admin: { host: '' } });
    expect(empty.ok).toBe(false);
  });

  it('a gateway asked for 0.0.0.0 binds it and warns at start; the default binds loopback and does not', async () => {
    const open = await startGatewayProcess(
      'listen: { host: 127.0.0.1, port: 0 }\nadmin: { host: 0.0.0.0, port: 0 }\nroutes: []\n',
    );
    try {
      expect(open.adminUrl).toMatch(/^http:\/\/0\.0\.0\.0:\d+$/);
      expect(open.cli.lines.some((l) => l.includes('admin.host') && l.includes('not loopback'))).toBe(true);
      // Reached over loopback only: the test sends nothing anywhere else.
      const port = new URL(open.adminUrl!).port;
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    } finally {
      await open.stop();
    }
    const closed = await startGatewayProcess(
      'listen: { host: 127.0.0.1, port: 0 }\nadmin: { port: 0 }\nroutes: []\n',
    );
    try {
      expect(closed.adminUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(closed.cli.lines.some((l) => l.includes('admin.host'))).toBe(false);
    } finally {
      await closed.stop();
    }
  });
});
