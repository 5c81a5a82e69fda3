'use strict';
// The baseline under node:cluster with 2 workers (as ../shared/bench express-c2).
const cluster = require('node:cluster');

if (cluster.isPrimary) {
  for (let i = 0; i < 2; i++) cluster.fork();
  let up = 0;
  cluster.on('message', (_w, m) => {
    if (m === 'ready' && ++up === 2) process.send?.('ready');
  });
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 300).unref();
  });
} else {
  require('./express-hpm.cjs');
}
