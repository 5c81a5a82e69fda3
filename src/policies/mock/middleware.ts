import type { RequestHandler } from 'express';
import { toMiddleware } from '../../core/middleware.js';
import { securityHeaders } from '../../shared/security-headers.js';
import { createMockStage } from './mock.js';
import { mockSchema } from './schema.js';

export interface MockOptions {
  /** Default 200. */
  status?: number;
  headers?: Record<string, string>;
  /** A string is sent as text/plain, anything else as JSON. */
  body?: unknown;
}

/**
 * Express middleware answering a fixed response (a stand-in for a service), computed once.
 *
 * @example
 * app.get('/health', mock({ body: { ok: true } }));
 */
export function mock(options: MockOptions = {}): RequestHandler {
  return toMiddleware('mock', [createMockStage(mockSchema.parse(options), securityHeaders())]);
}
