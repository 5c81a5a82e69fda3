import { validateConfig } from '../config/load.js';
import type { Config, ConfigInput } from '../config/schema.js';
import type { Env } from '../config/interpolate.js';
import { systemClock, type Clock } from '../core/clock.js';
import { silentLogger, type Logger } from '../observability/logger.js';
import type { AuditStore } from '../observability/audit.js';
import type { Policy } from '../policies/custom/define-policy.js';
import type { PolicyModules } from '../policies/custom/loader.js';
import { ConfigError, Gateway } from './gateway.js';
import { closeServices, createServices, type ServiceOptions } from './services.js';

export { ConfigError, Gateway } from './gateway.js';
export type { ReloadStatus } from './services.js';

/** An Express middleware factory used as a policy (SPEC §12): `(options) => (req, res, next)`. */
export type MiddlewareFactory = (options: never) => unknown;

export interface GatewayOptions {
  /** Environment for the overrides of SPEC §1 (`PORT`, `REDIS_URL`, `LOG_LEVEL`). Default: none. */
  env?: Env;
  clock?: Clock;
  /** Uniform in [0, 1), for fault injection's draws. Default `Math.random` (tests seed one). */
  random?: () => number;
  logger?: Logger;
  /** Log the config's warnings (default true; the CLI logs them itself, with the file's own). */
  logWarnings?: boolean;
  /** Where audit records go instead of the default store. */
  audit?: AuditStore;
  /** What `/metrics` serves instead of this gateway's own registry (the cluster primary aggregates). */
  metricsText?: () => Promise<string>;
  /** Internal (tests): webhook delivery timing and queue cap. */
  webhooks?: ServiceOptions['webhooks'];
  /** Internal (tests): the span export's queue, batch and timeouts (`telemetry.otlp`). */
  telemetry?: ServiceOptions['telemetry'];
  /** Internal (tests): the counter layout migration's repetition (`intervalMs`, `repeatForMs`). */
  counterMigration?: ServiceOptions['counterMigration'];
  /**
   * The config's custom policies, by name (`policies.<name>` of the config): what a module's
   * default export would be. `loadConfigFile` loads the modules of a file itself.
   */
  policies?: Record<string, Policy<never> | MiddlewareFactory> | PolicyModules;
}

/**
 * Builds a gateway from a config object (validated against the schema; throws `ConfigError`
 * listing every issue, with their paths).
 *
 * @example
 * const gateway = createGateway({ routes: [{ id: 'demo', path: '/demo', mock: { body: { ok: true } } }] });
 * http.createServer(gateway.handle).listen(8080);
 */
export function createGateway(config: ConfigInput | Config, options: GatewayOptions = {}): Gateway {
  const env = options.env ?? {};
  const result = validateConfig(config, env);
  if (!result.ok) throw new ConfigError(result.issues);
  const logger = options.logger ?? silentLogger();
  const services = createServices(result.config, {
    env,
    clock: options.clock ?? systemClock,
    random: options.random,
    logger,
    audit: options.audit,
    metricsText: options.metricsText,
    webhooks: options.webhooks,
    telemetry: options.telemetry,
    counterMigration: options.counterMigration,
  });
  if (options.logWarnings !== false)
    for (const w of result.warnings) logger.warn(`config: ${w.path}: ${w.message}`);
  const given = options.policies;
  const modules: PolicyModules =
    given instanceof Map ? given : new Map(Object.entries((given ?? {}) as Record<string, unknown>));
  try {
    return new Gateway(result.config, services, modules);
  } catch (err) {
    // A build that fails (a factory refusing the config) must not leave Redis or timers holding
    // the process open: `validate` and `start` exit 1 at once.
    void closeServices(services);
    throw err;
  }
}
