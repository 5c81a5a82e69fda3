'use strict';
// The mock baseline: a bare Express 5 app answering res.json() — what a mock route competes with.
const http = require('node:http');
const express = require('express');

const app = express();
app.disable('x-powered-by');
app.set('etag', false);
app.use((_req, res) => res.json({ ok: true, service: 'bench-mock', items: [1, 2, 3] }));
const server = http.createServer(app);
server.keepAliveTimeout = 65_000;
server.listen(Number(process.env.PORT), '127.0.0.1', () => process.send?.('ready'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
