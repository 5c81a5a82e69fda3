import type { RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';
import type { MockConfig } from './schema.js';

/**
 * Answers locally. Everything but the request id is computed here, once: a mock route is what
 * load tests aim at, so its per-request work is one `writeHead` and one `end`.
 */
export function createMockStage(
  mock: MockConfig,
  securityHeaders: ReadonlyArray<readonly [string, string]>,
): Stage {
  const body =
    mock.body === undefined
      ? Buffer.alloc(0)
      : typeof mock.body === 'string'
        ? Buffer.from(mock.body)
        : Buffer.from(JSON.stringify(mock.body));
  const own = Object.entries(mock.headers);
  const hasType = own.some(([k]) => k.toLowerCase() === 'content-type');
  const headers: string[] = [];
  for (const [k, v] of securityHeaders) headers.push(k, v);
  if (!hasType && mock.body !== undefined)
    headers.push(
      'content-type',
      typeof mock.body === 'string' ? 'text/plain; charset=utf-8' : 'application/json; charset=utf-8',
    );
  for (const [k, v] of own) if (k.toLowerCase() !== 'content-length') headers.push(k, v);
  headers.push('content-length', String(body.length));
  const status = mock.status;
  const length = body.length;
  return {
    name: 'mock',
    run(ctx: RequestContext) {
      const list = headers.slice();
      list.push('x-request-id', ctx.requestId);
      if (ctx.meterFields !== undefined) ctx.readMeters(list); // a metered mock reports its own
      ctx.res.writeHead(status, list);
      ctx.res.end(body);
      ctx.bytesOut = length;
      ctx.handled = true;
    },
  };
}
