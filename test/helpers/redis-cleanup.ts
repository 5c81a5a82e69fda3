import { Redis } from 'ioredis';
import { sharedRedisUrl } from './redis.js';

/** Deletes every key under `prefix` (a `uniquePrefix()`) in the shared Redis: what a test made. */
export async function deleteRedisKeys(prefix: string, url = sharedRedisUrl): Promise<void> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}
