import { ServerResponse, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import express, { type Express } from 'express';
import { unexpectedIssue, validateConfig, type LoadResult } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { ConfigIssue } from '../config/issues.js';
import { restartOnly } from '../config/restart-only.js';
import { Problem } from '../problems/problem.js';
import { ProblemWriter, toProblem } from '../problems/problem-details.js';
import { securityHeaders } from '../shared/security-headers.js';
import { packageVersion } from '../shared/version.js';
import { compileTrust, type TrustFn } from '../core/client-ip.js';
import type { RequestContext } from '../core/context.js';
import { normalizePath, splitTarget } from '../core/path.js';
import { newContext } from '../core/request-id.js';
import { runStages, type Stage } from '../core/stage.js';
import { observeRefused, refusedRecord } from '../observability/observer.js';
import { GatewayTelemetry } from '../observability/telemetry.js';
import type { UpstreamPool } from '../policies/proxy/upstream-pool.js';
import { JwtVerifier } from '../policies/authenticate/jwt.js';
import { compilePolicy, type CompiledPolicy } from '../policies/custom/custom.js';
import type { PolicyModules } from '../policies/custom/loader.js';
import { createAdminApp } from '../admin/app.js';
import { digestTokens, type AdminTokenDigest } from '../admin/admin-auth.js';
import { openApiDocument } from '../admin/openapi.js';
import { claimContinue, type ClientErrorAnswer, type ServerOptions } from './server.js';
import { checkHost } from './host.js';
import { buildRouteStages, buildTopLevelFront, selfServiceRoute, type StageBuild } from './pipeline.js';
import { RouteTable, allowedMethods, routeFor, type CompiledRoute, type PathEntry } from './route-table.js';
import { closeServices, type ReloadStatus, type Services } from './services.js';

const NO_STAGES: readonly Stage[] = [];

/**
 * Runs front stages (synchronous by contract: IP rules, CORS); true when one answered the request
 * (a preflight). A refusal throws.
 */
function runFront(ctx: RequestContext, front: readonly Stage[]): boolean {
  for (const stage of front) {
    void stage.run(ctx);
    if (ctx.handled) return true;
  }
  return false;
}

/** The route whose front stages answer a request no route of its path takes (a preflight, a 405). */
function frontOwner(entry: PathEntry, req: IncomingMessage): CompiledRoute {
  const asked = req.method === 'OPTIONS' ? req.headers['access-control-request-method'] : undefined;
  return (typeof asked === 'string' ? routeFor(entry, asked) : undefined) ?? entry.routes[0]!;
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

/** The context of a response `Gateway.handle` serves (read by its `close` listener). */
const RESPONSE_CONTEXT = Symbol('tollgate.responseContext');

/** Everything compiled from one config; replaced whole on reload. */
interface GatewayState {
  readonly config: Config;
  readonly routes: RouteTable;
  /** The top-level front stages (IP rules, CORS), for answers no route gets to. */
  readonly front: readonly Stage[];
  readonly writer: ProblemWriter;
  readonly trust: TrustFn | undefined;
  readonly pools: ReadonlySet<UpstreamPool>;
  readonly adminDigests: readonly AdminTokenDigest[];
  readonly jwt: JwtVerifier | undefined;
  /** The admin API's OpenAPI document, as served. */
  readonly openApi: string;
  /** Spans of this config's requests (`telemetry.otlp`); undefined when off. */
  readonly telemetry: GatewayTelemetry | undefined;
}

/**
 * A gateway: the public request handler (`handle`, or `app` for Express), the admin app, and the
 * services they share. Listening is the caller's business (see `main.ts`), so the same object
 * serves tests, an embedding app and the CLI. `createGateway()` makes one.
 */
export class Gateway {
  readonly app: Express;
  readonly adminApp: Express;
  readonly services: Services;
  #modules: PolicyModules;
  #state: GatewayState;
  #draining = false;
  /**
   * Re-reads the config from where it came (the CLI sets it to reload its file); `POST /reload`
   * on the admin API calls it. Unset for a gateway made from an object.
   */
  reloadFromSource: (() => Promise<boolean>) | undefined;
  /**
   * The `close` listener of every response `handle` serves: one function for all of them (the
   * context rides on the response), not a closure and a `once` wrapper per request.
   */
  readonly #onResponseClose: (this: ServerResponse) => void;
  /** Reports a close hook that threw (one function for every request, given the context). */
  readonly #reportCloseHook = (err: unknown, ctx: RequestContext): void =>
    this.services.logger.error({ err, request_id: ctx.requestId }, 'close hook failed');

  constructor(config: Config, services: Services, modules: PolicyModules = new Map()) {
    this.services = services;
    this.#modules = modules;
    const finish = (ctx: RequestContext): void => this.#finish(ctx);
    this.#onResponseClose = function (this: ServerResponse) {
      finish((this as unknown as Record<symbol, RequestContext>)[RESPONSE_CONTEXT]!);
    };
    this.#state = this.#build(config);
    services.current.config = config;

    const app = express();
    app.disable('x-powered-by');
    app.set('etag', false);
    app.set('query parser', false);
    app.use(this.handle);
    this.app = app;

    services.readiness.register('upstreams', () => {
      const targets = services.upstreams.health();
      // A target out of rotation degrades a route; it does not stop the gateway from serving.
      return { status: targets.every((t) => t.healthy) ? 'ok' : 'degraded', critical: false, targets };
    });
    services.metrics.jwksSource = () =>
      (this.#state.jwt?.jwksStatus() ?? []).map((i) => ({
        issuer: i.issuer,
        usable: i.usable,
        lastFetchOk: i.status.lastFetchOk,
        fetchedAt: i.status.fetchedAt,
      }));
    services.readiness.register('jwks', () => {
      const issuers = this.#state.jwt?.jwksStatus() ?? [];
      // JWT routes answer 503 without keys; the rest of the gateway serves on.
      return { status: issuers.every((i) => i.usable) ? 'ok' : 'down', critical: false, issuers };
    });
    services.readiness.register('config', () => ({
      status: 'ok',
      routes: this.#state.routes.size,
      reloads: services.reloadStatus.count,
      lastReloadSuccess: services.reloadStatus.lastSuccess,
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
      metricsText: () => services.metricsText(),
      metricsContentType: services.metrics.contentType,
      audit: () => services.audit,
      adminAudit: () => services.adminAudit,
      webhookAttempts: (limit) => services.webhooks.recent(limit),
      management: () => services.management,
      plans: () => this.#state.config.plans,
      usage: () => services.usage.store,
      usageRetentionDays: () => this.#state.config.usage.retentionDays,
      openApi: () => this.#state.openApi,
      reload: () => this.reloadFromSource?.(),
    });
  }

  /** The config in force. */
  get config(): Config {
    return this.#state.config;
  }

  get draining(): boolean {
    return this.#draining;
  }

  get reloadStatus(): ReloadStatus {
    return this.services.reloadStatus;
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
    ctx.collectsHeaders = true; // every answer is written by the gateway's own writers (answerHead)
    const telemetry = state.telemetry;
    if (telemetry !== undefined) ctx.trace = telemetry.start(ctx);
    // Claimed at once: the gateway, not the server, now says when the body may come.
    if (req.headers.expect !== undefined) ctx.expectsContinue = claimContinue(req);
    (res as unknown as Record<symbol, RequestContext>)[RESPONSE_CONTEXT] = ctx;
    res.on('close', this.#onResponseClose); // 'close' is emitted once
    if (this.#draining) res.setHeader('connection', 'close');
    this.#route(ctx, state);
  };

  /**
   * The `upgrade` listener of the public server (`server.on('upgrade', gateway.handleUpgrade)`):
   * a WebSocket handshake runs its route's whole pipeline like any request — on a ServerResponse
   * bound to the raw socket, so a refusal is an ordinary problem+json answer (then the socket is
   * closed) — and the proxy stage relays the upstream's `101` and pipes the sockets. An upgrade to
   * a route without `websocket: true`, or to another protocol, is 400.
   */
  readonly handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const state = this.#state;
    // Node has taken its own listeners off an upgraded socket: a reset must not go unhandled.
    socket.on('error', () => socket.destroy());
    const res = new ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket as Socket);
    const ctx = newContext(req, res, this.services.clock);
    ctx.trust = state.trust;
    ctx.collectsHeaders = true; // every answer is written by the gateway's own writers (answerHead)
    const telemetry = state.telemetry;
    if (telemetry !== undefined) ctx.trace = telemetry.start(ctx);
    const upgrade = { socket, head, established: false, closeCode: undefined };
    ctx.upgrade = upgrade;
    // A refusal (or an upstream's HTTP answer) ends the connection once written; a tunnel's
    // sockets end when either side closes. `close` comes when the socket is gone, either way.
    res.once('finish', () => {
      if (!upgrade.established) (socket as Socket).destroySoon();
    });
    res.once('close', () => this.#finish(ctx));
    this.#route(ctx, state);
  };

  #route(ctx: RequestContext, state: GatewayState): void {
    const req = ctx.req;
    // The front stages (IP rules, CORS) not run yet: the top level's until a route is found. An
    // answer before they ran (a bad target, no route) still gets them, in the catch below.
    let front = state.front;
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
      const entry = state.routes.lookup(ctx.path);
      // The request's method picks the route of the path (SPEC §9 per-method routes).
      const route = entry === undefined ? undefined : routeFor(entry, req.method ?? '');
      // The front stages are those of the route the request is for: the method's route, for a
      // preflight the route of the method it asks about, else the path's first route.
      if (entry !== undefined) front = (route ?? frontOwner(entry, req)).front ?? NO_STAGES;
      const ran = front;
      front = NO_STAGES;
      if (runFront(ctx, ran)) return;
      if (entry === undefined)
        throw new Problem('not-found', { detail: 'No route matches the request path.' });
      if (route === undefined) {
        // One route at the path: the 405 is that route's; several: it is the path's.
        if (entry.routes.length === 1) ctx.routeId = entry.routes[0]!.config.id;
        throw new Problem('method-not-allowed', {
          detail: `${req.method} is not allowed here.`,
          headers: { allow: entry.allow },
        });
      }
      ctx.routeId = route.config.id;
      if (ctx.upgrade !== undefined && route.config.websocket === undefined)
        throw new Problem('bad-request', {
          detail: 'This route does not accept WebSocket (or other protocol) upgrades.',
          headers: { connection: 'close' },
        });
      const pending = runStages(ctx, route.stages);
      if (pending !== undefined) pending.then(undefined, (err: unknown) => this.#fail(ctx, state, err));
    } catch (err) {
      let failure = err;
      try {
        // An IP refusal replaces the answer; CORS adds its headers to it.
        if (runFront(ctx, front)) return;
      } catch (refusal) {
        failure = refusal;
      }
      this.#fail(ctx, state, failure);
    }
  }

  /**
   * Validates `input` and swaps it in for new requests; requests in flight finish on the config
   * they started with. An invalid config changes nothing. `modules`: the file's loaded policy
   * modules (`loadConfigFile` gives them), else the ones the gateway has.
   */
  reload(input: unknown, modules: PolicyModules = this.#modules): LoadResult {
    const result = validateConfig(input, this.services.env);
    if (!result.ok) {
      this.recordRejectedReload();
      return result;
    }
    let next: GatewayState;
    try {
      next = this.#build(result.config, modules);
    } catch (err) {
      this.recordRejectedReload();
      return {
        ok: false,
        warnings: result.warnings,
        issues: err instanceof ConfigError ? err.issues : [unexpectedIssue(err)],
      };
    }
    const status = this.services.reloadStatus;
    status.count++;
    status.lastSuccess = true;
    status.lastAt = this.services.clock.now();
    const previous = this.#state;
    this.#state = next;
    this.#modules = modules;
    this.services.current.config = next.config;
    const longest = Math.max(0, ...previous.config.routes.map((r) => r.upstream?.timeoutMs ?? 0));
    this.services.upstreams.retain(next.pools, longest + 1000);
    return { ...result, warnings: [...result.warnings, ...restartOnly(previous.config, next.config)] };
  }

  /** Counts a reload that was refused (a file that does not parse, a config that does not build). */
  recordRejectedReload(): void {
    const status = this.services.reloadStatus;
    status.count++;
    status.failures++;
    status.lastSuccess = false;
    status.lastAt = this.services.clock.now();
  }

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
    observeRefused(this.services, refusedRecord(answered, this.services.clock.now()));
  }

  /** Open WebSockets (they outlive reloads, on the config they started with). */
  get openWebSockets(): number {
    return this.services.websockets.size;
  }

  /** Closes every open WebSocket with close code `code` (1001 at the end of a drain). */
  closeWebSockets(code = 1001): void {
    this.services.websockets.closeAll(code);
  }

  /** Stops keep-alive: every response from now on says `Connection: close`; `/readyz` says 503. */
  startDrain(): void {
    this.#draining = true;
  }

  /** Sends the spans waiting for export now (`telemetry.otlp`; bounded, never rejects). */
  flushTelemetry(): Promise<void> {
    return this.services.telemetry.flush();
  }

  /** Closes the services (upstream sockets, Redis, stores, the span exporter, flushed). Call after the servers stopped. */
  close(): Promise<void> {
    return closeServices(this.services);
  }

  #build(config: Config, modules: PolicyModules = this.#modules): GatewayState {
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
    const jwt =
      config.auth.jwt.length > 0
        ? attempt('auth.jwt', () => new JwtVerifier(config.auth.jwt, services.clock))
        : undefined;
    const policies = new Map<string, CompiledPolicy>();
    for (const [name, entry] of Object.entries(config.policies)) {
      if (!modules.has(name)) {
        issues.push({
          path: `policies.${name}.module`,
          message:
            entry.module === undefined ? 'is required' : 'was not loaded (load the file with loadConfigFile)',
        });
        continue;
      }
      const compiled = compilePolicy(name, modules.get(name), entry.options);
      if (compiled.ok) policies.set(name, compiled.policy);
      else issues.push(...compiled.issues);
    }
    const base: Omit<StageBuild, 'route' | 'selfService'> = {
      config,
      services,
      writer,
      securityHeaders: security,
      trust: trust ?? (() => false),
      trustsNobody,
      jwt,
      policies,
    };
    const pools = new Set<UpstreamPool>();
    const compiled: CompiledRoute[] = [];
    const compile = (path: string, build: StageBuild) => {
      const route = build.route;
      const built = attempt(path, () => ({
        config: route,
        front: buildRouteStages(build, true),
        stages: buildRouteStages(build),
        ...allowedMethods(route.methods),
      }));
      if (built) compiled.push(built);
      if (route.upstream) pools.add(services.upstreams.pool(route.upstream, route.id));
    };
    config.routes.forEach((route, i) => compile(`routes[${i}]`, { ...base, route, selfService: undefined }));
    const selfService = config.selfService;
    if (selfService && jwt)
      compile('selfService', { ...base, route: selfServiceRoute(selfService), selfService });
    if (issues.length > 0) throw new ConfigError(issues);
    if (jwt) void jwt.warmUp();
    // Last: a build that fails must not replace the exporter in force.
    const exporter = services.telemetry.select(config.telemetry.otlp);
    return {
      config,
      routes: new RouteTable(compiled, { caseSensitive: config.routing.caseSensitive }),
      front: buildTopLevelFront(config, security),
      writer,
      trust,
      pools,
      adminDigests: digestTokens(config.admin?.tokens ?? []),
      jwt,
      openApi: JSON.stringify(
        openApiDocument({ version: packageVersion(), selfServicePath: selfService?.path }),
      ),
      telemetry:
        exporter === undefined
          ? undefined
          : new GatewayTelemetry(
              exporter,
              selfService
                ? [...config.routes, { id: 'self-service', path: selfService.path }]
                : config.routes,
            ),
    };
  }

  #fail(ctx: RequestContext, state: GatewayState, err: unknown): void {
    const problem = toProblem(err);
    ctx.problem = problem;
    const logger = this.services.logger;
    // An injected 500 (the `fault` policy) is a test's doing, not a gateway error to log as one.
    if (problem.slug === 'internal-error' && problem.extensions?.injected !== true)
      logger.error({ err, request_id: ctx.requestId }, 'internal error');
    else if (problem.cause !== undefined && logger.isLevelEnabled('debug'))
      logger.debug({ err: problem.cause, request_id: ctx.requestId, problem: problem.slug }, problem.detail);
    const res = ctx.res;
    if (res.writableEnded || res.destroyed) return;
    state.writer.write(res, problem, ctx.requestId);
  }

  #finish(ctx: RequestContext): void {
    // Close hooks (refunds, idempotency records) run on their own, before and whatever the
    // observers do — or later, when an upstream answer still finishes for idempotency.
    ctx.close(this.#reportCloseHook);
    const trace = ctx.trace;
    if (trace !== undefined)
      try {
        trace.finish(ctx);
      } catch (err) {
        this.services.logger.error({ err, request_id: ctx.requestId }, 'telemetry failed');
      }
    for (const observe of this.services.observers) {
      try {
        observe(ctx);
      } catch (err) {
        this.services.logger.error({ err, request_id: ctx.requestId }, 'observer failed');
      }
    }
  }
}
