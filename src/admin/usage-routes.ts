import type { Router } from 'express';
import { z } from 'zod';
import { Problem } from '../problems/problem.js';
import { parseOrThrow } from '../problems/validation.js';
import type { KeyManagement } from '../key-management/management.js';
import { DAY_MS, HOUR_MS, usageSeries, type UsageKind, type UsageStore } from '../usage/usage.js';
import { tenantIdParam } from './schemas.js';

const TIME_MESSAGE = 'must be an ISO 8601 date-time (2026-12-01T10:00:00Z) or date (2026-12-01)';
const isoDateTime = z.iso.datetime({ offset: true });
const isoDate = z.iso.date();
const time = z
  .string()
  .max(64, TIME_MESSAGE)
  .refine((s) => isoDateTime.safeParse(s).success || isoDate.safeParse(s).success, TIME_MESSAGE)
  .transform((s) => Date.parse(s));

export const usageQuery = z.strictObject({
  from: time
    .optional()
    .describe(
      'Start (ISO 8601), rounded down to its hour or UTC day; default: 24 hours (hour) or 30 days (day) before `to`, but not before the retention. Not before the retention (`usage.retentionDays`).',
    ),
  to: time
    .optional()
    .describe(
      'End (ISO 8601, exclusive), rounded up to its hour or UTC day; default: now. At most a day ahead.',
    ),
  granularity: z
    .enum(['hour', 'day'], { error: 'must be hour or day' })
    .default('hour')
    .describe('Bucket size: UTC hours or UTC days (a day is the sum of its hours).'),
});

const count = z.int().min(0);
export const usageCounts = z
  .object({
    requests: z
      .object({
        total: count,
        '1xx': count.describe('WebSocket handshakes that became tunnels (101).'),
        '2xx': count,
        '3xx': count,
        '4xx': count.describe('Including the refusals below, and 499 (the client left before the answer).'),
        '5xx': count,
      })
      .strict()
      .describe('Requests by the status class of their answer.'),
    meters: z
      .record(z.string(), count)
      .describe(
        'Each meter’s sum (`routes[].meters`), as the upstream reported it; meters never reported are absent.',
      ),
    refusals: z
      .object({
        rateLimit: count.describe('429 rate-limit-exceeded (a rate limit or a concurrency limit).'),
        quota: count.describe('402 quota-exceeded (the plan quota or the key’s remaining uses).'),
      })
      .strict(),
  })
  .strict();

export const usageReport = z
  .object({
    kind: z.enum(['key', 'tenant']),
    id: z.string().describe('The key id or tenant id.'),
    granularity: z.enum(['hour', 'day']),
    from: z.string().describe('Start of the first bucket (ISO 8601, UTC).'),
    to: z.string().describe('End of the last bucket (exclusive).'),
    retentionDays: z.int().describe('How far back usage is kept (`usage.retentionDays`).'),
    buckets: z
      .array(usageCounts.extend({ start: z.string().describe('Bucket start (ISO 8601, UTC).') }).strict())
      .describe('Every bucket of the range, oldest first, empty ones included (all zeros).'),
    totals: usageCounts.describe('The sums over all buckets.'),
  })
  .strict()
  .describe(
    'Usage history: per bucket, requests by status class, each meter’s sum, and rate-limit and quota refusals. With Redis, exact across instances once they flushed (every `usage.flushIntervalMs`).',
  );

export interface UsageRoutesDeps {
  store: () => UsageStore;
  management: () => KeyManagement;
  retentionDays: () => number;
  now: () => number;
}

const badQuery = (name: string, message: string) =>
  new Problem('validation-failed', {
    detail: 'The query is invalid.',
    extensions: { errors: [{ pointer: `/query/${name}`, message }] },
  });

/** `from`/`to`/`granularity` checked against each other, the clock and the retention. */
function range(raw: Record<string, unknown>, deps: UsageRoutesDeps) {
  const q = parseOrThrow(usageQuery, raw, 'The query is invalid.', ['query']);
  const now = deps.now();
  const retentionDays = deps.retentionDays();
  const to = q.to ?? now;
  const oldest = now - retentionDays * DAY_MS;
  // The default start never reaches past the retention (a retention shorter than 30 days).
  const from = q.from ?? Math.max(to - (q.granularity === 'hour' ? DAY_MS : 30 * DAY_MS), oldest);
  if (to > now + DAY_MS) throw badQuery('to', 'must be at most a day from now');
  if (from > to) throw badQuery('from', 'must not be after to');
  if (from < oldest)
    throw badQuery(
      'from',
      `must not be before ${new Date(oldest).toISOString()}: usage is kept ${retentionDays} days (usage.retentionDays)`,
    );
  return { from, to, granularity: q.granularity, retentionDays };
}

async function report(kind: UsageKind, id: string, r: ReturnType<typeof range>, deps: UsageRoutesDeps) {
  const store = deps.store();
  // This instance's own pending buckets first: its traffic shows at once.
  await store.flush();
  const step = r.granularity === 'hour' ? HOUR_MS : DAY_MS;
  const fromHour = (Math.floor(r.from / step) * step) / HOUR_MS;
  const toHour = (Math.ceil(r.to / step) * step) / HOUR_MS;
  const hours = await store.read(kind, id, fromHour, toHour);
  return {
    hours,
    body: {
      kind: kind === 'k' ? ('key' as const) : ('tenant' as const),
      id,
      granularity: r.granularity,
      retentionDays: r.retentionDays,
      ...usageSeries(hours, r.from, r.to, r.granularity),
    },
  };
}

/**
 * Usage history (SPEC §11): `GET /keys/{id}/usage` and `GET /tenants/{id}/usage` with `from`, `to`
 * (ISO 8601) and `granularity=hour|day`. An unknown key is 404; a tenant is known when it has a
 * plan, a key names it, or it has usage in the range (a JWT tenant has no key).
 */
export function mountUsageRoutes(router: Router, deps: UsageRoutesDeps): void {
  router.get('/keys/:id/usage', async (req, res) => {
    const r = range({ ...req.query }, deps);
    const id = req.params.id;
    const record = await deps.management().keys.get(id);
    if (record === undefined) throw new Problem('not-found', { detail: `No key ${id}.` });
    res.json((await report('k', id, r, deps)).body);
  });

  router.get('/tenants/:id/usage', async (req, res) => {
    const id = parseOrThrow(tenantIdParam, req.params.id, 'The tenant id is invalid.', ['path', 'id']);
    const r = range({ ...req.query }, deps);
    const { hours, body } = await report('t', id, r, deps);
    if (hours.size === 0) {
      const keys = deps.management().keys;
      const known =
        (await keys.getTenant(id)) !== undefined ||
        (await keys.list({ tenantId: id, limit: 1 })).items.length > 0;
      if (!known) throw new Problem('not-found', { detail: `No tenant ${id}.` });
    }
    res.json(body);
  });
}
