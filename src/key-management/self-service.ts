import { Problem } from '../problems/problem.js';
import { parseOrThrow } from '../problems/validation.js';
import type { Config } from '../config/schema.js';
import { answerHead, type Identity, type RequestContext } from '../core/context.js';
import type { Stage } from '../core/stage.js';
import { afterSegmentPrefix, prefixSegments } from '../core/path.js';
import type { KeyManagement } from './management.js';
import { looksLikeKey } from '../keys/format.js';
import { ownedAs } from '../keys/record.js';
import { listKeysQuery, selfServiceCreateBody } from '../admin/schemas.js';

type SelfServiceConfig = NonNullable<Config['selfService']>;

export interface SelfServiceOptions {
  config: SelfServiceConfig;
  management: KeyManagement;
  apiKeyHeader: string;
  apiKeyPrefix: string;
  /** The configured JWT issuers (`auth.jwt[].issuer`): with exactly one, keys without an owner issuer are its users'. */
  issuers: readonly string[];
  clock: { now(): number };
  securityHeaders: ReadonlyArray<readonly [string, string]>;
}

/** API keys cannot manage keys: refused before authentication, whatever else the request carries. */
export function createNoApiKeysStage(apiKeyHeader: string, prefix: string): Stage {
  return {
    name: 'no-api-keys',
    run(ctx: RequestContext) {
      const bearer = /^Bearer\s+(\S+)/i.exec(ctx.req.headers.authorization ?? '')?.[1];
      if (
        ctx.req.headers[apiKeyHeader] !== undefined ||
        (bearer !== undefined && looksLikeKey(bearer, prefix))
      )
        throw new Problem('forbidden', { detail: 'API keys cannot manage keys.' });
    },
  };
}

/** Who owns a self-service key: a subject is unique only within its issuer (SPEC §9). */
interface Owner {
  subject: string;
  issuer: string;
  /** The owner issuers a key of this user may carry: theirs, and none for pre-version-2 keys when unambiguous. */
  issuers: ReadonlyArray<string | null>;
}

/**
 * Self-service keys for signed-in users (SPEC §6), at `selfService.path` on the public listener,
 * after JWT authentication: `POST` creates a key owned by the token's issuer and subject (and
 * tenant), `GET` lists the caller's keys masked, `DELETE <path>/{id}` revokes one of them. Another
 * user's key — the same subject at another issuer included — and an unknown id are both 404:
 * whether an id exists is not revealed.
 *
 * Keys without an owner issuer (self-service keys made before version 2, and admin or CLI keys
 * given only an `ownerId`) belong to that subject of the only issuer when exactly one is
 * configured — as they always did; with several, to nobody here until an admin sets their
 * `ownerIssuer` (`PATCH /keys/{id}`), because which issuer's user made them is not known.
 */
export function createSelfServiceStage(o: SelfServiceOptions): Stage {
  const base = prefixSegments(o.config.path);
  const allowedScopes = o.config.scopes === undefined ? undefined : new Set(o.config.scopes);
  const requiredScopes = o.config.requiredScopes ?? [];
  const requiredClaims = Object.entries(o.config.requiredClaims ?? {}).map(
    ([claim, values]) => [claim, new Set(values)] as const,
  );

  /** `selfService.requiredScopes` and `requiredClaims` (SPEC §10): who may create keys at all. */
  const mayCreate = (identity: Identity): void => {
    const missing = requiredScopes.filter((s) => !identity.scopes.includes(s));
    if (missing.length > 0)
      throw new Problem('forbidden', {
        detail: `Creating keys needs the scope${missing.length === 1 ? '' : 's'} ${missing.join(' ')}.`,
      });
    for (const [claim, allowed] of requiredClaims) {
      const value = identity.claims?.[claim];
      const values = typeof value === 'string' ? [value] : Array.isArray(value) ? value : [];
      if (!values.some((v) => typeof v === 'string' && allowed.has(v)))
        throw new Problem('forbidden', {
          detail: `Creating keys needs the token's ${claim} claim to be one of: ${[...allowed].join(', ')}.`,
          extensions: { required_claim: claim },
        });
    }
  };

  /** The plan of a new key: none of its own when it follows its tenant's (`planFrom: tenant`). */
  const planFor = async (tenant: string | undefined): Promise<string | null> => {
    if (o.config.planFrom === 'tenant' && tenant !== undefined) {
      const tenantPlan = await o.management.keys.planOf({ plan: null, tenantId: tenant });
      if (tenantPlan !== null) return null;
    }
    return o.config.plan ?? null;
  };
  const legacyIssuer = o.issuers.length === 1 ? o.issuers[0] : undefined;
  const ownerOf = (subject: string, issuer: string): Owner => ({
    subject,
    issuer,
    issuers: issuer === legacyIssuer ? [issuer, null] : [issuer],
  });

  const send = (ctx: RequestContext, status: number, body: unknown) => {
    const text = body === undefined ? '' : JSON.stringify(body);
    const headers: string[] = [];
    for (const [k, v] of o.securityHeaders) headers.push(k, v);
    if (body !== undefined) headers.push('content-type', 'application/json; charset=utf-8');
    headers.push(
      'content-length',
      String(Buffer.byteLength(text)),
      'cache-control',
      'no-store',
      'x-request-id',
      ctx.requestId,
    );
    ctx.res.writeHead(status, answerHead(ctx, headers));
    ctx.res.end(text);
    ctx.bytesOut = Buffer.byteLength(text); // not on res.getHeader for the audit record
    ctx.handled = true;
  };

  const create = async (ctx: RequestContext, owner: Owner, identity: Identity) => {
    mayCreate(identity);
    const tenant = identity.tenant;
    const tokenScopes = identity.scopes;
    let raw: unknown;
    try {
      raw = JSON.parse((ctx.rawBody ?? Buffer.alloc(0)).toString('utf8'));
    } catch {
      throw new Problem('validation-failed', {
        detail: 'The request body is not valid JSON.',
        extensions: { errors: [{ pointer: '', message: 'is not valid JSON' }] },
      });
    }
    const body = parseOrThrow(selfServiceCreateBody, raw, 'The request body is invalid.');
    const scopes = body.scopes ?? [];
    // Without `selfService.scopes`, a user may give a key only scopes their own token carries: a
    // key never grants more than the user who made it has.
    const allowed = allowedScopes ?? new Set(tokenScopes);
    const refused = scopes.map((s, i) => [s, i] as const).filter(([s]) => !allowed.has(s));
    if (refused.length > 0)
      throw new Problem('validation-failed', {
        detail: 'Some scopes cannot be given to a self-service key.',
        extensions: {
          errors: refused.map(([s, i]) => ({
            pointer: `/scopes/${i}`,
            message: `"${s}" is not a scope self-service keys may have`,
          })),
        },
      });
    // Count and create under the owner's lock: concurrent creates cannot pass the cap together.
    const store = o.management.keys.store;
    const plan = await planFor(tenant);
    const created = await store.withOwnerLock(owner.subject, async () => {
      const active = await store.countActive(owner.subject, o.clock.now(), owner.issuers);
      if (active >= o.config.maxKeysPerUser)
        throw new Problem('conflict', {
          detail: `You already have ${active} active keys, the most allowed (${o.config.maxKeysPerUser}). Revoke one first.`,
        });
      return o.management.create({
        name: body.name,
        scopes,
        expiresAt: body.expiresAt,
        meta: body.meta,
        ownerId: owner.subject,
        ownerIssuer: owner.issuer,
        tenantId: tenant ?? null,
        plan,
        environment: body.environment,
        selfService: true,
      });
    });
    send(ctx, 201, created);
  };

  const list = async (ctx: RequestContext, owner: Owner) => {
    const params = Object.fromEntries(new URLSearchParams(ctx.search));
    const query = parseOrThrow(
      listKeysQuery.pick({ limit: true, cursor: true }),
      params,
      'The query is invalid.',
      ['query'],
    );
    const page = await o.management.keys.list({
      ...query,
      ownerId: owner.subject,
      ownerIssuers: owner.issuers,
    });
    send(ctx, 200, {
      items: await Promise.all(page.items.map((r) => o.management.view(r))),
      nextCursor: page.nextCursor,
    });
  };

  const revoke = async (ctx: RequestContext, owner: Owner, id: string) => {
    const record = await o.management.keys.get(id);
    if (record === undefined || !ownedAs(record, { ownerId: owner.subject, ownerIssuers: owner.issuers }))
      throw new Problem('not-found', { detail: `No key ${id}.` });
    await o.management.revoke(id);
    send(ctx, 204, undefined);
  };

  return {
    name: 'self-service',
    run(ctx: RequestContext) {
      const identity = ctx.identity;
      if (identity === undefined || identity.method !== 'jwt' || identity.issuer === undefined)
        throw new Problem('forbidden', { detail: 'Self-service keys need a signed-in user (a JWT).' });
      // Authentication refused tokens without a subject, so issuer + subject names one user.
      const owner = ownerOf(identity.subject, identity.issuer);
      // Matched ignoring case and `;params`, as every route is.
      const rest = (afterSegmentPrefix(ctx.path, base) ?? '').replace(/\/$/, '');
      const method = ctx.req.method;
      if (rest === '') {
        if (method === 'POST') return create(ctx, owner, identity);
        if (method === 'GET' || method === 'HEAD') return list(ctx, owner);
        throw new Problem('method-not-allowed', {
          detail: `${method} is not allowed here.`,
          headers: { allow: 'GET, HEAD, POST' },
        });
      }
      const id = rest.slice(1);
      if (id.includes('/')) throw new Problem('not-found', { detail: 'No such self-service endpoint.' });
      if (method === 'DELETE') return revoke(ctx, owner, decodeId(id));
      throw new Problem('method-not-allowed', {
        detail: `${method} is not allowed here.`,
        headers: { allow: 'DELETE' },
      });
    },
  };
}

/** A key id from the path; a malformed escape is no key of anyone's (404, not 500). */
function decodeId(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new Problem('not-found', { detail: `No key ${segment}.` });
  }
}
