import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Express } from 'express';
import { afterEach } from 'vitest';

const servers = new Set<http.Server>();
afterEach(async () => {
  const open = [...servers];
  servers.clear();
  await Promise.all(
    open.map(
      (server) =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    ),
  );
});

/** Serves a plain Express app on an ephemeral loopback port, closed after the test. Resolves with its base URL. */
export async function listenApp(app: Express): Promise<string> {
  const server = http.createServer(app);
  servers.add(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
