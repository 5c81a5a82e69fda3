import express, { type Router } from 'express';
import { Problem } from '../problems/problem.js';
import { parseOrThrow } from '../problems/validation.js';
import type { Plan } from '../core/identity.js';
import type { KeyManagement } from '../key-management/management.js';
import { putTenantBody, tenantIdParam } from './schemas.js';

export interface TenantRoutesDeps {
  management: () => KeyManagement;
  plans: () => Readonly<Record<string, Plan>>;
}

const json = express.json({ limit: '16kb', strict: true, type: () => true });

function tenantId(raw: string): string {
  return parseOrThrow(tenantIdParam, raw, 'The tenant id is invalid.', ['path', 'id']);
}

/**
 * Tenant plans (SPEC §10): `PUT /tenants/{id}` `{plan}` sets the plan every key of the tenant
 * without a plan of its own is on — at once, on every instance — and `GET /tenants/{id}` shows it.
 */
export function mountTenantRoutes(router: Router, deps: TenantRoutesDeps): void {
  router.get('/tenants/:id', async (req, res) => {
    const id = tenantId(req.params.id);
    const keys = deps.management().keys;
    const tenant = await keys.getTenant(id);
    if (tenant !== undefined) {
      res.json(tenant);
      return;
    }
    // Never given a plan: a tenant as far as its keys name it, else unknown.
    const page = await keys.list({ tenantId: id, limit: 1 });
    if (page.items.length === 0) throw new Problem('not-found', { detail: `No tenant ${id}.` });
    res.json({ id, plan: null, updatedAt: null });
  });

  router.put('/tenants/:id', json, async (req, res) => {
    const id = tenantId(req.params.id);
    const body = parseOrThrow(putTenantBody, req.body, 'The request body is invalid.');
    // Own properties only: `__proto__` or `constructor` is no plan.
    if (body.plan !== null && !Object.hasOwn(deps.plans(), body.plan))
      throw new Problem('validation-failed', {
        detail: 'The request body is invalid.',
        extensions: { errors: [{ pointer: '/plan', message: 'is not a plan in the config' }] },
      });
    res.json(await deps.management().keys.setTenantPlan(id, body.plan));
  });
}
