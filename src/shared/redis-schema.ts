import { z } from 'zod';
import { port, positiveInt } from '../config/primitives.js';

/** `redis`: where shared state lives (SPEC §2). */
export const redisSchema = z
  .strictObject({
    url: z
      .string()
      .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
      .optional(),
    cluster: z
      .array(z.string().regex(/^rediss?:\/\//, 'must be a redis:// URL'))
      .min(1)
      .optional()
      .describe('Redis Cluster seed nodes.'),
    sentinels: z
      .array(z.strictObject({ host: z.string().min(1), port: port() }))
      .min(1)
      .optional()
      .describe('Redis Sentinel addresses (with `sentinelName`).'),
    sentinelName: z.string().min(1).optional().describe('The Sentinel master name.'),
    keyPrefix: z.string().default('tollgate:').describe('Prefix of every key the gateway writes.'),
    commandTimeoutMs: positiveInt()
      .default(200)
      .describe('A command not answered within this fails (a frozen Redis must not stall requests).'),
    connectTimeoutMs: positiveInt().default(1000),
    onError: z
      .enum(['closed', 'open'])
      .default('closed')
      .describe(
        'Quota, idempotency and concurrency limits when Redis fails: `closed` answers 503, `open` lets requests through (concurrency limits then count per instance). Rate limits always fall back to memory.',
      ),
  })
  .superRefine((r, ctx) => {
    const modes = [r.url, r.cluster, r.sentinels].filter((m) => m !== undefined).length;
    if (modes > 1)
      ctx.addIssue({ code: 'custom', path: [], message: 'use only one of url, cluster or sentinels' });
    if (r.sentinels && !r.sentinelName)
      ctx.addIssue({ code: 'custom', path: ['sentinelName'], message: 'is required with sentinels' });
  })
  .describe('Shared state for several gateway instances. Omit for in-memory stores (one instance).');

export type RedisConfig = z.output<typeof redisSchema>;
