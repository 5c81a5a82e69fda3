import type { RequestHandler, Response } from 'express';
import type { Clock } from '../core/clock.js';
import { contextOf } from '../core/context.js';
import type { AuditRecord, AuditStore } from '../observability/audit.js';
import type { Logger } from '../observability/logger.js';

/*
 * Admin actions audited (SPEC §11): every state-changing admin call and every refused admin
 * credential becomes an audit record with `kind: admin`, its actor (the token's name), action,
 * target and outcome, in the admin trail (`GET /requests?kind=admin`); every admin call, reads
 * included, gets an access-log line. Neither holds a secret: no header values, no body — so no
 * token and no plaintext key.
 */

interface AdminLocals {
  actor?: string;
  refused?: string;
  target?: string | null;
}

const locals = (res: Response): AdminLocals => {
  const l = res.locals as { tollgateAdmin?: AdminLocals };
  return (l.tollgateAdmin ??= {});
};

/** The admin token's holder, once authenticated. */
export function setAdminActor(res: Response, actor: string): void {
  locals(res).actor = actor;
}

/** The credential was refused (the problem slug it got). */
export function refuseAdmin(res: Response, slug: string): void {
  locals(res).refused = slug;
}

/**
 * What an admin call acted on when the path does not say (a created key's id). Routes of other
 * admin features (e.g. `PUT /tenants/{id}`) need not call it: the path's id is the target.
 */
export function setAdminTarget(res: Response, target: string | null): void {
  locals(res).target = target;
}

/** The state-changing admin calls, by method and path pattern, with the path part that is the target. */
const ACTIONS: ReadonlyArray<{ method: string; path: RegExp; action: string }> = [
  { method: 'POST', path: /^\/keys\/?$/, action: 'key.create' },
  { method: 'POST', path: /^\/keys\/([^/]+)\/rotate\/?$/, action: 'key.rotate' },
  { method: 'PATCH', path: /^\/keys\/([^/]+)\/?$/, action: 'key.update' },
  { method: 'DELETE', path: /^\/keys\/([^/]+)\/?$/, action: 'key.revoke' },
  { method: 'PUT', path: /^\/tenants\/([^/]+)\/?$/, action: 'tenant.plan' },
  { method: 'POST', path: /^\/reload\/?$/, action: 'config.reload' },
];

/** The action of an admin call, or undefined for a read (`POST /keys/verify` included: it changes nothing). */
export function adminAction(
  method: string,
  path: string,
): { action: string; target: string | null } | undefined {
  for (const a of ACTIONS) {
    if (a.method !== method) continue;
    const m = a.path.exec(path);
    if (m === null) continue;
    let target: string | null = null;
    if (m[1] !== undefined)
      try {
        target = decodeURIComponent(m[1]);
      } catch {
        target = m[1];
      }
    return { action: a.action, target };
  }
  return undefined;
}

/** Mounted before the admin token check: watches every guarded admin call until its response ends. */
export function adminAudit(deps: { audit: () => AuditStore; logger: Logger; clock: Clock }): RequestHandler {
  return function adminAuditMiddleware(req, res, next) {
    const started = deps.clock.monotonic();
    const startedAt = deps.clock.now();
    const method = req.method;
    const path = req.path;
    res.once('close', () => {
      try {
        const l = locals(res);
        const found = adminAction(method, path);
        const status = res.statusCode;
        const outcome: NonNullable<AuditRecord['outcome']> =
          l.refused !== undefined ? 'refused' : res.writableFinished && status < 400 ? 'success' : 'failure';
        // A refused credential keeps the action it attempted (a read is `read`).
        const action = found?.action ?? 'read';
        const target = l.target !== undefined ? l.target : (found?.target ?? null);
        const latency = Math.round((deps.clock.monotonic() - started) * 1000) / 1000;
        const requestId = contextOf(req)?.requestId ?? 'unknown';
        const actor = l.actor ?? null;
        deps.logger.info(
          {
            kind: 'admin',
            request_id: requestId,
            method,
            path,
            status,
            latency_ms: latency,
            actor,
            action,
            target,
            outcome,
          },
          'admin request',
        );
        // Reads are logged, not audited: the trail is of what changed and of who was turned away.
        if (found === undefined && l.refused === undefined) return;
        const record: AuditRecord = {
          time: new Date(startedAt).toISOString(),
          request_id: requestId,
          trace_id: contextOf(req)?.traceId ?? '',
          method,
          path,
          route: null,
          status,
          aborted: !res.writableFinished,
          latency_ms: latency,
          client_ip: req.socket.remoteAddress ?? null,
          auth_method: l.refused !== undefined ? null : 'admin-token',
          credential_id: null,
          subject: actor,
          tenant: null,
          problem: l.refused ?? null,
          upstream_status: null,
          upstream_target: null,
          upstream_latency_ms: null,
          bytes_in: Number(req.headers['content-length'] ?? 0) || 0,
          bytes_out: Number(res.getHeader('content-length') ?? 0) || 0,
          idempotent_replay: false,
          rate_limit_policy: null,
          signature: null,
          kind: 'admin',
          actor,
          action,
          target,
          outcome,
        };
        const store = deps.audit();
        store.append(record, JSON.stringify(record));
        // Admin calls are rare: written at once, not with the next batch of the request trail.
        void store.flush().catch(() => undefined);
      } catch (err) {
        deps.logger.error({ err }, 'admin audit failed');
      }
    });
    next();
  };
}
