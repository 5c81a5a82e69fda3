import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { Problem } from '../problems/problem.js';
import { adminTokenName } from '../config/schema.js';
import { refuseAdmin, setAdminActor } from './admin-audit.js';

const REALM = 'Bearer realm="tollgate-admin"';

/** An admin token as kept after load: its SHA-256 digest and whose it is. */
export interface AdminTokenDigest {
  digest: Buffer;
  /** The actor of audit records: the token's `name`, or `token-<position>` (SPEC §11). */
  name: string;
}

/** SHA-256 digests of the admin tokens: compared at a fixed length, so length leaks nothing. */
export function digestTokens(
  tokens: ReadonlyArray<string | { name: string; token: string }>,
): AdminTokenDigest[] {
  return tokens.map((t, i) => ({
    digest: createHash('sha256')
      .update(typeof t === 'string' ? t : t.token)
      .digest(),
    name: adminTokenName(t, i),
  }));
}

/** Constant-time lookup: every token is compared, whatever matched first. The holder's name, or undefined. */
export function matchesToken(presented: string, digests: readonly AdminTokenDigest[]): string | undefined {
  const candidate = createHash('sha256').update(presented).digest();
  let match: string | undefined;
  for (const d of digests) if (timingSafeEqual(candidate, d.digest) && match === undefined) match = d.name;
  return match;
}

export interface AdminAuthOptions {
  /** Current token digests (re-read per request: a reload can change them). */
  digests: () => readonly AdminTokenDigest[];
  /** The API key header name and key prefix, to tell an API key from a wrong token. */
  apiKeyHeader: () => string;
  apiKeyPrefix: () => string;
}

/**
 * Guards the admin API: no token 401 missing-credentials, a wrong one 401 invalid-credentials,
 * an API key 403 forbidden (API keys cannot manage keys).
 */
export function adminAuth(options: AdminAuthOptions): RequestHandler {
  let shapeFor = '';
  let apiKeyShape = /^$/;
  return function adminAuthMiddleware(req, res, next) {
    const header = req.headers.authorization;
    const prefix = options.apiKeyPrefix();
    if (prefix !== shapeFor) {
      // Recompiled only when a reload changed the prefix.
      apiKeyShape = new RegExp(`^${prefix}_(live|test)_`);
      shapeFor = prefix;
    }
    if (req.headers[options.apiKeyHeader()] !== undefined) {
      refuseAdmin(res, 'forbidden');
      next(new Problem('forbidden', { detail: 'API keys cannot manage keys.' }));
      return;
    }
    if (header === undefined) {
      refuseAdmin(res, 'missing-credentials');
      next(
        new Problem('missing-credentials', {
          detail: 'An admin token is required.',
          headers: { 'www-authenticate': REALM },
        }),
      );
      return;
    }
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    const token = match?.[1];
    if (token !== undefined && apiKeyShape.test(token)) {
      refuseAdmin(res, 'forbidden');
      next(new Problem('forbidden', { detail: 'API keys cannot manage keys.' }));
      return;
    }
    const actor = token === undefined ? undefined : matchesToken(token, options.digests());
    if (actor === undefined) {
      refuseAdmin(res, 'invalid-credentials');
      next(
        new Problem('invalid-credentials', {
          detail: 'The admin token is not valid.',
          headers: { 'www-authenticate': `${REALM}, error="invalid_token"` },
        }),
      );
      return;
    }
    setAdminActor(res, actor);
    next();
  };
}
