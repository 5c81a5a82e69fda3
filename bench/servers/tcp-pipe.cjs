'use strict';
// The floor for a WebSocket tunnel: a bare TCP relay (net.Server + net.connect + pipe both ways),
// no HTTP parsing, no frame following. Env: PORT, UPSTREAM_PORT (required), HOST (default 127.0.0.1).
const net = require('node:net');

const server = net.createServer((client) => {
  const up = net.connect(Number(process.env.UPSTREAM_PORT), '127.0.0.1');
  client.setNoDelay(true);
  up.setNoDelay(true);
  client.pipe(up).pipe(client);
  client.on('error', () => up.destroy());
  up.on('error', () => client.destroy());
  client.on('close', () => up.destroy());
  up.on('close', () => client.destroy());
});
server.listen(Number(process.env.PORT), process.env.HOST || '127.0.0.1');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
setTimeout(() => undefined, 2 ** 31 - 1).unref();
