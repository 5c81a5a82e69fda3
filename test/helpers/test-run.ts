import { Redis } from 'ioredis';

/**
 * Naming of the keys one test run writes to the shared Redis: `tollgate-test:<run id>:…`, so the
 * globalSetup's teardown can delete exactly this run's keys. No vitest import here: the
 * globalSetup (main process) and the test workers both use it.
 */
export const TEST_KEY_ROOT = 'tollgate-test:';

export function sharedRedisUrlFrom(env: NodeJS.ProcessEnv): string {
  return env.REDIS_URL ?? 'redis://127.0.0.1:6379';
}

/** Run ids are hex (no SCAN glob characters); the pattern matches this run's keys only. */
export function runKeyPattern(runId: string): string {
  if (!/^[0-9a-f]{8,64}$/.test(runId)) throw new Error(`bad test run id ${JSON.stringify(runId)}`);
  return `${TEST_KEY_ROOT}${runId}:*`;
}

/**
 * SCAN + UNLINK of `tollgate-test:<run id>:*`, nothing else: the shared Redis also holds other
 * runs' keys (other worktrees, other engineers) and is never flushed. Resolves with the number of
 * keys deleted, or `undefined` when no Redis answers at `url` (nothing can have been written).
 */
export async function deleteRunKeys(url: string, runId: string): Promise<number | undefined> {
  const pattern = runKeyPattern(runId);
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 2000,
    commandTimeout: 5000,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  client.on('error', () => {
    /* connect() rejects with it */
  });
  try {
    await client.connect();
  } catch {
    client.disconnect();
    return undefined;
  }
  let deleted = 0;
  try {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) deleted += await client.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    client.disconnect();
  }
  return deleted;
}
