import type { AuditRecord } from '../../src/observability/audit.js';

/** A proxied request's audit record, as the gateway writes one: `fields` says when, which, where. */
export function sampleAuditRecord(
  fields: Pick<AuditRecord, 'time' | 'request_id' | 'path'> & Partial<AuditRecord>,
): AuditRecord {
  return {
    trace_id: '4bf92f3577b34da6a3ce929d0e0e4736',
    method: 'GET',
    route: 'orders',
    status: 200,
    aborted: false,
    latency_ms: 3.2,
    client_ip: '203.0.113.7',
    auth_method: 'api_key',
    credential_id: 'key_1',
    subject: 'svc',
    tenant: 'acme',
    problem: null,
    upstream_status: 200,
    upstream_target: 'http://10.0.0.1:8080',
    upstream_latency_ms: 2.9,
    bytes_in: 0,
    bytes_out: 1834,
    idempotent_replay: false,
    rate_limit_policy: null,
    ...fields,
  };
}
