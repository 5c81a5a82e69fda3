import { parseArgs, type ParseArgsConfig } from 'node:util';
import { packageVersion } from '../shared/version.js';
import { loadConfigFile } from '../config/load.js';
import type { Env } from '../config/interpolate.js';
import type { ConfigIssue } from '../config/issues.js';
import { ConfigError, createGateway } from '../gateway/create-gateway.js';
import { GatewayProcess } from '../main.js';
import { cluster, runPrimary, runWorker, workerCount } from '../cluster.js';

const USAGE = `Usage:
  tollgate [start] [--config FILE]     run the gateway (default config: $TOLLGATE_CONFIG or config/gateway.yaml)
  tollgate validate --config FILE      check a config; print every problem with its path; exit 1 if invalid
  tollgate keys create --config FILE --name N [--scopes a,b] [--plan P] [--owner ID] [--tenant ID] [--hmac]
  tollgate --version | --help`;

export interface CliIo {
  out: (line: string) => void;
  err: (line: string) => void;
  env: Env;
}

const defaultIo: CliIo = {
  out: (line) => process.stdout.write(line + '\n'),
  err: (line) => process.stderr.write(line + '\n'),
  env: process.env,
};

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
    if (first === 'validate') return await validate(argv.slice(1), io);
    if (first === 'keys') {
      if (second !== 'create') {
        io.err(USAGE);
        return 2;
      }
      const { keysCreate } = await import('./keys.js');
      return await keysCreate(argv.slice(2), io);
    }
    if (first === 'start') return await start(argv.slice(1), io);
    if (first === undefined || first.startsWith('-')) return await start(argv, io);
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

export class UsageError extends Error {}

export function configPathFrom(values: { config?: string | undefined }, env: Env): string {
  return values.config ?? env.TOLLGATE_CONFIG ?? 'config/gateway.yaml';
}

function parse(args: string[], options: ParseArgsConfig['options']) {
  try {
    return parseArgs({ args, options, allowPositionals: false, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

async function validate(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { config: { type: 'string', short: 'c' } });
  const path = configPathFrom(values, io.env);
  const result = await loadConfigFile(path, io.env);
  for (const w of result.warnings) io.err(`warning: ${w.path}: ${w.message}`);
  const refuse = (issues: readonly ConfigIssue[]) => {
    for (const issue of issues) io.err(`${issue.path}: ${issue.message}`);
    io.err(`${path}: ${issues.length} problem${issues.length === 1 ? '' : 's'}`);
    return 1;
  };
  if (!result.ok) return refuse(result.issues);
  // Build it too (nothing listens, nothing connects): factories check what the schema cannot.
  let gateway;
  try {
    gateway = createGateway(result.config, { env: io.env });
  } catch (err) {
    if (err instanceof ConfigError) return refuse(err.issues);
    throw err;
  }
  await gateway.close();
  io.out(
    `${path}: valid (${result.config.routes.length} route${result.config.routes.length === 1 ? '' : 's'})`,
  );
  return 0;
}

async function start(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { config: { type: 'string', short: 'c' } });
  const options = { configPath: configPathFrom(values, io.env), env: io.env };
  if (cluster.isWorker) return runWorker(options);
  const loaded = await loadConfigFile(options.configPath, io.env);
  if (!loaded.ok) throw new ConfigError(loaded.issues);
  const workers = workerCount(loaded.config.workers);
  if (workers > 1) return runPrimary(options, workers);
  const proc = await GatewayProcess.start(options);
  return new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      proc.logger.info({ signal }, 'signal received');
      void proc.shutdown().then(() => resolve(0));
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => void proc.reload());
  });
}
