import { systemClock, type Clock } from '../../core/clock.js';
import { MemoryKeyStore } from '../../keys/memory-store.js';
import type { KeyStore } from '../../keys/record.js';
import { SecretBox } from '../../keys/secret-box.js';
import { KeyService } from '../../keys/service.js';
import { apiKeysSchema } from './schema.js';

export interface KeyServiceOptions {
  /** Where key records live. Default: a `MemoryKeyStore` (this process only). */
  store?: KeyStore;
  /** Key prefix (`<prefix>_live_…`). Default: `auth.apiKeys.prefix`'s (`tg`). */
  prefix?: string;
  /**
   * The key signing secrets are sealed with (`TOLLGATE_SECRET_KEY`, 32+ characters). Default: a
   * key made for this process, so signing secrets do not outlive it.
   */
  secretKey?: string;
  clock?: Clock;
}

/**
 * A `KeyService` with the gateway's defaults filled in, for `authenticate({ keys })` and your own
 * key-management endpoints.
 *
 * @example
 * const keys = createKeyService({ store: new RedisKeyStore({ redis, … }) });
 * const { key } = await keys.create({ name: 'ci', scopes: ['orders:read'] });
 * app.use('/orders', authenticate({ keys, route: { scopes: ['orders:read'] } }), handler);
 */
export function createKeyService(options: KeyServiceOptions = {}): KeyService {
  const { prefix } = apiKeysSchema.parse({ prefix: options.prefix });
  return new KeyService({
    store: options.store ?? new MemoryKeyStore(),
    prefix,
    box: new SecretBox(options.secretKey),
    clock: options.clock ?? systemClock,
  });
}
