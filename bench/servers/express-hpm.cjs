'use strict';
// The baseline: Express 5 + http-proxy-middleware with a keep-alive agent, nothing else
// (as ../shared/bench/proxy-express.js with FEATURES unset). Env: PORT, UPSTREAM.
const http = require('node:http');
const express = require('express');
const { createProxyMiddleware } = require('http-proxy-middleware');

const agent = new http.Agent({ keepAlive: true, maxSockets: 256, keepAliveMsecs: 30_000 });
const app = express();
app.disable('x-powered-by');
app.set('etag', false);
app.use(createProxyMiddleware({ target: process.env.UPSTREAM, agent, changeOrigin: false }));
const server = http.createServer(app);
server.keepAliveTimeout = 65_000;
server.listen(Number(process.env.PORT), '127.0.0.1', () => process.send?.('ready'));
process.on('SIGTERM', () => {
  server.close();
  agent.destroy();
  process.exit(0);
});
