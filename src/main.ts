import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import type { DestinationStream } from 'pino';
import { loadConfigFile, unexpectedIssue, type LoadResult } from './config/load.js';
import type { Env } from './config/interpolate.js';
import { watchConfigFile } from './config/reload.js';
import type { Config } from './config/schema.js';
import { ConfigError, createGateway, type Gateway, type GatewayOptions } from './gateway/create-gateway.js';
import { createHttpServer } from './gateway/server.js';
import { createLogger, type Logger } from './observability/logger.js';
import type { PolicyModules } from './policies/custom/loader.js';

export interface StartOptions {
  configPath: string;
  env: Env;
  /** Where logs go (default stdout). */
  logDestination?: DestinationStream;
  /** Watch the config file and reload on change (default true). */
  watch?: boolean;
  /** Which listeners to open (default both; cluster workers serve public, the primary admin). */
  serve?: { public: boolean; admin: boolean };
  /** Extra options for `createGateway` (cluster workers forward audit records to the primary). */
  gateway?: Pick<GatewayOptions, 'audit' | 'metricsText'>;
}

/**
 * A running gateway process: the public and admin listeners around one `Gateway`, config
 * reloads (SIGHUP or a change of the file), and graceful drain.
 */
export class GatewayProcess {
  readonly gateway: Gateway;
  readonly logger: Logger;
  readonly publicServer: Server | undefined;
  readonly adminServer: Server | undefined;
  readonly #configPath: string;
  readonly #env: Env;
  #stopWatching: () => void = () => undefined;
  #stopping: Promise<void> | undefined;

  private constructor(
    gateway: Gateway,
    logger: Logger,
    servers: { public: Server | undefined; admin: Server | undefined },
    options: StartOptions,
  ) {
    this.gateway = gateway;
    this.logger = logger;
    this.publicServer = servers.public;
    this.adminServer = servers.admin;
    this.#configPath = options.configPath;
    this.#env = options.env;
  }

  /** Loads the config file, builds the gateway and opens its listeners. */
  static async start(options: StartOptions): Promise<GatewayProcess> {
    const { config, logger, modules } = await loadForStart(options);
    const gateway = createGateway(config, {
      policies: modules,
      ...options.gateway,
      env: options.env,
      logger,
      logWarnings: false,
    });
    const serve = options.serve ?? { public: true, admin: true };
    const serverOptions = gateway.serverOptions();
    const publicServer = serve.public
      ? createHttpServer(config.server.viaExpress ? gateway.app : gateway.handle, serverOptions)
      : undefined;
    // WebSocket handshakes (SPEC §9) run the route's pipeline from the `upgrade` event.
    publicServer?.on('upgrade', gateway.handleUpgrade);
    const adminServer =
      serve.admin && config.admin ? createHttpServer(gateway.adminApp, serverOptions) : undefined;
    try {
      if (publicServer) await listen(publicServer, config.listen.port, config.listen.host);
      if (adminServer && config.admin) await listen(adminServer, config.admin.port, config.admin.host);
    } catch (err) {
      publicServer?.close();
      await gateway.close();
      throw err;
    }
    const proc = new GatewayProcess(gateway, logger, { public: publicServer, admin: adminServer }, options);
    gateway.reloadFromSource = () => proc.reload();
    if (options.watch !== false)
      proc.#stopWatching = watchConfigFile(options.configPath, () => void proc.reload());
    const { public: pub, admin } = proc.addresses();
    // `listen` and `admin` are host:port (tools read them); the URLs are for the person starting it.
    logger.info(
      {
        listen: pub ? `${pub.address}:${pub.port}` : null,
        admin: admin ? `${admin.address}:${admin.port}` : null,
        routes: config.routes.length,
        ...(pub ? { url: httpUrl(pub, '/') } : {}),
        ...(admin ? { admin_url: httpUrl(admin, '/'), console_url: httpUrl(admin, '/console/') } : {}),
      },
      'tollgate listening',
    );
    return proc;
  }

  addresses(): { public: AddressInfo | undefined; admin: AddressInfo | undefined } {
    return {
      public: this.publicServer ? (this.publicServer.address() as AddressInfo) : undefined,
      admin: this.adminServer ? (this.adminServer.address() as AddressInfo) : undefined,
    };
  }

  /** Re-reads the config file; an invalid one is logged and the running config stays. */
  /**
   * Reads the file and swaps the config in. Reloads run one after another: a SIGHUP racing a file
   * event must not let an older read be applied after a newer one.
   */
  reload(): Promise<boolean> {
    const run = this.#reloading.then(() => this.#reload());
    this.#reloading = run.catch(() => false);
    return run;
  }

  #reloading: Promise<unknown> = Promise.resolve();

  async #reload(): Promise<boolean> {
    let loaded: LoadResult;
    let result: LoadResult;
    try {
      loaded = await loadConfigFile(this.#configPath, this.#env);
      result = loaded.ok ? this.gateway.reload(loaded.config, loaded.modules) : loaded;
    } catch (err) {
      // Never silent: whatever went wrong, the reload is logged and counted as a failure.
      loaded = result = { ok: false, issues: [unexpectedIssue(err)], warnings: [] };
    }
    if (!result.ok) {
      if (!loaded.ok) this.gateway.recordRejectedReload();
      this.logger.error(
        { issues: result.issues },
        'config reload rejected; the previous config stays in force',
      );
      return false;
    }
    for (const w of [...loaded.warnings, ...result.warnings])
      this.logger.warn(`config: ${w.path}: ${w.message}`);
    this.logger.info({ routes: result.config.routes.length }, 'config reloaded');
    return true;
  }

  /**
   * Graceful drain: stop accepting, let in-flight requests finish (keep-alive connections are
   * told `Connection: close`), cut what is left after `server.drainTimeoutMs`, close the services.
   */
  shutdown(): Promise<void> {
    this.#stopping ??= this.#shutdown();
    return this.#stopping;
  }

  async #shutdown(): Promise<void> {
    const timeout = this.gateway.config.server.drainTimeoutMs;
    this.logger.info({ drain_timeout_ms: timeout }, 'draining');
    this.#stopWatching();
    this.gateway.startDrain();
    const servers = [this.publicServer, this.adminServer].filter((s): s is Server => s !== undefined);
    const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    for (const s of servers) s.closeIdleConnections();
    // Connections that finish their last response become idle: close them as they do.
    const sweep = setInterval(() => servers.forEach((s) => s.closeIdleConnections()), 100);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeout);
    });
    const outcome = await Promise.race([closed.then(() => 'drained' as const), deadline]);
    clearInterval(sweep);
    if (timer) clearTimeout(timer);
    if (outcome === 'timeout') {
      this.logger.warn(
        { websockets: this.gateway.openWebSockets },
        'drain timeout: closing the remaining connections',
      );
      // Open WebSockets get a close frame 1001 (going away) before their sockets end.
      this.gateway.closeWebSockets(1001);
      for (const s of servers) s.closeAllConnections();
      await closed;
    }
    await this.gateway.close();
    this.logger.info('stopped');
    this.logger.flush();
  }
}

/** The config file, validated (or ConfigError), and the process logger it asks for, warnings logged. */
export async function loadForStart(
  options: StartOptions,
): Promise<{ config: Config; logger: Logger; modules: PolicyModules }> {
  const loaded = await loadConfigFile(options.configPath, options.env);
  if (!loaded.ok) throw new ConfigError(loaded.issues);
  const config = loaded.config;
  const logger = createLogger({
    level: config.logging.level,
    format: config.logging.format,
    destination: options.logDestination,
    nodeEnv: options.env.NODE_ENV,
  });
  for (const w of loaded.warnings) logger.warn(`config: ${w.path}: ${w.message}`);
  return { config, logger, modules: loaded.modules ?? new Map() };
}

/** A URL for a bound address: a wildcard bind (`0.0.0.0`, `::`) is reachable on loopback. */
function httpUrl(address: AddressInfo, path: string): string {
  const host =
    address.address === '0.0.0.0' ? '127.0.0.1' : address.address === '::' ? '::1' : address.address;
  return `http://${host.includes(':') ? `[${host}]` : host}:${address.port}${path}`;
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}
