import type { Router } from 'express';
import { z } from 'zod';
import { parseOrThrow } from '../problems/validation.js';
import type { AttemptRecord } from '../events/store.js';

export const deliveriesQuery = z.strictObject({
  limit: z
    .string()
    .regex(/^\d+$/, 'must be an integer from 1 to 500')
    .transform(Number)
    .pipe(z.int().min(1, 'must be an integer from 1 to 500').max(500, 'must be an integer from 1 to 500'))
    .default(50),
});

/**
 * `GET /webhooks/deliveries?limit=`: the newest webhook delivery attempts (SPEC §11), newest first —
 * event id, type, receiver URL, the receiver's status (null: no answer), attempts so far, outcome
 * and the next retry. Across instances with Redis.
 */
export function mountWebhookRoutes(
  router: Router,
  attempts: (limit: number) => Promise<AttemptRecord[]>,
): void {
  router.get('/webhooks/deliveries', async (req, res) => {
    const query = parseOrThrow(deliveriesQuery, { ...req.query }, 'The query is invalid.', ['query']);
    res.json({ items: await attempts(query.limit) });
  });
}
