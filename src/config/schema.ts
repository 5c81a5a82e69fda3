import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { redisSchema } from '../shared/redis-schema.js';
import type { Plan } from '../core/identity.js';
import { typeBaseSchema } from '../problems/schema.js';
import { bodyBytesSchema, routeLimitsSchema } from '../policies/body-limit/schema.js';
import { headersSchema } from '../policies/headers/schema.js';
import { authSchema, routeAuthSchema } from '../policies/authenticate/schema.js';
import { goneSchema } from '../policies/gone/schema.js';
import { idempotencySchema, idempotencyStoreSchema } from '../policies/idempotency/schema.js';
import { mockSchema } from '../policies/mock/schema.js';
import { faultSchema } from '../policies/fault/schema.js';
import { upstreamErrorsSchema, upstreamSchema } from '../policies/proxy/schema.js';
import { planQuotaSchema, routeQuotaSchema } from '../policies/quota/schema.js';
import { metersSchema, rateLimitListSchema } from '../policies/rate-limit/schema.js';
import { policiesSchema, routePoliciesSchema } from '../policies/custom/schema.js';
import { corsSchema, routeCorsSchema } from '../policies/cors/schema.js';
import { ipRulesSchema } from '../policies/ip-rules/schema.js';
import { websocketSchema } from '../policies/websocket/schema.js';
import { concurrencySchema } from '../policies/concurrency/schema.js';
import { compileTrust } from '../core/client-ip.js';
import { webhooksSchema } from '../events/schema.js';
import { telemetrySchema } from '../observability/telemetry-schema.js';
import { httpMethod, mountPath, nonNegativeInt, port, positiveInt, bool } from './primitives.js';

/**
 * The config contract (SPEC §2). This schema is the single source of truth: the TypeScript
 * types are inferred from it, `tollgate validate` reports its issues, and
 * `docs/configuration.md` is generated from its descriptions.
 */

const routeSchema = z
  .strictObject({
    id: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 letters, digits, "_" or "-"')
      .describe('Route id, used in logs, metrics and audit records.'),
    path: mountPath().describe(
      'Segment prefix the route serves: `/v1/orders` matches `/v1/orders` and `/v1/orders/7`, not `/v1/ordersx`.',
    ),
    methods: z
      .array(httpMethod)
      .min(1)
      .optional()
      .describe('Allowed methods (HEAD comes with GET); any method when omitted. Others get 405.'),
    upstream: upstreamSchema.optional(),
    mock: mockSchema.optional(),
    gone: goneSchema.optional(),
    auth: routeAuthSchema.optional(),
    rateLimits: rateLimitListSchema.describe('Rate limits of the route, on top of the plan’s.'),
    quota: routeQuotaSchema.optional(),
    meters: metersSchema,
    idempotency: idempotencySchema.optional(),
    fault: faultSchema.optional(),
    concurrency: concurrencySchema.optional(),
    websocket: websocketSchema,
    policies: routePoliciesSchema,
    upstreamErrors: upstreamErrorsSchema,
    cors: routeCorsSchema.optional(),
    ipRules: ipRulesSchema.optional(),
    // issue 16 (traffic-a): per-route limits, header transforms.
    limits: routeLimitsSchema.optional(),
    headers: headersSchema.optional(),
  })
  .superRefine((route, ctx) => {
    const kinds = (['upstream', 'mock', 'gone'] as const).filter((k) => route[k] !== undefined);
    if (kinds.length !== 1)
      ctx.addIssue({ code: 'custom', path: [], message: 'needs exactly one of upstream, mock or gone' });
    if (route.upstream && route.auth === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['auth'],
        message: 'is required on a route with an upstream (write `auth: none` to make it public)',
      });
    if (route.websocket !== undefined && route.upstream === undefined)
      ctx.addIssue({ code: 'custom', path: ['websocket'], message: 'needs an upstream' });
    const sp = route.upstream?.stripPrefix;
    if (sp !== undefined && sp !== '/' && route.path !== sp && !route.path.startsWith(sp + '/'))
      ctx.addIssue({
        code: 'custom',
        path: ['upstream', 'stripPrefix'],
        message: `must be a segment prefix of the route path ${route.path}`,
      });
    if (
      route.auth !== undefined &&
      route.auth !== 'none' &&
      route.auth.hmac !== 'off' &&
      !route.auth.methods.includes('apiKey')
    )
      ctx.addIssue({ code: 'custom', path: ['auth', 'hmac'], message: 'needs apiKey among auth.methods' });
    // Refinements also run over routes that failed their own checks: read defensively.
    const meters = route.meters ?? {};
    ((route.rateLimits as typeof route.rateLimits | undefined) ?? []).forEach((rl, j) => {
      if (rl.meter !== undefined && !Object.hasOwn(meters, rl.meter))
        ctx.addIssue({
          code: 'custom',
          path: ['rateLimits', j, 'meter'],
          message: `"${rl.meter}" is not a meter of this route (meters)`,
        });
    });
  })
  .transform((route) => ({ ...route, auth: route.auth ?? ('none' as const) }))
  .describe('One route.');

const planSchema = z
  .strictObject({
    apiAccess: bool().default(true).describe('Keys on a plan without API access get 403 forbidden.'),
    quota: planQuotaSchema.optional(),
    quotaBy: z
      .enum(['credential', 'tenant', 'owner'])
      .optional()
      .describe(
        'Whose quota a request is charged to: the credential, its tenant, or its owner (every key of one `ownerId` shares one quota). Unset: `owner` for keys made by self-service (so revoking and re-creating keys cannot reset a quota), `credential` for the rest.',
      ),
    rateLimits: rateLimitListSchema.describe('Rate limits of every credential on the plan.'),
  })
  .describe('A plan credentials belong to.');
// The plain `Plan` of core is what stages read: it must be what this schema gives.
const _planShape: Plan = {} as z.output<typeof planSchema>;
void _planShape;

/** The actor name of an admin token: its `name`, or `token-<position from 1>` for a plain string. */
export function adminTokenName(t: string | { name: string }, index: number): string {
  return typeof t === 'string' ? `token-${index + 1}` : t.name;
}

const adminSchema = z
  .strictObject({
    host: z
      .string()
      .min(1)
      .default('127.0.0.1')
      .describe(
        'Address the admin listener binds. Loopback by default; `0.0.0.0` (a container publishing the port) only when asked, and the gateway warns at start.',
      ),
    port: port().default(8081),
    tokens: z
      .array(z.union([z.string(), z.strictObject({ name: z.string(), token: z.string() })]))
      .default([])
      .transform((tokens) => tokens.filter((t) => t !== ''))
      .pipe(
        z.array(
          z.union([
            z.string().min(16, 'must be at least 16 characters'),
            z.strictObject({
              name: z
                .string()
                .regex(/^[A-Za-z0-9._@-]{1,64}$/, 'must be 1-64 letters, digits, ".", "_", "@" or "-"')
                .describe('Who holds the token: the actor of its audit records.'),
              token: z.string().min(16, 'must be at least 16 characters'),
            }),
          ]),
        ),
      )
      .superRefine((tokens, ctx) => {
        const names = new Map<string, number>();
        tokens.forEach((t, i) => {
          const name = adminTokenName(t, i);
          const first = names.get(name);
          if (first !== undefined)
            ctx.addIssue({
              code: 'custom',
              path: typeof t === 'string' ? [i] : [i, 'name'],
              message: `names the same actor as tokens[${first}] ("${name}")`,
            });
          else names.set(name, i);
        });
      })
      .describe(
        'Bearer tokens of the admin API: a string, or `{name, token}` (the name is the actor in audit records; a plain string at position i is `token-<i+1>`). Empty values are dropped; with none, only probes are served.',
      ),
  })
  .describe('The admin listener: probes, metrics, key management, audit.');

export const configSchema = z
  .strictObject({
    $schema: z
      .string()
      .optional()
      .describe('The JSON Schema of this file (`tollgate schema`), for editors; ignored by the gateway.'),
    listen: z
      .strictObject({ host: z.string().default('0.0.0.0'), port: port().default(8080) })
      .prefault({})
      .describe('The public listener.'),
    server: z
      .strictObject({
        headersTimeoutMs: positiveInt()
          .default(10_000)
          .describe('Time allowed to receive the request headers.'),
        requestTimeoutMs: positiveInt()
          .default(60_000)
          .describe('Time allowed to receive the whole request.'),
        keepAliveTimeoutMs: positiveInt()
          .default(5_000)
          .describe('Idle keep-alive connections close after this.'),
        maxHeaderBytes: positiveInt()
          .default(16_384)
          .describe('Request line and headers larger than this get 431.'),
        drainTimeoutMs: positiveInt()
          .default(10_000)
          .describe('On SIGTERM, in-flight requests get this long.'),
        viaExpress: bool()
          .default(false)
          .describe(
            'Serve the public listener through the Express app (`createGateway().app`) instead of handing node:http requests to the pipeline directly; costs ~20 µs per request (see the README performance section).',
          ),
      })
      .prefault({})
      .describe('HTTP server limits (changes need a restart).'),
    admin: adminSchema.optional(),
    redis: redisSchema.optional(),
    problems: z
      .strictObject({
        typeBase: typeBaseSchema,
      })
      .prefault({}),
    trustProxy: z
      .union([bool(), nonNegativeInt(), z.string(), z.array(z.string())])
      .superRefine((tp, ctx) => {
        if (typeof tp === 'boolean' || typeof tp === 'number') return;
        try {
          compileTrust(tp);
        } catch (err) {
          ctx.addIssue({
            code: 'custom',
            message: `must be true, a hop count, or loopback, linklocal, uniquelocal, addresses and CIDRs (${(err as Error).message})`,
          });
        }
      })
      .default(false)
      .describe(
        "As Express' `trust proxy`: which peers' `X-Forwarded-For` is believed for the client IP (`loopback`, CIDRs, a hop count, true).",
      ),
    limits: z
      .strictObject({
        bodyBytes: bodyBytesSchema,
      })
      .prefault({}),
    auth: authSchema,
    plans: z.record(z.string().regex(/^[A-Za-z0-9_-]{1,64}$/), planSchema).default({}),
    selfService: z
      .strictObject({
        path: mountPath().describe('Where signed-in (JWT) users manage their own keys.'),
        maxKeysPerUser: positiveInt().default(20).describe('Active keys one user may hold.'),
        plan: z.string().optional().describe('Plan of self-service keys.'),
        planFrom: z
          .enum(['config', 'tenant'])
          .default('config')
          .describe(
            "`tenant`: a key made by a user whose token names a tenant with a plan (`PUT /tenants/{id}`) follows that tenant's plan (it gets none of its own); otherwise, and with `config`, it gets `plan`.",
          ),
        requiredScopes: z
          .array(z.string().min(1))
          .optional()
          .describe('Scopes a user’s token must all carry to create keys (else 403 forbidden).'),
        requiredClaims: z
          .record(
            z
              .string()
              .min(1)
              .refine((k) => k !== '__proto__', 'is a reserved name'),
            z.array(z.string()).min(1, 'must list at least one value'),
          )
          .optional()
          .describe(
            'As `auth.claims`: `{claim: [values…]}`; a token whose claim (a string or an array of strings) has none of the values cannot create keys (403 forbidden), e.g. `{org_role: [admin]}`.',
          ),
        scopes: z
          .array(z.string().min(1))
          .optional()
          .describe(
            "Scopes a user may give a self-service key. Unset: only scopes the user's own token carries.",
          ),
      })
      .optional(),
    logging: z
      .strictObject({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
        format: z
          .enum(['auto', 'json', 'pretty'])
          .default('auto')
          .describe('`auto`: pretty on a TTY outside production.'),
      })
      .prefault({}),
    audit: z
      .strictObject({
        retentionSec: positiveInt()
          .default(86_400)
          .describe(
            'How long audit records are kept. In Redis each record takes about 670 bytes for that long (770 when clients choose their request ids), up to `maxRedisBytes` in all: size it for rate × retention (docs/performance.md, Sizing).',
          ),
        maxEntries: positiveInt()
          .default(10_000)
          .describe(
            "Records kept in memory without Redis (with it, this instance's newest, at most 10,000, answer while Redis is away), and the most one lookup by request id returns.",
          ),
        maxRedisBytes: positiveInt()
          .default(1_073_741_824)
          .describe(
            'With Redis: about the most the audit trail may hold there (1 GiB). Past it the oldest records are deleted before `retentionSec` ends (checked every 5 s; a warning is logged and `tollgate_audit_trimmed_total` counts them), so a busy gateway cannot fill Redis, which also holds the counters.',
          ),
      })
      .prefault({}),
    idempotency: idempotencyStoreSchema.prefault({}),
    usage: z
      .strictObject({
        retentionDays: positiveInt(400)
          .default(35)
          .describe('How long usage history (`GET /keys/{id}/usage`) is kept, in days (1–400).'),
        flushIntervalMs: positiveInt(60_000)
          .refine((ms) => ms >= 50, 'must be an integer from 50 to 60000')
          .default(1000)
          .describe(
            'With Redis: how often each instance writes its usage counts (a crash loses at most this much).',
          ),
      })
      .prefault({})
      .describe('Usage history per key and tenant (SPEC §11; docs/usage.md).'),
    workers: z
      .union([positiveInt(), z.literal('auto')])
      .default(1)
      .describe(
        'Processes sharing the listener (node:cluster); `auto` = one per core. More than one needs `redis`.',
      ),
    routing: z
      .strictObject({
        caseSensitive: bool()
          .default(false)
          .describe(
            'Match route paths in exact case. By default case is ignored (`/v1/ORDERS/7` is the `/v1/orders` route), as Express, ASP.NET and IIS upstreams route; the path goes upstream as sent either way.',
          ),
      })
      .prefault({})
      .describe('How request paths find their route (`;params` in a segment are always ignored).'),
    policies: policiesSchema,
    cors: corsSchema.optional().describe('CORS of every route that does not set its own (and of 404s).'),
    ipRules: ipRulesSchema.optional(),
    webhooks: webhooksSchema,
    telemetry: telemetrySchema,
    routes: z.array(routeSchema).default([]),
  })
  .superRefine((cfg, ctx) => {
    const ids = new Map<string, number>();
    const paths = new Map<string, number[]>();
    // Paths that differ only in case are one route unless matching is case-sensitive.
    const caseSensitive = (cfg.routing as typeof cfg.routing | undefined)?.caseSensitive === true;
    const pathKey = (p: string) => (caseSensitive ? p : p.toLowerCase());
    cfg.routes.forEach((r, i) => {
      // Refinements also run over routes that failed their own checks: read defensively.
      const listed = (r.policies as string[] | undefined) ?? [];
      listed.forEach((name, j) => {
        if (!Object.hasOwn(cfg.policies, name))
          ctx.addIssue({
            code: 'custom',
            path: ['routes', i, 'policies', j],
            message: `"${name}" is not a policy in policies`,
          });
        else if (listed.indexOf(name) !== j)
          ctx.addIssue({
            code: 'custom',
            path: ['routes', i, 'policies', j],
            message: `"${name}" is listed twice`,
          });
      });
      const firstId = ids.get(r.id);
      if (firstId !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: ['routes', i, 'id'],
          message: `duplicate of routes[${firstId}].id`,
        });
      else ids.set(r.id, i);
      const samePath = paths.get(pathKey(r.path));
      if (samePath === undefined) paths.set(pathKey(r.path), [i]);
      else {
        samePath.push(i);
        pathIssue(cfg.routes, samePath, i, caseSensitive, ctx);
      }
      // Refinements also run over routes that failed their own checks: read defensively.
      const auth = r.auth as typeof r.auth | undefined;
      if (
        auth !== undefined &&
        auth !== 'none' &&
        auth.methods.includes('jwt') &&
        cfg.auth.jwt.length === 0 &&
        !auth.methods.includes('apiKey')
      )
        ctx.addIssue({
          code: 'custom',
          path: ['routes', i, 'auth', 'methods'],
          message: 'jwt needs auth.jwt issuers',
        });
    });
    claimHeaderIssues(cfg.routes, cfg.auth.jwt, ctx);
    // A plan's metered limit applies on the routes that declare its meter: one that no route
    // declares would never apply (a typo), so it is refused.
    const declared = new Set<string>();
    for (const r of cfg.routes) for (const m of Object.keys(r.meters ?? {})) declared.add(m);
    for (const [name, plan] of Object.entries(cfg.plans)) {
      ((plan.rateLimits as typeof plan.rateLimits | undefined) ?? []).forEach((rl, j) => {
        if (rl.meter !== undefined && !declared.has(rl.meter))
          ctx.addIssue({
            code: 'custom',
            path: ['plans', name, 'rateLimits', j, 'meter'],
            message: `"${rl.meter}" is not a meter of any route (routes[].meters)`,
          });
      });
      const qm = plan.quota?.meter;
      if (qm !== undefined && !declared.has(qm))
        ctx.addIssue({
          code: 'custom',
          path: ['plans', name, 'quota', 'meter'],
          message: `"${qm}" is not a meter of any route (routes[].meters)`,
        });
    }
    if (cfg.selfService) {
      if (cfg.auth.jwt.length === 0)
        ctx.addIssue({
          code: 'custom',
          path: ['selfService'],
          message: 'needs auth.jwt issuers (it is JWT only)',
        });
      if (paths.has(pathKey(cfg.selfService.path)))
        ctx.addIssue({ code: 'custom', path: ['selfService', 'path'], message: 'is also a route path' });
      if (cfg.selfService.plan !== undefined && !Object.hasOwn(cfg.plans, cfg.selfService.plan))
        ctx.addIssue({ code: 'custom', path: ['selfService', 'plan'], message: 'is not a plan in plans' });
    }
    // In-memory stores live in one process: with several workers the admin API (in the primary)
    // and each worker would hold keys of their own — admin-made keys would never authenticate.
    const workers = cfg.workers === 'auto' ? availableParallelism() : cfg.workers;
    if (workers > 1 && cfg.redis === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['workers'],
        message: `${cfg.workers === 'auto' ? `"auto" is ${workers} processes here; ` : ''}more than one worker needs redis (or REDIS_URL): in-memory keys, limits, quotas and idempotency records cannot be shared between processes`,
      });
    if (cfg.admin && cfg.admin.port === cfg.listen.port && cfg.admin.port !== 0)
      ctx.addIssue({ code: 'custom', path: ['admin', 'port'], message: 'must differ from listen.port' });
  });

type RouteOutput = z.output<typeof routeSchema>;

/** The methods a route takes, HEAD with GET; undefined: any. */
function methodsOf(route: RouteOutput): Set<string> | undefined {
  const listed = route.methods as string[] | undefined;
  if (listed === undefined) return undefined;
  const set = new Set(listed);
  if (set.has('GET')) set.add('HEAD');
  return set;
}

/**
 * SPEC §9 per-method routes: routes may share a path only when each lists its methods and no
 * method (HEAD counts with GET) is in two lists; the request's method picks the route.
 */
function pathIssue(
  routes: readonly RouteOutput[],
  samePath: readonly number[],
  i: number,
  caseSensitive: boolean,
  ctx: z.RefinementCtx,
): void {
  const route = routes[i]!;
  const mine = methodsOf(route);
  for (const k of samePath) {
    if (k === i) break;
    const other = routes[k]!;
    const theirs = methodsOf(other);
    const spelling =
      other.path === route.path || caseSensitive
        ? ''
        : ' (paths match ignoring case; set routing.caseSensitive: true to tell them apart)';
    if (mine === undefined && theirs === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['routes', i, 'path'],
        message: `duplicate of routes[${k}].path${spelling}; routes may share a path only with disjoint methods lists`,
      });
      return;
    }
    const shared =
      mine === undefined
        ? [...theirs!]
        : theirs === undefined
          ? [...mine]
          : [...mine].filter((m) => theirs.has(m));
    if (shared.length === 0) continue;
    ctx.addIssue({
      code: 'custom',
      path: ['routes', i, 'methods'],
      message:
        mine === undefined || theirs === undefined
          ? `routes[${i}] ("${route.path}") and routes[${k}] ("${other.path}") share a path${spelling}: each needs a methods list, disjoint from the other's`
          : `overlaps routes[${k}].methods on the path both routes serve (routes[${i}] "${route.path}", routes[${k}] "${other.path}")${spelling}: ${shared.join(', ')}${shared.includes('HEAD') && !(route.methods!.includes('HEAD') && other.methods!.includes('HEAD')) ? ' (HEAD comes with GET)' : ''}`,
    });
    return;
  }
}

/**
 * A route's request header transform cannot set or remove a header an issuer's `claimHeaders`
 * sends: it is the gateway's, as the identity headers are (SPEC §9).
 */
function claimHeaderIssues(
  routes: readonly RouteOutput[],
  issuers: ReadonlyArray<{ claimHeaders?: Record<string, string> | undefined }>,
  ctx: z.RefinementCtx,
): void {
  const owned = new Set<string>();
  for (const issuer of issuers)
    for (const name of Object.keys(issuer.claimHeaders ?? {}))
      owned.add(name.toLowerCase().replaceAll('_', '-'));
  if (owned.size === 0) return;
  const taken = (name: string) => owned.has(name.toLowerCase().replaceAll('_', '-'));
  const message =
    "is a claim header (auth.jwt[].claimHeaders): the gateway's own, it cannot be set or removed";
  routes.forEach((route, i) => {
    const request = route.headers?.request;
    if (request === undefined) return;
    for (const name of Object.keys(request.set))
      if (taken(name))
        ctx.addIssue({ code: 'custom', path: ['routes', i, 'headers', 'request', 'set', name], message });
    request.remove.forEach((name, j) => {
      if (taken(name))
        ctx.addIssue({ code: 'custom', path: ['routes', i, 'headers', 'request', 'remove', j], message });
    });
  });
}

/** What a config file or `createGateway()` accepts (defaults optional). */
export type ConfigInput = z.input<typeof configSchema>;
/** The normalised config: every default applied. */
export type Config = z.output<typeof configSchema>;
export type RouteConfig = Config['routes'][number];
export type PlanConfig = Plan;
export type { RedisConfig } from '../shared/redis-schema.js';
export type AdminConfig = NonNullable<Config['admin']>;
