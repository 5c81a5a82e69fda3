import { afterEach, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import {
  servedBy,
  sharedRedisUrl,
  startPrivateRedis,
  uniquePrefix,
  waitForSubscribers,
} from '../helpers/redis.js';

// Issue 14.10: helpers that tests rely on for readiness must not be fooled (a port taken by
// another process's Redis) nor stand in for a signal with a sleep (pub/sub subscribers).

const cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()!();
});

describe('test helpers wait on real readiness signals', () => {
  it("servedBy tells a private Redis from another process's server on the same port", async () => {
    const redis = await startPrivateRedis();
    cleanup.push(() => redis.stop(true));
    const pid = redis.process.pid!;
    expect(await servedBy(redis.port, pid)).toBe(true);
    expect(await servedBy(redis.port, pid + 1)).toBe(false);
    await redis.stop(true);
    expect(await servedBy(redis.port, pid)).toBe(false);
  });

  it('waitForSubscribers resolves once the channel has its subscribers, and refuses before', async () => {
    const channel = `${uniquePrefix('subs')}channel`;
    await expect(waitForSubscribers(sharedRedisUrl, channel, 1, 300)).rejects.toThrow(/condition not met/);
    const sub = new Redis(sharedRedisUrl, { maxRetriesPerRequest: 1 });
    cleanup.push(() => void sub.disconnect());
    const subscribed = sub.subscribe(channel);
    await waitForSubscribers(sharedRedisUrl, channel, 1);
    await subscribed;
    await expect(waitForSubscribers(sharedRedisUrl, channel, 2, 300)).rejects.toThrow(/condition not met/);
  });
});
