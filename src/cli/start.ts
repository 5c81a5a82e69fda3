import { loadConfigFile } from '../config/load.js';
import { ConfigError } from '../gateway/create-gateway.js';
import { GatewayProcess } from '../main.js';
import { cluster, runPrimary, runWorker, workerCount } from '../cluster.js';
import { configPathFrom, parse, type CliIo } from './args.js';

/** `tollgate [start] --config FILE`: runs the gateway (a cluster with `workers > 1`) until SIGTERM/SIGINT. */
export async function start(args: string[], io: CliIo): Promise<number> {
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
