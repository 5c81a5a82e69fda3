import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import helmet from 'helmet';
import { Problem } from '../problems/problem.js';
import { problemDetails } from '../problems/problem-details.js';
import { apiHelmetOptions } from '../shared/security-headers.js';
import { requestId } from '../core/middleware.js';
import { contextOf } from '../core/context.js';
import type { Logger } from '../observability/logger.js';
import type { ReadinessRegistry } from '../observability/readiness.js';
import type { Clock } from '../core/clock.js';
import { adminAuth, type AdminAuthOptions } from './admin-auth.js';
import { consoleRouter } from './console.js';
import type { Plan } from '../core/identity.js';
import type { AuditStore } from '../observability/audit.js';
import type { KeyManagement } from '../key-management/management.js';
import { mountAuditRoutes } from './requests-routes.js';
import { mountKeyRoutes } from './keys-routes.js';
import { mountTenantRoutes } from './tenants-routes.js';
import { mountStatsRoute } from './stats.js';
import { adminAudit } from './admin-audit.js';
import { mountWebhookRoutes } from './webhooks-routes.js';
import type { AttemptRecord } from '../events/store.js';
import { mountUsageRoutes } from './usage-routes.js';
import type { UsageStore } from '../usage/usage.js';

export interface AdminAppOptions extends AdminAuthOptions {
  clock: Clock;
  logger: Logger;
  readiness: ReadinessRegistry;
  typeBase: () => string;
  isDraining: () => boolean;
  /** `/metrics` (no token: for scrapers). */
  metricsText: () => Promise<string>;
  metricsContentType: string;
  audit: () => AuditStore;
  /** The admin trail (`kind: admin` records), a sibling of the request trail. */
  adminAudit: () => AuditStore;
  /** Recent webhook delivery attempts (`GET /webhooks/deliveries`). */
  webhookAttempts: (limit: number) => Promise<AttemptRecord[]>;
  management: () => KeyManagement;
  plans: () => Readonly<Record<string, Plan>>;
  /** Reloads the config file (`POST /reload`); undefined when there is none to reload. */
  reload?: () => Promise<boolean> | undefined;
  /** Usage history (`GET /keys/{id}/usage`, `GET /tenants/{id}/usage`) and its retention. */
  usage: () => UsageStore;
  usageRetentionDays: () => number;
  /** The OpenAPI document of the config in force, as JSON text (built once per config). */
  openApi: () => string;
}

/**
 * The admin listener's app. `/healthz` and `/readyz` (and `/metrics`) answer without a token, for
 * probes and scrapers; everything else needs an admin token. Bind it to loopback or a private
 * network: it is the control plane.
 */
export function createAdminApp(options: AdminAppOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(requestId({ clock: options.clock }));
  // The console: static files (no secrets in them), with a policy that lets its own scripts run.
  app.use(
    '/console',
    helmet({
      contentSecurityPolicy: {
        useDefaults: false,
        directives: {
          defaultSrc: ["'self'"],
          scriptSrc: ["'self'"],
          styleSrc: ["'self'"],
          imgSrc: ["'self'", 'data:'],
          connectSrc: ["'self'"],
          formAction: ["'self'"],
          baseUri: ["'none'"],
          objectSrc: ["'none'"],
          frameAncestors: ["'none'"],
        },
      },
    }),
    consoleRouter({
      logger: options.logger,
      typeBase: options.typeBase,
      adminApiOn: () => options.digests().length > 0,
    }),
  );
  app.use(helmet(apiHelmetOptions));
  // API answers carry keys, secrets and audit records: no cache, shared or private, may keep them.
  app.use((_req, res, next) => {
    res.setHeader('cache-control', 'no-store');
    next();
  });

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get('/readyz', async (_req, res) => {
    const report = await options.readiness.report();
    const draining = options.isDraining();
    const ready = report.ready && !draining;
    res
      .status(ready ? 200 : 503)
      .json({ status: ready ? 'ready' : 'not-ready', draining, checks: report.checks });
  });

  app.get('/metrics', async (_req, res) => {
    const text = await options.metricsText();
    res.type(options.metricsContentType).send(text);
  });

  const guarded = express.Router();
  guarded.use(adminAudit({ audit: options.adminAudit, logger: options.logger, clock: options.clock }));
  guarded.use(adminAuth(options));
  mountAuditRoutes(guarded, options.audit, options.adminAudit);
  mountWebhookRoutes(guarded, options.webhookAttempts);
  mountKeyRoutes(guarded, { management: options.management, plans: options.plans });
  mountTenantRoutes(guarded, { management: options.management, plans: options.plans });
  mountUsageRoutes(guarded, {
    store: options.usage,
    management: options.management,
    retentionDays: options.usageRetentionDays,
    now: () => options.clock.now(),
  });
  mountStatsRoute(guarded, {
    metricsText: options.metricsText,
    typeBase: options.typeBase,
    now: () => options.clock.now(),
  });
  guarded.post('/reload', async (_req, res) => {
    const run = options.reload?.();
    if (run === undefined)
      throw new Problem('not-found', {
        detail: 'This gateway has no config file to reload (it was made from a config object).',
      });
    if (!(await run))
      throw new Problem('conflict', {
        detail: 'The config file is invalid; the previous config stays in force (the log lists the issues).',
      });
    res.json({ reloaded: true });
  });
  guarded.get('/openapi.json', (_req, res) => {
    res.type('application/json').send(options.openApi());
  });
  guarded.use((req, _res, next) => {
    next(new Problem('not-found', { detail: `No admin endpoint ${req.method} ${req.path}.` }));
  });
  app.use(guarded);

  // A malformed escape in a path parameter (`/keys/%E0%A4%A`): the router's URIError, marked 400.
  app.use(function malformedPathParameter(err: unknown, _req: Request, _res: Response, next: NextFunction) {
    if (err instanceof URIError && (err as { status?: unknown }).status === 400)
      next(
        new Problem('validation-failed', {
          detail: 'The request path is not valid.',
          extensions: { errors: [{ pointer: '/path', message: 'has a malformed percent-escape' }] },
          cause: err,
        }),
      );
    else next(err);
  });

  const writeProblem = problemDetails({
    typeBase: options.typeBase,
    requestIdOf: (req) => contextOf(req)?.requestId ?? 'unknown',
    onInternalError: (err, req) =>
      options.logger.error({ err, request_id: contextOf(req)?.requestId }, 'admin internal error'),
  });
  app.use(writeProblem);
  return app;
}
