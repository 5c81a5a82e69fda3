'use strict';
// Benchmark upstream: plain node:http answering a ~100-byte JSON body with keep-alive.
// Env: PORT (required), HOST (default 127.0.0.1), USAGE_TOKENS (optional).
const http = require('node:http');

const body = Buffer.from(
  JSON.stringify({
    ok: true,
    service: 'bench-upstream',
    message: 'hello from the benchmark upstream',
    items: [1, 2, 3, 4, 5],
  }),
);
const headers = { 'content-type': 'application/json; charset=utf-8', 'content-length': String(body.length) };
// USAGE_TOKENS=17: every answer reports a meter value (the bench's meter-limit row).
if (process.env.USAGE_TOKENS) headers['x-usage-tokens'] = process.env.USAGE_TOKENS;
const server = http.createServer((req, res) => {
  if (req.method === 'GET' || req.method === 'HEAD') {
    res.writeHead(200, headers);
    res.end(body);
    return;
  }
  req.resume();
  req.on('end', () => {
    res.writeHead(200, headers);
    res.end(body);
  });
});
// Idle keep-alive sockets outlive the proxies' agents, so no proxy reuses a socket being closed.
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;
server.listen(Number(process.env.PORT), process.env.HOST || '127.0.0.1', () => process.send?.('ready'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
