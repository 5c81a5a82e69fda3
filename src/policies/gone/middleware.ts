import type { RequestHandler } from 'express';
import { toMiddleware } from '../../core/middleware.js';
import { createGoneStage } from './gone.js';
import { goneSchema } from './schema.js';

export interface GoneOptions {
  /** Where clients should go instead (`redirect_endpoint`). */
  redirectEndpoint: string;
  /** ISO 8601: when the endpoint was (or will be) retired (`Sunset`). */
  sunset: string;
  /** ISO 8601 (`Deprecation`); defaults to `sunset`. */
  deprecation?: string;
  detail?: string;
}

/**
 * Express middleware for a retired endpoint: 410 gone with `redirect_endpoint`, `Sunset` and
 * `Deprecation` (for `problemDetails()`).
 *
 * @example
 * app.use('/v0', gone({ redirectEndpoint: '/v1/orders', sunset: '2026-01-01T00:00:00Z' }));
 */
export function gone(options: GoneOptions): RequestHandler {
  return toMiddleware('gone', [createGoneStage(goneSchema.parse(options))]);
}
