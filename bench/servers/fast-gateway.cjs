'use strict';
// fast-gateway 5.0.1 (restana + fast-proxy-lite, keep-alive by default): one route, no middleware.
const gateway = require('fast-gateway');

const server = gateway({
  enableServicesEndpoint: false,
  routes: [{ prefix: '/api', target: process.env.UPSTREAM }],
});
server.start(Number(process.env.PORT), '127.0.0.1').then(() => process.send?.('ready'));
process.on('SIGTERM', () => {
  server.close();
  process.exit(0);
});
