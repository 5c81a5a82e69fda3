import { packageVersion } from '../shared/version.js';
import { ConfigError } from '../gateway/create-gateway.js';
import { UsageError, defaultIo, type CliIo } from './args.js';
import { EXIT, HELP, USAGE, wantsHelp } from './help.js';

/** Runs the CLI; resolves with the process exit code. */
export async function runCli(argv: string[], io: CliIo = defaultIo): Promise<number> {
  const [first, second] = argv;
  try {
    if (first === '--help' || first === '-h' || (first === 'help' && second === undefined)) {
      io.out(USAGE);
      return EXIT.ok;
    }
    // `tollgate help keys rotate`, `tollgate keys rotate --help`, `tollgate validate -h`
    const words = (list: string[]) => {
      const firstOption = list.findIndex((a) => a.startsWith('-'));
      return firstOption === -1 ? list : list.slice(0, firstOption);
    };
    const asked = first === 'help' ? words(argv.slice(1)) : wantsHelp(argv) ? words(argv) : undefined;
    if (asked !== undefined) {
      const topic = asked.length === 0 ? USAGE : (HELP[asked.slice(0, 2).join(' ')] ?? HELP[asked[0]!]);
      if (topic === undefined) {
        io.err(`unknown command "${asked.join(' ')}"\n${USAGE}`);
        return EXIT.usage;
      }
      io.out(topic);
      return EXIT.ok;
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
    if (first === 'routes') {
      const { routes } = await import('./routes.js');
      return await routes(argv.slice(1), io);
    }
    if (first === 'keys') {
      const rest = argv.slice(2);
      if (second === 'create') return await (await import('./keys.js')).keysCreate(rest, io);
      const m = await import('./keys-manage.js');
      if (second === 'list') return await m.keysList(rest, io);
      if (second === 'show') return await m.keysShow(rest, io);
      if (second === 'update') return await m.keysUpdate(rest, io);
      if (second === 'rotate') return await m.keysRotate(rest, io);
      if (second === 'revoke') return await m.keysRevoke(rest, io);
      io.err(second === undefined ? HELP.keys! : `unknown command "keys ${second}"\n${HELP.keys!}`);
      return EXIT.usage;
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
      for (const issue of err.issues)
        io.err(
          `  ${issue.line !== undefined ? `${issue.line}:${issue.column ?? 1}: ` : ''}${issue.path}: ${issue.message}`,
        );
      return EXIT.failed;
    }
    if (err instanceof UsageError) {
      const command = first === 'keys' && second ? `keys ${second}` : (first ?? '');
      io.err(`tollgate: ${err.message}\n${HELP[command] ?? USAGE}`);
      return EXIT.usage;
    }
    io.err(`tollgate: ${err instanceof Error ? err.message : String(err)}`);
    return EXIT.failed;
  }
}

export { UsageError, configPathFrom, type CliIo } from './args.js';
