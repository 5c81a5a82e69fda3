/** Exit codes of every command (README "The CLI"). */
export const EXIT = {
  /** Done; for `validate`, the config is valid. */
  ok: 0,
  /** The config is invalid, or the operation failed (Redis unreachable, a plan not in the config). */
  failed: 1,
  /** The command line is wrong: an unknown command or option, a missing argument. */
  usage: 2,
  /** `keys show|update|rotate|revoke`: no key with that id. */
  notFound: 3,
} as const;

const CONFIG = '  -c, --config FILE   the config file (default: $TOLLGATE_CONFIG, then config/gateway.yaml)';
const JSON_OPT = '      --json          print JSON instead of text';

export const USAGE = `Usage: tollgate <command> [options]

Commands:
  start [--config FILE]            run the gateway (the default command)
  validate [--config FILE]         check a config: every problem with file:line:column and its path
  routes [--config FILE] [--json]  the compiled route table: path, methods, auth, limits, upstream
  schema                           print the JSON Schema of the config file
  keys create|list|show|update|rotate|revoke
                                   manage API keys in the config's Redis store
  tenants set-plan|show            a tenant's plan in the config's Redis store
  --version                        print the version
  --help                           this text; \`tollgate <command> --help\` for one command

Exit codes: 0 ok, 1 invalid config or failed operation, 2 usage error, 3 no such key or tenant.`;

export const HELP: Record<string, string> = {
  start: `Usage: tollgate [start] [--config FILE]

Runs the gateway until SIGTERM/SIGINT (drains in-flight requests); SIGHUP or saving the file
reloads the config (an invalid one is logged and the running config stays).

${CONFIG}`,
  validate: `Usage: tollgate validate [--config FILE]

Checks a config file as the gateway would load it (schema, environment, the policies' own checks)
without listening or connecting. Prints each problem as \`FILE:LINE:COLUMN: path: message\`, with
"did you mean" for a misspelt field; warnings go to stderr too.

${CONFIG}

Exit codes: 0 valid, 1 invalid, 2 usage error.`,
  routes: `Usage: tollgate routes [--config FILE] [--json]

Prints the route table the gateway compiles from the file, defaults filled in: each route's path,
methods, authentication, limits (rate limits, quota cost, idempotency) and upstream.

${CONFIG}
${JSON_OPT}

Exit codes: 0 ok, 1 invalid config, 2 usage error.`,
  schema: `Usage: tollgate schema > tollgate.schema.json

Prints the JSON Schema (draft 2020-12) of the config file, derived from the zod schema that
validates it; point an editor or a \`$schema\` key at it.`,
  keys: `Usage: tollgate keys <create|list|show|update|rotate|revoke> [options]

Manages API keys in the config's Redis store (the admin API's operations; with an in-memory
store, use the admin API of the running gateway). \`tollgate keys <command> --help\` for one.

Exit codes: 0 ok, 1 invalid config or failed operation, 2 usage error, 3 no such key.`,
  'keys create': `Usage: tollgate keys create --name N [--scopes a,b] [--plan P] [--owner ID] [--tenant ID] [--hmac]
         [--env live|test] [--rate-limit name:by:limit:windowSec[:cost]]… [--config FILE] [--json]

Creates a key and prints it (and its signing secret, with --hmac) once. --hmac needs
TOLLGATE_SECRET_KEY. --env test makes a \`<prefix>_test_…\` key; --rate-limit (repeatable) gives
the key limits of its own: one named like a limit of its plan replaces it.

${CONFIG}
${JSON_OPT}`,
  'keys list': `Usage: tollgate keys list [--owner ID] [--tenant ID] [--limit N] [--cursor C] [--config FILE] [--json]

Lists keys, newest first, masked (never the key itself); N from 1 to 200 (default 50). A page
that has more ends with the cursor of the next.

${CONFIG}
${JSON_OPT}`,
  'keys show': `Usage: tollgate keys show ID [--config FILE] [--json]

Shows one key (masked) with its live remaining uses.

${CONFIG}
${JSON_OPT}`,
  'keys update': `Usage: tollgate keys update ID [--name N] [--scopes a,b] [--plan P|none] [--enable|--disable]
                            [--expires ISO-8601|never] [--remaining N|unlimited] [--meta JSON] [--config FILE] [--json]

Changes a key; a new --remaining restarts its count from that value.

${CONFIG}
${JSON_OPT}`,
  'keys rotate': `Usage: tollgate keys rotate ID [--grace SECONDS] [--config FILE] [--json]

Makes a new key with the same settings and prints it once; the old key keeps working for the
grace period (default 3600 s, at most 30 days), and the two share the remaining uses.

${CONFIG}
${JSON_OPT}`,
  'keys revoke': `Usage: tollgate keys revoke ID [--config FILE] [--json]

Deletes a key: it stops authenticating at once (within auth.apiKeys.cacheTtlMs on other gateways).

${CONFIG}
${JSON_OPT}`,
  tenants: `Usage:
  tollgate tenants set-plan <tenant> <plan> [--config FILE] [--json]
  tollgate tenants set-plan <tenant> --none [--config FILE] [--json]
  tollgate tenants show <tenant> [--config FILE] [--json]

set-plan sets the plan of every key of the tenant that has no plan of its own, at once on every
gateway instance (as PUT /tenants/{id} on the admin API); --none clears it. show prints it.
The config's store must be Redis (an in-memory store lives inside the gateway: use the admin API).

Exit codes: 0 done; 1 the config is invalid, has no redis, the plan is not in its plans, the
or Redis is unreachable; 2 usage error; 3 show: no such tenant.`,
};
HELP['tenants set-plan'] = HELP.tenants!;
HELP['tenants show'] = HELP.tenants!;

/** Whether the arguments ask for help (`--help` or `-h` anywhere). */
export function wantsHelp(args: readonly string[]): boolean {
  return args.includes('--help') || args.includes('-h');
}
