'use strict';
// The Node floor: a hand-written minimal reverse proxy (node:http server + http.request with a
// keep-alive agent, bodies piped), as ../shared/bench/proxy-node.js. No framework, no logging,
// no error handling worth the name: what any Node proxy costs at least. Env: PORT, UPSTREAM.
const http = require('node:http');

const upstream = new URL(process.env.UPSTREAM);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256, keepAliveMsecs: 30_000 });
const HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
]);
const server = http.createServer((req, res) => {
  const headers = {};
  for (const k in req.headers) if (!HOP.has(k)) headers[k] = req.headers[k];
  const preq = http.request(
    { hostname: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers, agent },
    (pres) => {
      const out = {};
      for (const k in pres.headers) if (!HOP.has(k)) out[k] = pres.headers[k];
      res.writeHead(pres.statusCode, out);
      pres.pipe(res);
    },
  );
  preq.on('error', () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  req.pipe(preq);
});
server.keepAliveTimeout = 65_000;
server.listen(Number(process.env.PORT), '127.0.0.1', () => process.send?.('ready'));
process.on('SIGTERM', () => {
  server.close();
  agent.destroy();
  process.exit(0);
});
