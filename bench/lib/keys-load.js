#!/usr/bin/env node
// Load with many distinct API keys: autocannon (programmatic, so each request can carry the next
// key in turn), printing autocannon's JSON result like `autocannon -j`.
// Usage: node bench/lib/keys-load.js URL KEYS_FILE CONNECTIONS SECONDS
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';

const [url, keysFile, connections, seconds] = process.argv.slice(2);
const keys = readFileSync(keysFile, 'utf8').split('\n').filter(Boolean);
let next = 0;
const result = await autocannon({
  url,
  connections: Number(connections),
  duration: Number(seconds),
  requests: [
    {
      setupRequest: (req) => {
        const key = keys[next];
        next = (next + 1) % keys.length;
        return { ...req, headers: { ...req.headers, 'x-api-key': key } };
      },
    },
  ],
});
process.stdout.write(JSON.stringify(result) + '\n');
