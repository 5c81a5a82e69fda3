import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { createGateway, type Gateway, type GatewayOptions } from '../../src/gateway/create-gateway.js';
import { createHttpServer } from '../../src/gateway/server.js';
import type { ConfigInput } from '../../src/config/schema.js';
import { roomInConfigWindows } from './ratelimit.js';

export interface RunningGateway {
  gateway: Gateway;
  url: string;
  port: number;
  adminUrl: string;
  server: Server;
  adminServer: Server;
  close(): Promise<void>;
}

/**
 * A gateway on ephemeral loopback ports (public and admin), created in-process from a config
 * object, with the same servers the CLI uses.
 */
export async function startGateway(
  config: ConfigInput,
  options: GatewayOptions = {},
): Promise<RunningGateway> {
  await roomInConfigWindows(config);
  const gateway = createGateway({ listen: { host: '127.0.0.1', port: 0 }, ...config }, options);
  const serverOptions = gateway.serverOptions();
  // As the CLI does: node:http straight into the pipeline, or the Express app with `server.viaExpress`.
  const server = createHttpServer(
    gateway.config.server.viaExpress ? gateway.app : gateway.handle,
    serverOptions,
  );
  // As the CLI does: WebSocket handshakes come through the `upgrade` event.
  server.on('upgrade', gateway.handleUpgrade);
  const adminServer = createHttpServer(gateway.adminApp, serverOptions);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  await new Promise<void>((resolve) => adminServer.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const adminPort = (adminServer.address() as AddressInfo).port;
  return {
    gateway,
    url: `http://127.0.0.1:${port}`,
    port,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    server,
    adminServer,
    async close() {
      server.closeAllConnections();
      adminServer.closeAllConnections();
      await Promise.all([
        new Promise<void>((resolve) => server.close(() => resolve())),
        new Promise<void>((resolve) => adminServer.close(() => resolve())),
      ]);
      await gateway.close();
    },
  };
}
