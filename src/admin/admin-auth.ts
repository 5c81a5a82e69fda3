import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { Problem } from '../problems/problem.js';

const REALM = 'Bearer realm="tollgate-admin"';

/** SHA-256 digests of the admin tokens: compared at a fixed length, so length leaks nothing. */
export function digestTokens(tokens: readonly string[]): readonly Buffer[] {
  return tokens.map((t) => createHash('sha256').update(t).digest());
}

/** Constant-time membership test: every token is compared, whatever matched first. */
export function matchesToken(presented: string, digests: readonly Buffer[]): boolean {
  const candidate = createHash('sha256').update(presented).digest();
  let match = false;
  for (const d of digests) match = timingSafeEqual(candidate, d) || match;
  return match;
}

export interface AdminAuthOptions {
  /** Current token digests (re-read per request: a reload can change them). */
  digests: () => readonly Buffer[];
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
  return function adminAuthMiddleware(req, _res, next) {
    const header = req.headers.authorization;
    const prefix = options.apiKeyPrefix();
    if (prefix !== shapeFor) {
      // Recompiled only when a reload changed the prefix.
      apiKeyShape = new RegExp(`^${prefix}_(live|test)_`);
      shapeFor = prefix;
    }
    if (req.headers[options.apiKeyHeader()] !== undefined) {
      next(new Problem('forbidden', { detail: 'API keys cannot manage keys.' }));
      return;
    }
    if (header === undefined) {
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
      next(new Problem('forbidden', { detail: 'API keys cannot manage keys.' }));
      return;
    }
    if (token === undefined || !matchesToken(token, options.digests())) {
      next(
        new Problem('invalid-credentials', {
          detail: 'The admin token is not valid.',
          headers: { 'www-authenticate': `${REALM}, error="invalid_token"` },
        }),
      );
      return;
    }
    next();
  };
}
