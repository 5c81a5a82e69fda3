import type { RequestHandler } from 'express';
import { toMiddleware } from '../../core/middleware.js';
import { createCorsStage } from './cors.js';
import { corsSchema } from './schema.js';

export interface CorsOptions {
  /** Allowed browser origins (`https://app.example.com`), or `"*"`. */
  origins: string[] | '*';
  /** `Access-Control-Allow-Methods` of a preflight. Default GET, HEAD, PUT, PATCH, POST, DELETE. */
  methods?: string[];
  /** `Access-Control-Allow-Headers` of a preflight. Default: what the preflight asks for. */
  headers?: string[];
  /** Readable response headers besides X-Request-Id, RateLimit, RateLimit-Policy, Retry-After. */
  exposeHeaders?: string[];
  /** `Access-Control-Allow-Credentials: true` (not with `"*"`). */
  credentials?: boolean;
  /** `Access-Control-Max-Age` of a preflight (default 600). */
  maxAgeSec?: number;
}

/**
 * Express middleware for CORS: answers preflights (204; an unlisted origin's is 403 forbidden, for
 * `problemDetails()`), and sets `Access-Control-Allow-Origin` before anything else answers — so
 * the errors of later middleware, written by `problemDetails()`, carry it too. Mount it first.
 *
 * @example
 * app.use(cors({ origins: ['https://app.example.com'], credentials: true }));
 */
export function cors(options: CorsOptions): RequestHandler {
  return toMiddleware('cors', [createCorsStage(corsSchema.parse(options))]);
}
