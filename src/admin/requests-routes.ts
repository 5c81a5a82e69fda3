import type { Router } from 'express';
import { z } from 'zod';
import { Problem } from '../problems/problem.js';
import { parseOrThrow } from '../problems/validation.js';
import type { AuditStore } from '../observability/audit.js';

export const auditQuerySchema = z.strictObject({
  kind: z.enum(['request', 'admin', 'all'], { error: 'must be request, admin or all' }).default('request'),
  actor: z.string().min(1).max(64).optional(),
  action: z.string().min(1).max(64).optional(),
  credentialId: z.string().min(1).max(200).optional(),
  route: z.string().min(1).max(64).optional(),
  status: z
    .string()
    .regex(/^[1-5](\d\d|xx)$/i, 'must be a status (429) or a class (4xx)')
    .optional(),
  since: z
    .string()
    .refine(
      (s) => /^\d+$/.test(s) || !Number.isNaN(Date.parse(s)),
      'must be an ISO 8601 time or epoch milliseconds',
    )
    .transform((s) => (/^\d+$/.test(s) ? Number(s) : Date.parse(s)))
    .optional(),
  limit: z
    .string()
    .regex(/^\d+$/, 'must be an integer from 1 to 1000')
    .transform(Number)
    .pipe(z.int().min(1, 'must be an integer from 1 to 1000').max(1000, 'must be an integer from 1 to 1000'))
    .default(50),
});

/**
 * `GET /requests/{id}`: the audit record of one request (the `instance` of a problem
 * dereferenced). A client may choose its `X-Request-Id`, so an id is not proof of one request:
 * the answer is the newest record with that id, and `others` lists every other one kept, newest
 * first (empty when the id is unique) — a reused id never hides a request.
 * `GET /requests?credentialId=&status=&route=&since=&limit=`: recent records, newest first.
 * `kind=admin` lists the admin trail instead (filter it by `actor` and `action` too), `kind=all`
 * both; the default is `request`, the trail of proxied requests.
 */
export function mountAuditRoutes(
  router: Router,
  audit: () => AuditStore,
  adminAudit: () => AuditStore,
): void {
  router.get('/requests/:id', async (req, res) => {
    const [requests, admin] = await Promise.all([
      audit().getAll(req.params.id),
      adminAudit().getAll(req.params.id),
    ]);
    const [newest, ...others] = [...requests, ...admin].sort(
      (a, b) => Date.parse(b.time) - Date.parse(a.time),
    );
    if (newest === undefined)
      throw new Problem('not-found', { detail: `No audit record for request ${req.params.id}.` });
    res.json({ ...newest, others });
  });
  router.get('/requests', async (req, res) => {
    const query = parseOrThrow(auditQuerySchema, { ...req.query }, 'The query is invalid.', ['query']);
    const { kind, ...filter } = query;
    if (kind === 'request') return void res.json({ items: await audit().list(filter) });
    if (kind === 'admin') return void res.json({ items: await adminAudit().list(filter) });
    const [requests, admin] = await Promise.all([audit().list(filter), adminAudit().list(filter)]);
    const items = [...requests, ...admin]
      .sort((a, b) => Date.parse(b.time) - Date.parse(a.time))
      .slice(0, filter.limit);
    res.json({ items });
  });
}
