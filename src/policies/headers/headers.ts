import { setField, type RequestContext } from '../../core/context.js';
import type { Stage } from '../../core/stage.js';
import type { HeadersConfig } from './schema.js';

/** What one route's transforms do, computed once at config load. */
interface CompiledTransforms {
  /** Client request headers dropped (lower-case, `_` read as `-`): removed names and set names. */
  readonly requestDrop: ReadonlySet<string>;
  /** `[name, value, …]` added to the upstream request. */
  readonly requestSet: readonly string[];
  /** `[name, value, …]` answered. */
  readonly responseSet: readonly string[];
  /** Upstream response headers dropped (lower-case). */
  readonly responseRemove: readonly string[];
}

export function compileHeaderTransforms(config: HeadersConfig): CompiledTransforms {
  const requestDrop = new Set<string>();
  const requestSet: string[] = [];
  for (const [name, value] of Object.entries(config.request?.set ?? {})) {
    const lower = name.toLowerCase();
    requestSet.push(lower, value);
    requestDrop.add(lower.replaceAll('_', '-'));
  }
  for (const name of config.request?.remove ?? []) requestDrop.add(name.toLowerCase().replaceAll('_', '-'));
  const responseSet: string[] = [];
  for (const [name, value] of Object.entries(config.response?.set ?? {}))
    responseSet.push(name.toLowerCase(), value);
  const responseRemove = (config.response?.remove ?? []).map((n) => n.toLowerCase());
  return { requestDrop, requestSet, responseSet, responseRemove };
}

/**
 * The `headers` stage (SPEC §9 header transforms): the route's request transforms shape what the
 * upstream receives, its response transforms what the client gets from the upstream (or a mock).
 * It runs after authentication, limits and idempotency (pipeline.ts), just before the answer: a
 * transform cannot hide a credential from the gateway or change what a limit counts, and the
 * gateway's own refusals before it (401, 403, 429, 413) carry no transforms.
 *
 * A removed request header goes in every spelling: `X_Api_Version` is what a CGI, WSGI or Rack
 * upstream reads as `X-Api-Version`. A set one replaces the client's copies the same way.
 */
export function createHeadersStage(config: HeadersConfig): Stage {
  const { requestDrop, requestSet, responseSet, responseRemove } = compileHeaderTransforms(config);
  const dropsRequest = requestDrop.size > 0;
  // The response names the gateway owns on this route: set ones, and removed ones (no value).
  const owned: string[] = [];
  for (let i = 0; i < responseSet.length; i += 2) owned.push(responseSet[i]!);
  for (const name of responseRemove) if (!owned.includes(name)) owned.push(name);
  return {
    name: 'headers',
    run(ctx: RequestContext) {
      if (dropsRequest) {
        const headers = ctx.req.headers;
        for (const name in headers) {
          if (requestDrop.has(name) || (name.includes('_') && requestDrop.has(name.replaceAll('_', '-'))))
            delete headers[name];
        }
      }
      // What setUpstreamHeader / setResponseHeader do, with the names lower-cased once, at load.
      if (requestSet.length > 0) {
        const added = ctx.upstreamHeaders;
        if (added === undefined) ctx.upstreamHeaders = requestSet.slice();
        else for (const h of requestSet) added.push(h);
      }
      if (owned.length > 0) {
        if (!ctx.collectsHeaders) {
          const res = ctx.res;
          for (let i = 0; i < responseSet.length; i += 2) res.setHeader(responseSet[i]!, responseSet[i + 1]!);
        } else if (responseSet.length > 0) {
          const collected = ctx.responseHeaders;
          if (collected === undefined) ctx.responseHeaders = responseSet.slice();
          else
            for (let i = 0; i < responseSet.length; i += 2)
              setField(collected, responseSet[i]!, responseSet[i + 1]!);
        }
        // A name the gateway answers with drops the upstream's copies (see setResponseHeader).
        const names = ctx.responseHeaderNames;
        if (names === undefined) ctx.responseHeaderNames = owned.slice();
        else for (const name of owned) if (!names.includes(name)) names.push(name);
      }
    },
  };
}
