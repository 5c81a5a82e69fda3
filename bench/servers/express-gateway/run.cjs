'use strict';
// express-gateway 1.16 (unmaintained): one pipeline with only the proxy policy.
// Env: PORT, UPSTREAM. Config beside this file; its model schemas are copied in on first start.
process.env.EG_HTTP_PORT = process.env.PORT;
process.env.LOG_LEVEL = 'error';
const path = require('node:path');
const fs = require('node:fs');

const models = path.join(__dirname, 'models');
if (!fs.existsSync(models)) {
  const pkg = path.dirname(require.resolve('express-gateway/package.json'));
  fs.cpSync(path.join(pkg, 'lib', 'config', 'models'), models, { recursive: true });
}
require('express-gateway')()
  .load(__dirname)
  .run()
  .then(() => process.send?.('ready'));
process.on('SIGTERM', () => process.exit(0));
