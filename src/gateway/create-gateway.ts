import type { IncomingMessage, ServerResponse } from 'node:http';
import express, { type Express } from 'express';
import { unexpectedIssue, validateConfig, type LoadResult } from '../config/load.js';
import type { Config, ConfigInput, RouteConfig } from '../config/schema.js';
import type { Env } from '../config/interpolate.js';
import type { ConfigIssue } from '../config/issues.js';
import { Problem } from '../problems/problem.js';
import { ProblemWriter, toProblem } from '../problems/problem-details.js';
import { securityHeaders } from '../shared/security-headers.js';
import { systemClock, type Clock } from '../core/clock.js';
import { compileTrust, type TrustFn } from '../core/client-ip.js';
import { createRequestObserver, observeRefused } from '../observability/observer.js';
import { GatewayMetrics } from '../observability/metrics.js';
import {
  MemoryAuditStore,
  RedisAuditStore,
  type AuditRecord,
  type AuditStore,
} from '../observability/audit.js';
import { claimContinue, type ClientErrorAnswer, type ServerOptions } from './server.js';
import { silentLogger, type Logger } from '../observability/logger.js';
import { ReadinessRegistry } from '../observability/readiness.js';
import { UpstreamRegistry, type UpstreamPool } from '../policies/proxy/upstream-pool.js';
import { RedisHandle } from '../shared/redis.js';
import { SecretBox } from '../keys/secret-box.js';
import { KeyService } from '../keys/service.js';
import { MemoryKeyStore } from '../keys/memory-store.js';
import { RedisKeyStore } from '../keys/redis-store.js';
import type { KeyStore } from '../keys/record.js';
import { JwtVerifier } from '../policies/authenticate/jwt.js';
import { MemoryCounters, type CounterStore } from '../policies/rate-limit/counters.js';
import { ResilientCounters } from '../policies/rate-limit/resilient-counters.js';
import { remainingCounter } from '../policies/quota/quota.js';
import { MemoryIdempotencyStore, RedisIdempotencyStore } from '../policies/idempotency/store.js';
import { MemoryReplayStore, RedisReplayStore, type ReplayStore } from '../policies/signature/replay-store.js';
import { newContext } from '../core/request-id.js';
import { createAdminApp } from '../admin/app.js';
import { mountAuditRoutes } from '../admin/requests-routes.js';
import { mountKeyRoutes } from '../admin/keys-routes.js';
import { mountStatsRoute } from '../admin/stats.js';
import { openApiDocument } from '../admin/openapi.js';
import { createSelfServiceStage, createNoApiKeysStage } from '../key-management/self-service.js';
import { createBodyLimitStage } from '../policies/body-limit/body-limit.js';
import { createReadBodyStage } from '../policies/body-limit/read-body.js';
import { createAuthenticateStage } from '../policies/authenticate/authenticate.js';
import { KeyManagement } from '../key-management/management.js';
import { packageVersion } from '../shared/version.js';
import { digestTokens } from '../admin/admin-auth.js';
import { normalizePath, splitTarget } from '../core/path.js';
import { checkHost } from './host.js';
import { buildRouteStages } from './pipeline.js';
import type { RequestContext } from '../core/context.js';
import { RouteTable, allowedMethods, type CompiledRoute } from './route-table.js';
import { runStages } from '../core/stage.js';
import type { Services } from './services.js';

export interface GatewayOptions {
  /** Environment for the overrides of SPEC §1 (`PORT`, `REDIS_URL`, `LOG_LEVEL`). Default: none. */
  env?: Env;
  clock?: Clock;
  logger?: Logger;
  /** Log the config's warnings (default true; the CLI logs them itself, with the file's own). */
  logWarnings?: boolean;
  /** Where audit records go instead of the default store (cluster workers forward them). */
  audit?: AuditStore;
  /** What `/metrics` serves instead of this gateway's own registry (the cluster primary aggregates). */
  metricsText?: () => Promise<string>;
}

/** A config that failed validation: every issue with its path. */
export class ConfigError extends Error {
  readonly issues: ConfigIssue[];

  constructor(issues: ConfigIssue[]) {
    super(`invalid config:\n${issues.map((i) => `  ${i.path}: ${i.message}`).join('\n')}`);
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/** Everything compiled from one config; replaced whole on reload. */
class GatewayState {
  constructor(
    readonly config: Config,
    readonly routes: RouteTable,
    readonly writer: ProblemWriter,
    readonly trust: TrustFn | undefined,
    readonly pools: ReadonlySet<UpstreamPool>,
    readonly adminDigests: readonly Buffer[],
    readonly jwt: JwtVerifier | undefined,
  ) {}
}

export interface ReloadStatus {
  count: number;
  failures: number;
  lastSuccess: boolean;
  lastAt: number | undefined;
}

/**
 * A gateway: the public request handler (`app`), the admin app, and the services they share.
 * Listening is the caller's business (see `main.ts`), so the same object serves supertest,
 * an embedding app and the CLI.
 */
export class Gateway {
  readonly app: Express;
  readonly adminApp: Express;
  readonly services: Services;
  readonly reloadStatus: ReloadStatus = { count: 0, failures: 0, lastSuccess: true, lastAt: undefined };
  readonly #env: Env;
  #state: GatewayState;
  #draining = false;

  constructor(config: Config, services: Services, env: Env) {
    this.services = services;
    this.#env = env;
    this.#state = this.#build(config);

    const app = express();
    app.disable('x-powered-by');
    app.set('etag', false);
    app.set('query parser', false);
    app.use(this.handle);
    this.app = app;

    services.readiness.register('upstreams', () => {
      const targets = services.upstreams.health();
      const down = targets.filter((t) => !t.healthy);
      // A target out of rotation degrades a route; it does not stop the gateway from serving.
      return { status: down.length === 0 ? 'ok' : 'degraded', critical: false, targets };
    });
    services.readiness.register('jwks', () => {
      const issuers = this.#state.jwt?.jwksStatus() ?? [];
      const down = issuers.filter((i) => !i.usable);
      // JWT routes answer 503 without keys; the rest of the gateway serves on.
      return { status: down.length === 0 ? 'ok' : 'down', critical: false, issuers };
    });
    services.readiness.register('config', () => ({
      status: 'ok',
      routes: this.#state.routes.size,
      reloads: this.reloadStatus.count,
      lastReloadSuccess: this.reloadStatus.lastSuccess,
    }));
    this.adminApp = createAdminApp({
      clock: services.clock,
      logger: services.logger,
      readiness: services.readiness,
      typeBase: () => this.#state.config.problems.typeBase,
      isDraining: () => this.#draining,
      digests: () => this.#state.adminDigests,
      apiKeyHeader: () => this.#state.config.auth.apiKeys.header,
      apiKeyPrefix: () => this.#state.config.auth.apiKeys.prefix,
      mountPublic: (router) => {
        router.get('/metrics', async (_req, res) => {
          const text = await services.metricsText();
          res.type(services.metrics.contentType).send(text);
        });
      },
      mountGuarded: (router) => {
        mountAuditRoutes(router, () => services.audit);
        mountKeyRoutes(router, {
          management: () => services.management,
          plans: () => this.#state.config.plans,
        });
        mountStatsRoute(router, {
          metricsText: () => services.metricsText(),
          typeBase: () => this.#state.config.problems.typeBase,
          now: () => services.clock.now(),
        });
        router.get('/openapi.json', (_req, res) => {
          res.json(
            openApiDocument({
              version: packageVersion(),
              selfServicePath: this.#state.config.selfService?.path,
            }),
          );
        });
      },
    });
    services.logger.debug({ routes: config.routes.length }, 'gateway ready');
  }

  /** The config in force. */
  get config(): Config {
    return this.#state.config;
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** The problem writer of the config in force (the `clientError` path uses it too). */
  get writer(): ProblemWriter {
    return this.#state.writer;
  }

  /** The request handler: Node's `(req, res)` shape, also mountable as Express middleware. */
  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    const state = this.#state;
    const ctx = newContext(req, res, this.services.clock);
    ctx.trust = state.trust;
    // Claimed at once: the gateway, not the server, now says when the body may come.
    if (req.headers.expect !== undefined) ctx.expectsContinue = claimContinue(req);
    res.once('close', () => this.#finish(ctx));
    if (this.#draining) res.setHeader('connection', 'close');
    try {
      const url = req.url ?? '/';
      // RFC 9112 §3.2: a request target has no fragment. An upstream drops it, so `/app/orders#`
      // would be routed as a segment `orders#` under `/app` but served as `/app/orders`.
      if (url.includes('#'))
        throw new Problem('bad-request', { detail: 'The request target must not contain a fragment (#).' });
      const target = splitTarget(url);
      ctx.search = target.search;
      ctx.path = normalizePath(target.path);
      checkHost(ctx, url);
      const route = state.routes.match(ctx.path);
      if (route === undefined)
        throw new Problem('not-found', { detail: 'No route matches the request path.' });
      ctx.routeId = route.config.id;
      const method = req.method ?? '';
      // A route without a `methods` list takes any method but TRACE, which would echo the
      // request (cookies included) back; CONNECT never gets here (server.ts refuses it).
      if (route.methods !== undefined ? !route.methods.has(method) : method === 'TRACE')
        throw new Problem('method-not-allowed', {
          detail: `${req.method} is not allowed here.`,
          headers: { allow: route.allow },
        });
      const pending = runStages(ctx, route.stages);
      if (pending !== undefined) pending.then(undefined, (err: unknown) => this.#fail(ctx, state, err));
    } catch (err) {
      this.#fail(ctx, state, err);
    }
  };

  /**
   * Validates `input` and swaps it in for new requests; requests in flight finish on the config
   * they started with. An invalid config changes nothing.
   */
  reload(input: unknown): LoadResult {
    const status = this.reloadStatus;
    status.count++;
    status.lastAt = this.services.clock.now();
    const result = validateConfig(input, this.#env);
    if (!result.ok) {
      status.count--;
      this.recordRejectedReload();
      return result;
    }
    let next: GatewayState;
    try {
      next = this.#build(result.config);
    } catch (err) {
      status.count--;
      this.recordRejectedReload();
      return {
        ok: false,
        warnings: result.warnings,
        issues: err instanceof ConfigError ? err.issues : [unexpectedIssue(err)],
      };
    }
    const previous = this.#state;
    this.#state = next;
    status.lastSuccess = true;
    const longest = Math.max(0, ...previous.config.routes.map((r) => r.upstream?.timeoutMs ?? 0));
    this.services.upstreams.retain(next.pools, longest + 1000);
    return { ...result, warnings: [...result.warnings, ...restartOnly(previous.config, next.config)] };
  }

  /** Counts a reload that was refused before it reached `reload()` (a file that does not parse). */
  recordRejectedReload(): void {
    const status = this.reloadStatus;
    status.count++;
    status.failures++;
    status.lastSuccess = false;
    status.lastAt = this.services.clock.now();
  }

  /** Stops keep-alive: every response from now on says `Connection: close`; `/readyz` says 503. */
  /** What the listeners' servers need from the gateway (timeouts at start, the writer in force). */
  serverOptions(): ServerOptions {
    return {
      server: this.config.server,
      writer: () => this.writer,
      logger: this.services.logger,
      onClientError: (answered) => this.recordClientError(answered),
    };
  }

  /**
   * A request Node refused before routing still gets what every answered request gets (SPEC §4):
   * an audit record its problem's `instance` finds, an access-log line and a count in the metrics.
   */
  recordClientError(answered: ClientErrorAnswer): void {
    const { clock } = this.services;
    const record: AuditRecord = {
      time: new Date(clock.now()).toISOString(),
      request_id: answered.requestId,
      trace_id: '',
      method: undefined,
      path: '',
      route: null,
      status: answered.status,
      aborted: false,
      latency_ms: 0,
      client_ip: answered.clientIp,
      auth_method: null,
      credential_id: null,
      subject: null,
      tenant: null,
      problem: answered.slug,
      upstream_status: null,
      upstream_target: null,
      upstream_latency_ms: null,
      bytes_in: 0,
      bytes_out: 0,
      idempotent_replay: false,
      rate_limit_policy: null,
      signature: null,
    };
    observeRefused(this.services, record);
  }

  startDrain(): void {
    this.#draining = true;
  }

  /** Closes the services (upstream sockets, Redis, stores). Call after the servers stopped. */
  async close(): Promise<void> {
    const closers = [...this.services.closers].reverse();
    for (const close of closers) {
      try {
        await close();
      } catch (err) {
        this.services.logger.warn({ err }, 'error while closing');
      }
    }
  }

  #build(config: Config): GatewayState {
    const services = this.services;
    const security = securityHeaders();
    const writer = new ProblemWriter({ typeBase: config.problems.typeBase, securityHeaders: security });
    // A factory that throws is a config issue with the path of what it was building, never an
    // exception: `validate`, start and reload all report it (and reload keeps the old config).
    const issues: ConfigIssue[] = [];
    const attempt = <T>(path: string, build: () => T): T | undefined => {
      try {
        return build();
      } catch (err) {
        issues.push(...(err instanceof ConfigError ? err.issues : [unexpectedIssue(err, path)]));
        return undefined;
      }
    };
    const tp = config.trustProxy;
    const trustsNobody = tp === false || tp === 0 || (Array.isArray(tp) && tp.length === 0);
    const trust = trustsNobody ? undefined : attempt('trustProxy', () => compileTrust(tp));
    const pools = new Set<UpstreamPool>();
    const jwt =
      config.auth.jwt.length > 0
        ? attempt('auth.jwt', () => new JwtVerifier(config.auth.jwt, services.clock))
        : undefined;
    const compiled: CompiledRoute[] = [];
    config.routes.forEach((route, i) => {
      const built = attempt(`routes[${i}]`, () => {
        const stages = buildRouteStages({
          route,
          config,
          services,
          writer,
          securityHeaders: security,
          trust: trust ?? (() => false),
          trustsNobody,
          jwt,
        });
        if (route.upstream) pools.add(services.upstreams.pool(route.upstream, route.id));
        return { config: route, stages, ...allowedMethods(route.methods) };
      });
      if (built) compiled.push(built);
    });
    if (config.selfService && jwt) {
      const selfService = config.selfService;
      const built = attempt('selfService', () => this.#selfServiceRoute(config, selfService, jwt, security));
      if (built) compiled.push(built);
    }
    if (issues.length > 0) throw new ConfigError(issues);
    if (jwt) void jwt.warmUp();
    return new GatewayState(
      config,
      new RouteTable(compiled, { caseSensitive: config.routing.caseSensitive }),
      writer,
      trust,
      pools,
      digestTokens(config.admin?.tokens ?? []),
      jwt,
    );
  }

  /** The self-service endpoints, routed like any route: API keys refused, then JWT users only. */
  #selfServiceRoute(
    config: Config,
    selfService: NonNullable<Config['selfService']>,
    jwt: JwtVerifier,
    security: ReadonlyArray<readonly [string, string]>,
  ): CompiledRoute {
    const s = this.services;
    const auth = { methods: ['jwt' as const], scopes: [], hmac: 'off' as const };
    const route: RouteConfig = {
      id: 'self-service',
      path: selfService.path,
      auth,
      rateLimits: [],
      upstreamErrors: 'rewrite',
    };
    const stages = [
      createBodyLimitStage(config.limits.bodyBytes),
      createNoApiKeysStage(config.auth.apiKeys.header, config.auth.apiKeys.prefix),
      createAuthenticateStage(auth, {
        keys: s.keys,
        jwt,
        plans: config.plans,
        apiKeyHeader: config.auth.apiKeys.header,
        clock: s.clock,
      }),
      createReadBodyStage(Math.min(config.limits.bodyBytes, 65_536)),
      createSelfServiceStage({
        config: selfService,
        management: s.management,
        apiKeyHeader: config.auth.apiKeys.header,
        apiKeyPrefix: config.auth.apiKeys.prefix,
        issuers: config.auth.jwt.map((i) => i.issuer),
        clock: s.clock,
        securityHeaders: security,
      }),
    ];
    return { config: route, stages, ...allowedMethods(undefined) };
  }

  #fail(ctx: RequestContext, state: GatewayState, err: unknown): void {
    const problem = toProblem(err);
    ctx.problem = problem;
    const logger = this.services.logger;
    if (problem.slug === 'internal-error') logger.error({ err, request_id: ctx.requestId }, 'internal error');
    else if (problem.cause !== undefined && logger.isLevelEnabled('debug'))
      logger.debug({ err: problem.cause, request_id: ctx.requestId, problem: problem.slug }, problem.detail);
    const res = ctx.res;
    if (res.writableEnded || res.destroyed) return;
    state.writer.write(res, problem, ctx.requestId);
  }

  #finish(ctx: RequestContext): void {
    // Close hooks (refunds, idempotency records) run on their own, before and whatever the
    // observers do — or later, when an upstream answer still finishes for idempotency.
    ctx.close((err) => this.services.logger.error({ err, request_id: ctx.requestId }, 'close hook failed'));
    for (const observe of this.services.observers) {
      try {
        observe(ctx);
      } catch (err) {
        this.services.logger.error({ err, request_id: ctx.requestId }, 'observer failed');
      }
    }
  }
}

/** Settings a running process cannot change without a restart. */
function restartOnly(before: Config, after: Config): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);
  if (!same(before.listen, after.listen))
    out.push({ path: 'listen', message: 'changed; takes effect after a restart' });
  if (!same(before.server, after.server))
    out.push({ path: 'server', message: 'changed; takes effect after a restart' });
  if (!same(before.redis, after.redis))
    out.push({ path: 'redis', message: 'changed; takes effect after a restart' });
  if (!same(before.workers, after.workers))
    out.push({ path: 'workers', message: 'changed; takes effect after a restart' });
  if (before.admin?.host !== after.admin?.host || before.admin?.port !== after.admin?.port)
    out.push({ path: 'admin', message: 'listener address changed; takes effect after a restart' });
  if (!same(before.auth.hmac.replayCache, after.auth.hmac.replayCache))
    out.push({ path: 'auth.hmac.replayCache', message: 'changed; takes effect after a restart' });
  if (!same(before.idempotency, after.idempotency))
    out.push({ path: 'idempotency', message: 'changed; takes effect after a restart' });
  if (!same(before.logging, after.logging))
    out.push({ path: 'logging', message: 'changed; takes effect after a restart' });
  if (
    before.auth.apiKeys.prefix !== after.auth.apiKeys.prefix ||
    before.auth.apiKeys.cacheTtlMs !== after.auth.apiKeys.cacheTtlMs
  )
    out.push({ path: 'auth.apiKeys', message: 'prefix and cacheTtlMs take effect after a restart' });
  return out;
}

/**
 * Builds a gateway from a config object (validated against the schema; throws `ConfigError`
 * listing every issue). Wires every dependency: this is the only place that does.
 *
 * @example
 * const gateway = createGateway({ routes: [{ id: 'demo', path: '/demo', mock: { body: { ok: true } } }] });
 * http.createServer(gateway.app).listen(8080);
 */
export function createGateway(config: ConfigInput | Config, options: GatewayOptions = {}): Gateway {
  const env = options.env ?? {};
  const result = validateConfig(config, env);
  if (!result.ok) throw new ConfigError(result.issues);
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? silentLogger();
  const upstreams = new UpstreamRegistry(clock);
  const redisConfig = result.config.redis;
  const redis = redisConfig ? new RedisHandle(redisConfig, logger) : undefined;
  const readiness = new ReadinessRegistry();
  if (redis) {
    readiness.register('redis', () => ({
      status: redis.ready ? 'ok' : 'down',
      // Without Redis the gateway still serves (rate limits fall back to memory) unless quota and
      // idempotency fail closed: then it is not ready.
      critical: redisConfig?.onError !== 'open',
      state: redis.state,
    }));
  }
  const validated = result.config;
  const box = new SecretBox(env.TOLLGATE_SECRET_KEY || undefined);
  const keyStore: KeyStore = redis
    ? new RedisKeyStore({ redis, clock, logger, cacheTtlMs: validated.auth.apiKeys.cacheTtlMs })
    : new MemoryKeyStore();
  const keys = new KeyService({
    store: keyStore,
    prefix: validated.auth.apiKeys.prefix,
    box,
    clock,
    throwawaySealing: env.NODE_ENV === 'development',
  });
  const replay: ReplayStore = redis
    ? new RedisReplayStore(redis, validated.redis?.onError === 'open')
    : new MemoryReplayStore(clock, validated.auth.hmac.replayCache);
  const counters: CounterStore = redis
    ? new ResilientCounters(redis, validated.redis?.onError === 'open')
    : new MemoryCounters();
  keys.onRemainingChanged = (keyId) =>
    counters.reset(remainingCounter(keyId).key, remainingCounter(keyId).tag);
  const auditOptions = { ...result.config.audit, clock, logger };
  const audit: AuditStore =
    options.audit ??
    (redis ? new RedisAuditStore({ redis, ...auditOptions }) : new MemoryAuditStore(auditOptions));
  let plansOf: () => Config['plans'] = () => validated.plans;
  let reloads: () => ReloadStatus = () => ({ count: 0, failures: 0, lastSuccess: true, lastAt: undefined });
  const metrics = new GatewayMetrics({
    redisUp: redis ? () => (redis.ready ? 1 : 0) : undefined,
    redisErrors: () => redis?.errors ?? 0,
    rateLimitFallback: () => (counters instanceof ResilientCounters && counters.fallbackActive ? 1 : 0),
    targets: () => upstreams.health(),
    reloads: () => reloads(),
  });
  const services: Services = {
    clock,
    logger,
    upstreams,
    readiness,
    redis,
    metrics,
    metricsText: options.metricsText ?? (() => metrics.text()),
    audit,
    keys,
    replay,
    counters,
    management: new KeyManagement({ keys, counters, plans: () => plansOf(), clock }),
    idempotency: redis
      ? new RedisIdempotencyStore(redis)
      : new MemoryIdempotencyStore(clock, validated.idempotency),
    observers: [createRequestObserver({ logger, metrics, audit, clock })],
    // Closed in reverse: the audit store flushes before Redis goes.
    closers: [
      () => upstreams.close(),
      ...(redis ? [() => redis.close()] : []),
      () => audit.close(),
      () => keys.close(),
    ],
  };
  if (options.logWarnings !== false)
    for (const w of result.warnings) logger.warn(`config: ${w.path}: ${w.message}`);
  let gateway: Gateway;
  try {
    gateway = new Gateway(result.config, services, env);
  } catch (err) {
    // A build that fails (a factory refusing the config) must not leave Redis or timers holding
    // the process open: `validate` and `start` exit 1 at once.
    for (const close of [...services.closers].reverse())
      void Promise.resolve()
        .then(close)
        .catch(() => undefined);
    throw err;
  }
  reloads = () => gateway.reloadStatus;
  plansOf = () => gateway.config.plans;
  return gateway;
}
