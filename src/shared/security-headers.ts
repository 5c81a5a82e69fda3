import type { IncomingMessage, ServerResponse } from 'node:http';
import helmet, { type HelmetOptions } from 'helmet';

/** helmet settings for responses the gateway writes itself (problems, mocks, admin JSON). */
export const apiHelmetOptions: Readonly<HelmetOptions> = {
  contentSecurityPolicy: {
    useDefaults: false,
    directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] },
  },
};

/**
 * Runs helmet once against a recording response and returns the headers it sets.
 *
 * helmet's headers do not depend on the request, so computing them at config load and copying
 * them per response gives the same result as `app.use(helmet())` without its per-request work
 * (~10 µs per request in ../shared/bench/RESULTS.md).
 */
export function securityHeaders(
  options: Readonly<HelmetOptions> = apiHelmetOptions,
): ReadonlyArray<readonly [string, string]> {
  const recorded = new Map<string, string>();
  const recorder = {
    setHeader(name: string, value: string | number | readonly string[]) {
      recorded.set(name.toLowerCase(), Array.isArray(value) ? value.join(', ') : String(value));
    },
    removeHeader(name: string) {
      recorded.delete(name.toLowerCase());
    },
  };
  let synchronous = false;
  helmet(options)({} as IncomingMessage, recorder as unknown as ServerResponse, (err?: unknown) => {
    if (err) throw err instanceof Error ? err : new Error('helmet failed');
    synchronous = true;
  });
  if (!synchronous) throw new Error('helmet did not finish synchronously; its headers cannot be precomputed');
  return Object.freeze([...recorded.entries()].map(([k, v]) => Object.freeze([k, v] as const)));
}
