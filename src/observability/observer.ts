import { finalStatus, type RequestContext } from '../core/context.js';
import { isoTime, type Clock } from '../core/clock.js';
import type { AuditRecord, AuditStore } from './audit.js';
import { accessLineWriter, type Logger } from './logger.js';
import type { GatewayMetrics } from './metrics.js';

const round3 = (ms: number) => Math.round(ms * 1000) / 1000;

/** The record of one finished request: the audit record and the access-log line share it. */
export function auditRecord(ctx: RequestContext, endMono: number): AuditRecord {
  const id = ctx.identity;
  const res = ctx.res;
  let bytesOut = ctx.bytesOut;
  if (bytesOut === 0) {
    const length = res.getHeader('content-length');
    if (length !== undefined) bytesOut = Number(length) || 0;
  }
  const upgrade = ctx.upgrade;
  const record: AuditRecord = {
    time: isoTime(ctx.startedAt),
    request_id: ctx.requestId,
    trace_id: ctx.traceId,
    method: ctx.req.method,
    path: ctx.path,
    route: ctx.routeId ?? null,
    status: finalStatus(ctx),
    aborted: upgrade?.established === true ? false : !res.writableFinished,
    latency_ms: round3(endMono - ctx.startMono),
    client_ip: ctx.clientIp || null,
    auth_method: id?.method ?? null,
    credential_id: id?.credentialId ?? null,
    subject: id?.subject ?? null,
    tenant: id?.tenant ?? null,
    problem: ctx.problem?.slug ?? null,
    upstream_status: ctx.upstreamStatus ?? null,
    upstream_target: ctx.upstreamTarget ?? null,
    upstream_latency_ms: ctx.upstreamLatencyMs === undefined ? null : round3(ctx.upstreamLatencyMs),
    bytes_in: ctx.bytesIn,
    bytes_out: bytesOut,
    idempotent_replay: ctx.idempotentReplay,
    rate_limit_policy: ctx.rateLimitPolicy ?? null,
    rate_limit_shadow: ctx.rateLimitShadow ?? null,
    signature:
      ctx.signature === undefined
        ? null
        : {
            timestamp: ctx.signature.timestamp,
            body_sha256: ctx.signature.bodySha256,
            result: ctx.signature.result,
          },
  };
  // A WebSocket: `latency_ms` is its duration, `bytes_in`/`bytes_out` what passed each way.
  if (upgrade !== undefined) record.close_code = upgrade.closeCode ?? null;
  return record;
}

/** What Node's `clientError`, `connect` and `checkExpectation` paths know of a request they answered. */
export interface RefusedRequest {
  requestId: string;
  status: number;
  slug: string;
  clientIp: string | null;
  method?: string | undefined;
  path?: string | undefined;
}

/**
 * The record of a request answered before it became a routed request (malformed, CONNECT, an
 * unmet `Expect`): the same fields as `auditRecord`, most of them empty.
 */
export function refusedRecord(r: RefusedRequest, now: number): AuditRecord {
  return {
    time: new Date(now).toISOString(),
    request_id: r.requestId,
    trace_id: '',
    method: r.method,
    path: r.path ?? '',
    route: null,
    status: r.status,
    aborted: false,
    latency_ms: 0,
    client_ip: r.clientIp,
    auth_method: null,
    credential_id: null,
    subject: null,
    tenant: null,
    problem: r.slug,
    upstream_status: null,
    upstream_target: null,
    upstream_latency_ms: null,
    bytes_in: 0,
    bytes_out: 0,
    idempotent_replay: false,
    rate_limit_policy: null,
    rate_limit_shadow: null,
    signature: null,
  };
}

/**
 * What happens once per request when its response is over: one access-log line (the process
 * logger, no child logger), the metrics, and the audit record — all from one record, serialised
 * once. Each output is guarded on its own: one that throws costs only its own output, never the
 * others' (a try block costs nothing until something throws).
 */
export function createRequestObserver(deps: {
  logger: Logger;
  metrics: GatewayMetrics;
  audit: AuditStore;
  clock: Clock;
}): (ctx: RequestContext) => void {
  const { logger, metrics, audit, clock } = deps;
  const accessLog = accessLogWriter(logger);
  return function observeRequest(ctx) {
    const end = clock.monotonic();
    try {
      metrics.observe(ctx, end);
    } catch (err) {
      outputFailed(logger, 'metrics', ctx.requestId, err);
    }
    let record: AuditRecord;
    let json: string;
    try {
      record = auditRecord(ctx, end);
      json = JSON.stringify(record);
    } catch (err) {
      outputFailed(logger, 'audit record', ctx.requestId, err);
      return;
    }
    try {
      accessLog?.(record, json);
    } catch (err) {
      outputFailed(logger, 'access log', ctx.requestId, err);
    }
    try {
      audit.append(record, json);
    } catch (err) {
      outputFailed(logger, 'audit', ctx.requestId, err);
    }
  };
}

/**
 * Reports an observer output that threw. The logger may be what failed: reporting must not throw
 * out of a `close` listener (that would be an uncaught exception).
 */
export function outputFailed(logger: Logger, output: string, requestId: string, err: unknown): void {
  try {
    logger.error({ err, request_id: requestId, output }, 'observer failed');
  } catch {
    // Nothing left to tell: the other outputs already ran or still will.
  }
}

/**
 * The outputs of a request Node refused before routing (no context): its access-log line, its
 * count and its audit record, each guarded as in `createRequestObserver`.
 */
export function observeRefused(
  deps: { logger: Logger; metrics: GatewayMetrics; audit: AuditStore },
  record: AuditRecord,
): void {
  const { logger, metrics, audit } = deps;
  try {
    metrics.observeRefused(record.status);
  } catch (err) {
    outputFailed(logger, 'metrics', record.request_id, err);
  }
  const json = JSON.stringify(record);
  try {
    accessLogWriter(logger)?.(record, json);
  } catch (err) {
    outputFailed(logger, 'access log', record.request_id, err);
  }
  try {
    audit.append(record, json);
  } catch (err) {
    outputFailed(logger, 'audit', record.request_id, err);
  }
}

/** Writes the access-log line of a record (and its JSON), or undefined when `info` is off. */
export function accessLogWriter(logger: Logger): ((record: AuditRecord, json: string) => void) | undefined {
  if (!logger.isLevelEnabled('info')) return undefined;
  const fastLine = accessLineWriter(logger);
  if (fastLine !== undefined) return (_record, json) => fastLine(json);
  return (record) => {
    // pino stamps its own `time` on the line; the record's (the arrival time) would repeat the key.
    const { time: _arrival, ...line } = record;
    logger.info(line, 'request');
  };
}
