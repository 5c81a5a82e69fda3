'use strict';
// Benchmark WebSocket upstream: a `ws` server echoing every message back (same type), and a
// plain HTTP 200 for readiness probes. Env: PORT (required), HOST (default 127.0.0.1).
const http = require('node:http');
const { WebSocketServer } = require('ws');

const server = http.createServer((_req, res) => res.end('ok'));
// perMessageDeflate off (the `ws` default for servers): frames pass through unchanged.
const wss = new WebSocketServer({ server });
wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
server.listen(Number(process.env.PORT), process.env.HOST || '127.0.0.1');
process.on('SIGTERM', () => {
  for (const c of wss.clients) c.terminate();
  server.close(() => process.exit(0));
});
