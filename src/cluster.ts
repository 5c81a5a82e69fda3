import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import { AggregatorRegistry } from 'prom-client';
import { loadConfigFile } from './config/load.js';
import { watchConfigFile } from './config/reload.js';
import { ConfigError } from './gateway/create-gateway.js';
import { GatewayProcess, loadForStart, type StartOptions } from './main.js';

const RELOAD_MESSAGE = 'tollgate:reload';

/** `workers: auto` is one process per core. */
export function workerCount(setting: number | 'auto'): number {
  return setting === 'auto' ? availableParallelism() : setting;
}

/**
 * `workers: N` — N processes share the public listener through node:cluster. The primary holds
 * the admin listener (one place for key management, audit and readiness), aggregates `/metrics`
 * across workers, reloads them all on SIGHUP or a change of the file, restarts a worker that
 * dies, and on SIGTERM/SIGINT drains them all before exiting 0.
 *
 * More than one worker needs Redis (the config schema refuses it otherwise): in-memory keys,
 * limits, quotas and idempotency records could not be shared between the processes.
 */
export async function runPrimary(options: StartOptions, workers: number): Promise<number> {
  const { config, logger } = await loadForStart(options);
  const aggregator = new AggregatorRegistry();
  // The primary's gateway backs the admin API only: it opens no public listener. The audit trail
  // is in Redis (more than one worker needs it), where every worker writes.
  const admin = await GatewayProcess.start({
    ...options,
    watch: false,
    serve: { public: false, admin: true },
    gateway: { metricsText: () => aggregator.clusterMetrics() },
  });

  let stopping = false;
  const fork = (): Worker => {
    const worker = cluster.fork({ ...options.env, TOLLGATE_WORKER: '1' });
    // A worker's IPC channel closes when it drains or dies: an error there must not end the primary.
    worker.on('error', (err) => logger.warn({ err, worker: worker.process.pid }, 'worker channel error'));
    return worker;
  };
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    logger.error({ worker: worker.process.pid, code, signal }, 'worker died; starting another');
    setTimeout(() => {
      if (!stopping) fork();
    }, 1000).unref();
  });
  for (let i = 0; i < workers; i++) fork();
  logger.info({ workers }, 'cluster started');

  // Every worker reloads too, also when the primary refused the file: each records the outcome in
  // its own metrics (aggregated into /metrics), and each keeps its config when the file is bad.
  const reloadAll = async (): Promise<boolean> => {
    if (stopping) return false;
    const ok = await admin.reload();
    if (stopping) return ok;
    for (const w of Object.values(cluster.workers ?? {}))
      if (w?.isConnected()) w.send({ type: RELOAD_MESSAGE }); // a failure is logged by the 'error' listener
    return ok;
  };
  // `POST /reload` on the admin API (served here) reloads the workers too.
  admin.gateway.reloadFromSource = reloadAll;
  const stopWatching = watchConfigFile(options.configPath, () => void reloadAll());
  process.on('SIGHUP', () => void reloadAll());

  return new Promise<number>((resolve) => {
    const stop = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      stopWatching();
      // Not ready from the first moment of the drain (the workers are draining already).
      admin.gateway.startDrain();
      logger.info({ signal }, 'stopping workers');
      const alive = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
      const exits = alive.map(
        (w) => new Promise<void>((r) => (w.isDead() ? r() : w.once('exit', () => r()))),
      );
      for (const w of alive) w.process.kill('SIGTERM');
      const grace = setTimeout(
        () => alive.forEach((w) => w.isDead() || w.process.kill('SIGKILL')),
        config.server.drainTimeoutMs + 5000,
      );
      await Promise.all(exits);
      clearTimeout(grace);
      await admin.shutdown();
      resolve(0);
    };
    process.once('SIGTERM', () => void stop('SIGTERM'));
    process.once('SIGINT', () => void stop('SIGINT'));
  });
}

/** A cluster worker: the public listener only; reloads when the primary says so. */
export async function runWorker(options: StartOptions): Promise<number> {
  const loaded = await loadConfigFile(options.configPath, options.env);
  if (!loaded.ok) {
    // The IPC channel would keep a failed worker alive (and silent to metrics requests): let go
    // of it so the worker exits and the primary starts another (when the file is fixed, it starts).
    process.disconnect?.();
    throw new ConfigError(loaded.issues);
  }
  const proc = await GatewayProcess.start({
    ...options,
    watch: false,
    serve: { public: true, admin: false },
  });
  // Constructing one installs prom-client's answer to the primary's metrics requests.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([proc.gateway.services.metrics.registry]);
  process.on('message', (message: unknown) => {
    if ((message as { type?: string }).type === RELOAD_MESSAGE) void proc.reload();
  });
  return new Promise<number>((resolve) => {
    process.once(
      'SIGTERM',
      () =>
        void proc.shutdown().then(() => {
          // The IPC channel would keep the worker alive: let go of it once drained.
          process.disconnect?.();
          resolve(0);
        }),
    );
    // Ctrl-C reaches the whole process group: the primary coordinates the drain.
    process.on('SIGINT', () => undefined);
  });
}

export { cluster };
