import type { RequestHandler } from 'express';
import { toMiddleware } from '../../core/middleware.js';
import { createBodyLimitStage } from './body-limit.js';
import { bodyBytesSchema } from './schema.js';

export interface BodyLimitOptions {
  /** Largest request body accepted. Default: `limits.bodyBytes`' default (1 MiB). */
  bytes?: number;
}

/**
 * Express middleware refusing a body whose `Content-Length` is over the limit (413
 * payload-too-large, for `problemDetails()`), before a byte of it is read.
 *
 * @example
 * app.use('/uploads', bodyLimit({ bytes: 50 * 1024 * 1024 }));
 */
export function bodyLimit(options: BodyLimitOptions = {}): RequestHandler {
  return toMiddleware('bodyLimit', [createBodyLimitStage(bodyBytesSchema.parse(options.bytes))]);
}
