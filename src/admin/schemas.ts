import { z } from 'zod';
import { rateLimitListSchema } from '../policies/rate-limit/schema.js';
import { decodeCursor } from '../keys/record.js';

/*
 * The admin and self-service API's bodies and answers, as zod schemas: requests are validated
 * with them (400 validation-failed with JSON Pointers), and `/openapi.json` is generated from them.
 */

const name = z.string().min(1, 'must not be empty').max(200, 'must be at most 200 characters');
const scopes = z.array(z.string().min(1).max(200)).max(100, 'must list at most 100 scopes');
const id = z.string().min(1).max(200);
const environment = z
  .enum(['live', 'test'])
  .describe('`test` keys read `<prefix>_test_…`, for an application’s test mode; default `live`.');

const isoDate = z.iso.datetime({ offset: true, error: 'must be an ISO 8601 date-time' });
const ownerIssuer = z
  .string()
  .min(1)
  .max(2000)
  .describe(
    'The JWT issuer (`iss`) whose subject `ownerId` is: the key is that signed-in user’s in self-service.',
  );
/*
 * `meta` is bounded: it is cloned, serialised and listed with every key, so a deeply nested or
 * huge value (a self-service user's) must not make the admin's list of keys fail.
 */
export const META_LIMITS = { depth: 8, keys: 100, bytes: 4096 } as const;

function checkMeta(meta: Record<string, unknown>, ctx: z.RefinementCtx): void {
  let keys = 0;
  // Iterative, and never deeper than the limit: a value nested 30,000 levels is refused cheaply.
  const stack: Array<[unknown, Array<string | number>]> = [[meta, []]];
  while (stack.length > 0) {
    const [value, path] = stack.pop()!;
    if (value === null || typeof value !== 'object') continue;
    if (path.length >= META_LIMITS.depth) {
      ctx.addIssue({ code: 'custom', path, message: `nests more than ${META_LIMITS.depth} levels deep` });
      return;
    }
    if (Array.isArray(value)) {
      value.forEach((item, i) => stack.push([item, [...path, i]]));
      continue;
    }
    for (const [k, item] of Object.entries(value)) {
      if (++keys > META_LIMITS.keys) {
        ctx.addIssue({ code: 'custom', path: [], message: `has more than ${META_LIMITS.keys} keys in all` });
        return;
      }
      if (k === '__proto__') {
        ctx.addIssue({ code: 'custom', path: [...path, k], message: 'is a reserved name' });
        return;
      }
      stack.push([item, [...path, k]]);
    }
  }
  const bytes = Buffer.byteLength(JSON.stringify(meta));
  if (bytes > META_LIMITS.bytes)
    ctx.addIssue({
      code: 'custom',
      path: [],
      message: `is ${bytes} bytes as JSON, more than ${META_LIMITS.bytes}`,
    });
}

const meta = z
  .record(z.string().max(200, 'must be at most 200 characters'), z.unknown())
  .superRefine(checkMeta)
  .describe(
    `Free-form JSON kept with the key: at most ${META_LIMITS.depth} levels deep, ${META_LIMITS.keys} keys in all and ${META_LIMITS.bytes} bytes.`,
  );

export const createKeyBody = z.strictObject({
  name,
  scopes: scopes.optional(),
  plan: z.string().min(1).optional().describe('A plan of the config.'),
  ownerId: id.optional(),
  ownerIssuer: ownerIssuer.optional(),
  tenantId: id.optional(),
  expiresAt: isoDate.optional(),
  remaining: z
    .int()
    .min(0, 'must be a non-negative integer')
    .optional()
    .describe('Uses allowed; omitted for unlimited.'),
  meta: meta.optional(),
  hmac: z.boolean().optional().describe('Also create a signing secret for HMAC request signing.'),
  environment: environment.optional(),
  rateLimits: rateLimitListSchema
    .optional()
    .describe(
      "The key's own rate limits: one named like a limit of its plan replaces it (raises or lowers it); other names add limits.",
    ),
});

export const patchKeyBody = z.strictObject({
  name: name.optional(),
  ownerIssuer: ownerIssuer.nullable().optional(),
  scopes: scopes.optional(),
  plan: z.string().min(1).nullable().optional(),
  enabled: z.boolean().optional(),
  expiresAt: isoDate.nullable().optional(),
  remaining: z
    .int()
    .min(0, 'must be a non-negative integer')
    .nullable()
    .optional()
    .describe('Setting it restarts the count from this value.'),
  meta: meta.optional(),
  rateLimits: rateLimitListSchema.nullable().optional(),
});

export const rotateKeyBody = z.strictObject({
  gracePeriodSec: z
    .int()
    .min(0)
    .max(30 * 86_400, 'must be at most 30 days')
    .default(3_600)
    .describe('How long the old key keeps working.'),
});

export const verifyKeyBody = z.strictObject({
  key: z.string().min(1).max(300),
  scopes: scopes.optional().describe('Scopes the caller needs; missing ones give INSUFFICIENT_PERMISSIONS.'),
  ratelimits: z
    .array(
      z.strictObject({
        name: z
          .string()
          .min(1)
          .max(64)
          .describe(
            "A rate limit of the key's (its plan's, or its own, which replaces the plan's of that name).",
          ),
        cost: z
          .int()
          .min(0, 'must be a non-negative integer')
          .max(1_000_000_000, 'must be at most 1000000000')
          .optional()
          .describe("Units to check (and with `charge`, to count); default the limit's own cost."),
      }),
    )
    .max(20, 'must list at most 20 rate limits')
    .superRefine((list, ctx) => {
      const seen = new Set<string>();
      list.forEach((rl, i) => {
        if (seen.has(rl.name))
          ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `duplicate name "${rl.name}"` });
        seen.add(rl.name);
      });
    })
    .optional()
    .describe(
      'Check these limits (by name) instead of every per-key limit; the answer lists each with its state.',
    ),
  charge: z
    .boolean()
    .default(false)
    .describe(
      "Count this verification against the key's rate limits, quota and `remaining`, as a proxied request would (all or nothing).",
    ),
});

/** A tenant id in a path: validated like the `tenantId` of a key. */
export const tenantIdParam = id;

export const putTenantBody = z.strictObject({
  plan: z
    .string()
    .min(1)
    .nullable()
    .describe("A plan of the config, or null: the tenant's keys without a plan of their own then have none."),
});

export const tenantView = z
  .object({
    id: z.string(),
    plan: z.string().nullable().describe('The plan of every key of this tenant that has none of its own.'),
    updatedAt: z.string().nullable().describe('When the plan was last set; null: never.'),
  })
  .strict();

export const listKeysQuery = z.strictObject({
  ownerId: id.optional(),
  tenantId: id.optional(),
  state: z
    .enum(['active', 'revoked'])
    .default('active')
    .describe(
      '`revoked`: the most recently revoked keys instead (newest first, the last 1000 kept, no cursor).',
    ),
  limit: z
    .string()
    .regex(/^\d+$/, 'must be an integer from 1 to 200')
    .transform(Number)
    .pipe(z.int().min(1, 'must be an integer from 1 to 200').max(200, 'must be an integer from 1 to 200'))
    .default(50),
  cursor: z
    .string()
    .min(1)
    .max(500)
    .refine((c) => decodeCursor(c) !== undefined, 'is not a cursor this API gave out')
    .optional(),
});

export const selfServiceCreateBody = z.strictObject({
  name,
  environment: environment.optional(),
  scopes: scopes.optional(),
  expiresAt: isoDate.optional(),
  meta: meta.optional(),
});

const rateLimitOut = z.object({
  name: z.string(),
  by: z.string(),
  limit: z.int(),
  windowSec: z.int(),
  cost: z.int(),
});

export const keyView = z
  .object({
    id: z.string(),
    name: z.string(),
    maskedKey: z.string().describe('Prefix, environment and the last 4 characters.'),
    ownerId: z.string().nullable(),
    ownerIssuer: z
      .string()
      .nullable()
      .describe('The JWT issuer of the owner (self-service keys); null on keys made without one.'),
    tenantId: z.string().nullable(),
    scopes: z.array(z.string()),
    plan: z.string().nullable(),
    enabled: z.boolean(),
    expiresAt: z.string().nullable(),
    remaining: z.int().nullable().describe('Uses left now; null for unlimited.'),
    meta: z.record(z.string(), z.unknown()),
    rateLimits: z.array(rateLimitOut).nullable(),
    createdAt: z.string(),
    lastUsedAt: z.string().nullable(),
    hmac: z.boolean().describe('Whether the key has a signing secret.'),
    environment: z.enum(['live', 'test']),
    rotatedFrom: z.string().nullable(),
    revokedAt: z
      .string()
      .optional()
      .describe('Only in `GET /keys?state=revoked`: when the key was revoked (it no longer works).'),
  })
  .strict();

export const createdKey = keyView
  .extend({
    key: z.string().describe('The plaintext key: shown once, never again.'),
    signingSecret: z.string().optional().describe('The HMAC signing secret: shown once, never again.'),
  })
  .strict();

export const rotatedKey = createdKey
  .extend({
    previous: z
      .object({ id: z.string(), expiresAt: z.string() })
      .strict()
      .describe('The old key, valid until `expiresAt`.'),
  })
  .strict();

export const keyPage = z.object({ items: z.array(keyView), nextCursor: z.string().nullable() }).strict();

export const verifyCodes = [
  'VALID',
  'NOT_FOUND',
  'DISABLED',
  'EXPIRED',
  'FORBIDDEN',
  'INSUFFICIENT_PERMISSIONS',
  'USAGE_EXCEEDED',
  'RATE_LIMITED',
] as const;

export const verifyResult = z
  .object({
    valid: z.boolean(),
    code: z.enum(verifyCodes),
    keyId: z.string().nullable(),
    ownerId: z.string().nullable(),
    tenantId: z.string().nullable(),
    scopes: z.array(z.string()),
    plan: z.string().nullable(),
    expiresAt: z.string().nullable(),
    remaining: z.int().nullable(),
    meta: z.record(z.string(), z.unknown()),
    name: z.string().nullable().describe("The key's name (Unkey's verify shape)."),
    enabled: z.boolean().nullable(),
    environment: z.enum(['live', 'test']).nullable(),
    ratelimits: z
      .array(
        z
          .object({
            name: z.string(),
            limit: z.int(),
            remaining: z.int().describe('Units left in the current window, after this verification.'),
            reset: z.int().describe('Epoch milliseconds when the window resets.'),
          })
          .strict(),
      )
      .optional()
      .describe('With `ratelimits` in the request: each named limit, in the order asked.'),
  })
  .strict();

export const problemDocument = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.int(),
    detail: z.string(),
    instance: z.string(),
    request_id: z.string(),
  })
  .catchall(z.unknown());

export type KeyViewOut = z.output<typeof keyView>;

export const auditRecordSchema = z
  .object({
    time: z.string(),
    request_id: z.string(),
    trace_id: z.string(),
    method: z.string().optional(),
    path: z.string(),
    route: z.string().nullable(),
    status: z.int(),
    aborted: z.boolean(),
    latency_ms: z.number(),
    client_ip: z.string().nullable(),
    auth_method: z.string().nullable(),
    credential_id: z.string().nullable(),
    subject: z.string().nullable(),
    tenant: z.string().nullable(),
    problem: z.string().nullable(),
    upstream_status: z.int().nullable(),
    upstream_target: z.string().nullable(),
    upstream_latency_ms: z.number().nullable(),
    bytes_in: z.int(),
    bytes_out: z.int(),
    idempotent_replay: z.boolean(),
    rate_limit_policy: z.string().nullable(),
    rate_limit_shadow: z
      .array(z.string())
      .nullable()
      .optional()
      .describe('Shadow-mode rate limits that would have refused the request (it was let through).'),
    signature: z
      .object({ timestamp: z.string().nullable(), body_sha256: z.string(), result: z.string() })
      .strict()
      .nullable()
      .optional(),
    kind: z
      .literal('admin')
      .optional()
      .describe('`admin` on a record of an admin call (SPEC §11); absent on requests.'),
    actor: z
      .string()
      .nullable()
      .optional()
      .describe('Admin records: the admin token’s name; null when refused.'),
    action: z
      .string()
      .optional()
      .describe(
        'Admin records: `key.create`, `key.update`, `key.rotate`, `key.revoke`, `tenant.plan`, `config.reload`, or `read`.',
      ),
    target: z.string().nullable().optional().describe('Admin records: the key or tenant id acted on.'),
    outcome: z.enum(['success', 'failure', 'refused']).optional(),
  })
  .strict();

/** One webhook delivery attempt (`GET /webhooks/deliveries`). */
export const webhookAttemptSchema = z
  .object({
    time: z.string(),
    delivery_id: z.string(),
    event_id: z.string().describe('The `webhook-id` sent (the same on every attempt).'),
    type: z.string(),
    url: z.string(),
    status: z.int().nullable().describe('The receiver’s HTTP status; null when it did not answer.'),
    error: z.string().nullable(),
    attempts: z.int(),
    outcome: z.enum(['delivered', 'retry', 'failed', 'dropped']),
    next_retry_at: z.string().nullable(),
  })
  .strict();

export const auditLookupSchema = auditRecordSchema
  .extend({
    others: z
      .array(auditRecordSchema)
      .describe(
        'The other records with the same request id (a client-chosen `X-Request-Id` may be reused), newest first; empty when the id is unique.',
      ),
  })
  .strict()
  .describe('The newest audit record with this request id, and every other one kept.');
