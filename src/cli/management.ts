import { loadConfigFile } from '../config/load.js';
import { ConfigError, createGateway } from '../gateway/create-gateway.js';
import type { KeyManagement } from '../key-management/management.js';
import type { Config } from '../config/schema.js';
import { configPathFrom, type CliIo } from './args.js';
import { EXIT } from './help.js';

/**
 * Runs `fn` with the key management of a gateway built from the config (nothing listens): the
 * same KeyManagement the admin API uses, so a key made, changed or revoked from the CLI raises
 * the same webhook events (durable in Redis, delivered by the running gateways) and follows the
 * same rules. The store must be Redis: an in-memory one lives inside the gateway process, where
 * `adminHint` says what to use instead.
 */
export async function withManagement(
  who: string,
  adminHint: string,
  values: { config?: string | boolean | undefined },
  io: CliIo,
  fn: (m: KeyManagement, config: Config) => Promise<number>,
): Promise<number> {
  const path = typeof values.config === 'string' ? values.config : undefined;
  const loaded = await loadConfigFile(configPathFrom({ config: path }, io.env), io.env);
  if (!loaded.ok) throw new ConfigError(loaded.issues);
  if (!loaded.config.redis) {
    io.err(
      `tollgate ${who}: the config has no redis store; an in-memory store lives inside the running gateway — ${adminHint}`,
    );
    return EXIT.failed;
  }
  // Queue-only webhooks: the running gateways deliver (this process ends in a moment).
  const gateway = createGateway(loaded.config, {
    env: io.env,
    policies: loaded.modules,
    webhooks: { deliver: false },
  });
  try {
    await gateway.services.redis!.whenReady(Math.max(loaded.config.redis.connectTimeoutMs, 3000));
    return await fn(gateway.services.management, loaded.config);
  } finally {
    await gateway.close();
  }
}
