import { packageVersion } from '../shared/version.js';
import { ConfigError } from '../gateway/create-gateway.js';
import { UsageError, defaultIo, type CliIo } from './args.js';

const USAGE = `Usage:
  tollgate [start] [--config FILE]     run the gateway (default config: $TOLLGATE_CONFIG or config/gateway.yaml)
  tollgate validate --config FILE      check a config; print every problem with its path; exit 1 if invalid
  tollgate schema                      print the JSON Schema of the config file
  tollgate keys create --config FILE --name N [--scopes a,b] [--plan P] [--owner ID] [--tenant ID] [--hmac]
                       [--env live|test] [--rate-limit name:by:limit:windowSec[:cost]]… [--json]
  tollgate tenants set-plan <tenant> <plan>|--none [--config FILE] [--json]
  tollgate tenants show <tenant> [--config FILE] [--json]
  tollgate --version | --help`;

/** Runs the CLI; resolves with the process exit code. */
export async function runCli(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const [first, second] = argv;
  try {
    if (first === '--help' || first === '-h' || first === 'help') {
      io.out(USAGE);
      return 0;
    }
    if (first === '--version' || first === '-v') {
      io.out(packageVersion());
      return 0;
    }
    if (first === 'validate') {
      const { validate } = await import('./validate.js');
      return await validate(argv.slice(1), io);
    }
    if (first === 'schema') {
      const { schema } = await import('./schema.js');
      return schema(argv.slice(1), io);
    }
    if (first === 'keys') {
      if (second !== 'create') {
        io.err(USAGE);
        return 2;
      }
      const { keysCreate } = await import('./keys.js');
      return await keysCreate(argv.slice(2), io);
    }
    if (first === 'tenants') {
      const { tenants } = await import('./tenants.js');
      return await tenants(argv.slice(1), io);
    }
    if (first === 'start' || first === undefined || first.startsWith('-')) {
      const { start } = await import('./start.js');
      return await start(first === 'start' ? argv.slice(1) : argv, io);
    }
    io.err(`unknown command "${first}"\n${USAGE}`);
    return 2;
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err('tollgate: the config is invalid:');
      for (const issue of err.issues) io.err(`  ${issue.path}: ${issue.message}`);
      return 1;
    }
    if (err instanceof UsageError) {
      io.err(`tollgate: ${err.message}\n${USAGE}`);
      return 2;
    }
    io.err(`tollgate: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

export { UsageError, configPathFrom, type CliIo } from './args.js';
