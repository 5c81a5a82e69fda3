import { parseArgs } from 'node:util';
import { UsageError, type CliIo } from './args.js';
import { withManagement } from './management.js';
import { rateLimitListSchema } from '../policies/rate-limit/schema.js';

/**
 * `tollgate keys create --config FILE --name N [--scopes a,b] [--plan P] [--owner ID] [--tenant ID] [--hmac]
 * [--env live|test] [--rate-limit name:by:limit:windowSec[:cost]]…`:
 * creates a key in the configured store and prints the plaintext key (and signing secret) once.
 * The store must be Redis: an in-memory store lives inside the gateway process (use the admin API).
 */
export async function keysCreate(args: string[], io: CliIo): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        config: { type: 'string', short: 'c' },
        name: { type: 'string' },
        scopes: { type: 'string' },
        plan: { type: 'string' },
        owner: { type: 'string' },
        tenant: { type: 'string' },
        hmac: { type: 'boolean', default: false },
        env: { type: 'string', default: 'live' },
        'rate-limit': { type: 'string', multiple: true, default: [] },
        json: { type: 'boolean', default: false },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (!values.name) throw new UsageError('--name is required');
  if (values.env !== 'live' && values.env !== 'test') throw new UsageError('--env must be live or test');
  const environment: 'live' | 'test' = values.env;
  // `name:by:limit:windowSec[:cost]`, validated by the admin API's schema (a plan limit's name replaces it).
  const limits = rateLimitListSchema.safeParse(
    values['rate-limit'].map((text) => {
      const [name, by, limit, windowSec, cost, ...extra] = text.split(':');
      if (extra.length > 0 || windowSec === undefined)
        throw new UsageError(`--rate-limit "${text}" must be name:by:limit:windowSec[:cost]`);
      const n = (v: string) => (/^\d+$/.test(v) ? Number(v) : v);
      return {
        name,
        by,
        limit: n(limit!),
        windowSec: n(windowSec),
        ...(cost === undefined ? {} : { cost: n(cost) }),
      };
    }),
  );
  if (!limits.success) {
    for (const issue of limits.error.issues)
      io.err(
        `tollgate keys create: --rate-limit ${issue.path.map((p) => (typeof p === 'number' ? p + 1 : p)).join(' ')}: ${issue.message}`,
      );
    return 1;
  }
  const secret = io.env.TOLLGATE_SECRET_KEY;
  if (values.hmac && !secret) {
    io.err(
      'tollgate keys create: --hmac needs TOLLGATE_SECRET_KEY (the key the gateway opens signing secrets with)',
    );
    return 1;
  }
  const { name, plan } = values;
  return withManagement(
    'keys create',
    'create keys there with POST /keys on the admin listener',
    values,
    io,
    async (keys, config) => {
      if (plan !== undefined && !Object.hasOwn(config.plans, plan)) {
        io.err(`tollgate keys create: plan "${plan}" is not in the config's plans`);
        return 1;
      }
      const created = await keys.create({
        name,
        scopes: values.scopes
          ? values.scopes
              .split(',')
              .map((s) => s.trim())
              .filter(Boolean)
          : [],
        plan: values.plan ?? null,
        ownerId: values.owner ?? null,
        tenantId: values.tenant ?? null,
        hmac: values.hmac,
        environment,
        rateLimits: limits.data.length === 0 ? null : limits.data,
      });
      if (values.json)
        io.out(
          JSON.stringify({
            id: created.id,
            key: created.key,
            signingSecret: created.signingSecret ?? null,
          }),
        );
      else {
        io.out(`id:             ${created.id}`);
        io.out(`key:            ${created.key}`);
        if (created.signingSecret) io.out(`signing secret: ${created.signingSecret}`);
        io.out('Store the key now: it is not kept and will not be shown again.');
      }
      return 0;
    },
  );
}
