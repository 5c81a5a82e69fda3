import type { RequestHandler } from 'express';
import { toMiddleware } from '../../core/middleware.js';
import { createHeadersStage } from './headers.js';
import { headersSchema, type HeadersOptions } from './schema.js';

/**
 * Express middleware with a route's header transforms: request transforms shape what a
 * following `proxy()` sends upstream, response transforms what it answers. Validated (and
 * compiled) once, by the same schema as the config file's `headers`.
 *
 * @example
 * app.use('/v1', headerTransforms({ request: { set: { 'X-Api-Version': '1' } }, response: { remove: ['x-debug'] } }), proxy({ … }));
 */
export function headerTransforms(options: HeadersOptions): RequestHandler {
  return toMiddleware('headers', [createHeadersStage(headersSchema.parse(options))]);
}
