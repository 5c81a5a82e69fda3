import { parseArgs } from 'node:util';
import { tenantIdParam } from '../admin/schemas.js';
import { UsageError, type CliIo } from './args.js';
import { withManagement } from './management.js';
import { EXIT, HELP } from './help.js';

export const TENANTS_USAGE = HELP.tenants!;

/** `tollgate tenants set-plan|show`: tenant plans in the configured Redis store (SPEC §10). */
export async function tenants(args: string[], io: CliIo): Promise<number> {
  try {
    return await run(args, io);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.err(`tollgate tenants: ${err.message}\n${TENANTS_USAGE}`);
    return 2;
  }
}

async function run(args: string[], io: CliIo): Promise<number> {
  const [command, ...rest] = args;
  if (command === undefined || command === '--help' || command === '-h') {
    (command === undefined ? io.err : io.out)(TENANTS_USAGE);
    return command === undefined ? 2 : 0;
  }
  if (command !== 'set-plan' && command !== 'show')
    throw new UsageError(`unknown tenants command "${command}"`);
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        json: { type: 'boolean', default: false },
        none: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.out(TENANTS_USAGE);
    return 0;
  }
  const [tenant, plan, ...extra] = positionals;
  if (tenant === undefined) throw new UsageError('a tenant id is required');
  if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}"`);
  if (command === 'show' && (plan !== undefined || values.none))
    throw new UsageError('show takes only a tenant id');
  if (command === 'set-plan' && (plan === undefined) === !values.none)
    throw new UsageError('set-plan needs a plan, or --none');
  const id = tenantIdParam.safeParse(tenant);
  if (!id.success) {
    io.err('tollgate tenants: the tenant id must be 1 to 200 characters');
    return 1;
  }
  return withManagement(
    'tenants',
    'use PUT /tenants/{id} on the admin listener',
    values,
    io,
    async ({ keys }, config) => {
      if (plan !== undefined && !Object.hasOwn(config.plans, plan)) {
        io.err(`tollgate tenants: plan "${plan}" is not in the config's plans`);
        return 1;
      }
      let shown;
      if (command === 'set-plan') shown = await keys.setTenantPlan(id.data, plan ?? null);
      else {
        shown = await keys.getTenant(id.data);
        if (shown === undefined) {
          const page = await keys.list({ tenantId: id.data, limit: 1 });
          if (page.items.length === 0) {
            io.err(`tollgate tenants: no tenant ${id.data} (no key names it and no plan was set)`);
            return EXIT.notFound;
          }
          shown = { id: id.data, plan: null, updatedAt: null };
        }
      }
      if (values.json) io.out(JSON.stringify(shown));
      else {
        io.out(`tenant:  ${shown.id}`);
        io.out(`plan:    ${shown.plan ?? '(none)'}`);
        io.out(`updated: ${shown.updatedAt ?? '(never)'}`);
      }
      return 0;
    },
  );
}
