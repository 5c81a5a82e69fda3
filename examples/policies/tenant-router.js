// A custom policy written with definePolicy (SPEC §12): routes each tenant to its shard.
//
// It reads the tenant from the caller's credential (a key's tenantId, a JWT's tenant claim) or,
// on routes that allow it, from a header, refuses tenants it does not know, and tells the upstream
// which shard serves the tenant in `X-Tenant-Shard` (an upstream, or a load balancer in front of
// several, routes on it). Options are checked by the schema when the config loads, so a typo is a
// `tollgate validate` error with its path, never a runtime surprise.
import { z } from 'zod';
import { definePolicy, Problem } from 'tollgate';

const options = z.strictObject({
  /** tenant id → shard name */
  tenants: z.record(z.string().min(1), z.string().regex(/^[a-z0-9-]{1,32}$/, 'must be a shard name')),
  /** Where an anonymous caller names its tenant; omit to require a credential that carries one. */
  header: z
    .string()
    .regex(/^[a-z0-9-]+$/)
    .optional(),
  upstreamHeader: z.string().default('x-tenant-shard'),
});

export default definePolicy({
  name: 'tenant-router',
  schema: options,
  phase: 'late',
  create({ tenants, header, upstreamHeader }) {
    const shards = new Map(Object.entries(tenants));
    return function tenantRouter(req) {
      const claimed = header === undefined ? undefined : req.headers[header];
      const tenant = req.identity?.tenantId ?? (typeof claimed === 'string' ? claimed : undefined);
      if (tenant === undefined)
        throw new Problem('forbidden', {
          detail: 'This route needs a credential (or header) that names a tenant.',
        });
      const shard = shards.get(tenant);
      if (shard === undefined) throw new Problem('forbidden', { detail: 'This tenant is not served here.' });
      req.setUpstreamHeader(upstreamHeader, shard);
      req.setResponseHeader('x-tenant-shard', shard);
    };
  },
});
