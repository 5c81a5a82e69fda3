import type { RequestHandler } from 'express';
import { systemClock, type Clock } from '../../core/clock.js';
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
  /** Answer the request itself as JSON (method, path, query, headers with credentials redacted, body). */
  echo?: boolean;
  /** Wait this long before answering. */
  delayMs?: number;
  /** Wait up to this many milliseconds more, uniformly at random. */
  jitterMs?: number;
  /** The largest body an echo reads. Default 1 MiB. */
  bodyBytes?: number;
  /** The API key header, redacted in an echo (default `x-api-key`; `Authorization` and `Cookie` always are). */
  apiKeyHeader?: string;
  /** Values holding a key with this prefix are redacted in an echo. */
  apiKeyPrefix?: string;
  clock?: Clock;
  random?: () => number;
}

/**
 * Express middleware answering a fixed response (a stand-in for a service), computed once — or,
 * with `echo: true`, the request itself as JSON.
 *
 * @example
 * app.get('/health', mock({ body: { ok: true } }));
 * app.all('/echo', mock({ echo: true, delayMs: 20, jitterMs: 10 }));
 */
export function mock(options: MockOptions = {}): RequestHandler {
  const { clock = systemClock, random, bodyBytes, apiKeyHeader, apiKeyPrefix, ...config } = options;
  return toMiddleware(
    'mock',
    [
      createMockStage(mockSchema.parse(config), securityHeaders(), {
        clock,
        random,
        bodyLimit: bodyBytes,
        apiKeyHeader,
        apiKeyPrefix,
      }),
    ],
    { clock },
  );
}
