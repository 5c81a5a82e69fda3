import type { IncomingHttpHeaders } from 'node:http';

/** Who is calling, as a custom policy sees it (undefined before authentication or on a public route). */
export interface PolicyIdentity {
  /** Key owner or the JWT's principal (what goes upstream as `X-Consumer-Id`). */
  consumerId: string;
  tenantId: string | undefined;
  credentialId: string;
  authMethod: 'jwt' | 'api-key';
  scopes: readonly string[];
  /** A JWT's verified claims; `{}` for an API key. */
  claims: Readonly<Record<string, unknown>>;
}

/** The request as a custom policy's handler sees it (SPEC §12). */
export interface PolicyRequest {
  readonly method: string;
  /** The normalised path the route matched (no query). */
  readonly path: string;
  /** The raw query with its leading `?`, or ''. */
  readonly query: string;
  /** Lower-cased names. Read only: change what goes upstream with `setUpstreamHeader`. */
  readonly headers: Readonly<IncomingHttpHeaders>;
  readonly requestId: string;
  readonly routeId: string;
  readonly clientIp: string;
  readonly identity: PolicyIdentity | undefined;
  /** Sends this header upstream (replacing a client's copy). The gateway's own headers cannot be set. */
  setUpstreamHeader(name: string, value: string): void;
  /** Sets a response header (it wins over an upstream's header of the same name). */
  setResponseHeader(name: string, value: string): void;
}

/** What `create` returns: called per request; refuses by throwing `new Problem(slug, …)`. */
export type PolicyHandler = (req: PolicyRequest) => void | Promise<void>;

/** One issue of an options schema (zod's issues have this shape). */
export interface OptionsIssue {
  readonly path: ReadonlyArray<PropertyKey>;
  readonly message: string;
}

/** What a policy's `schema` must offer: zod's `safeParse` (any zod schema is one). */
export interface OptionsSchema<T> {
  safeParse(
    input: unknown,
  ): { success: true; data: T } | { success: false; error: { issues: ReadonlyArray<OptionsIssue> } };
}

/** When a policy runs: `early` after IP rules and before authentication; `late` (default) after rate limits, before idempotency. */
export type PolicyPhase = 'early' | 'late';

export interface PolicyDefinition<T> {
  /** The policy's own name (logs, errors); the config names each use of it. */
  name: string;
  /** Validates `options` at config load (so `validate` and reload report mistakes with their path). */
  schema?: OptionsSchema<T>;
  phase?: PolicyPhase;
  /** Runs once per config with the validated options; returns the per-request handler. */
  create(options: T): PolicyHandler;
}

const POLICY = Symbol.for('tollgate.policy');

/** A Tollgate policy: what `definePolicy` returns and a policy module default-exports. */
export interface Policy<T = unknown> extends PolicyDefinition<T> {
  readonly phase: PolicyPhase;
  readonly [POLICY]: true;
}

/**
 * Defines a custom policy (SPEC §12). Default-export it from a module and name the module in
 * the config's `policies:`; routes list it in their `policies: [...]`.
 *
 * @example
 * import { z } from 'zod';
 * import { definePolicy, Problem } from 'tollgate';
 * export default definePolicy({
 *   name: 'require-header',
 *   schema: z.object({ header: z.string() }),
 *   create: ({ header }) => (req) => {
 *     if (req.headers[header] === undefined) throw new Problem('forbidden', { detail: `${header} is required.` });
 *   },
 * });
 */
export function definePolicy<T>(definition: PolicyDefinition<T>): Policy<T> {
  if (typeof definition.create !== 'function')
    throw new TypeError('definePolicy: `create` must be a function');
  if (typeof definition.name !== 'string' || definition.name === '')
    throw new TypeError('definePolicy: `name` must be a non-empty string');
  const phase = definition.phase ?? 'late';
  if (phase !== 'early' && phase !== 'late') throw new TypeError('definePolicy: `phase` is early or late');
  return Object.freeze({ ...definition, phase, [POLICY]: true as const });
}

/** Whether a module's export is a Tollgate policy (as opposed to an Express middleware factory). */
export function isPolicy(value: unknown): value is Policy {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[POLICY] === true;
}
