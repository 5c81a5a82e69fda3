import { describe, expect, it } from 'vitest';
import { MemoryAuditStore, type AuditRecord } from '../../src/observability/audit.js';
import { ManualClock } from '../../src/core/clock.js';

const record = (id: string, clock: ManualClock, status = 200): AuditRecord => ({
  time: new Date(clock.now()).toISOString(),
  request_id: id,
  trace_id: 't',
  method: 'GET',
  path: '/',
  route: 'r',
  status,
  aborted: false,
  latency_ms: 1,
  client_ip: '127.0.0.1',
  auth_method: null,
  credential_id: id.startsWith('k') ? 'key_1' : null,
  subject: null,
  tenant: null,
  problem: null,
  upstream_status: null,
  upstream_target: null,
  upstream_latency_ms: null,
  bytes_in: 0,
  bytes_out: 0,
  idempotent_replay: false,
  rate_limit_policy: null,
});

describe('MemoryAuditStore', () => {
  it('keeps the newest maxEntries records and forgets evicted ids', async () => {
    const clock = new ManualClock();
    const store = new MemoryAuditStore({ maxEntries: 3, retentionSec: 60, clock });
    for (const id of ['a', 'b', 'c', 'd']) store.append(record(id, clock));
    expect(await store.get('a')).toBeUndefined();
    expect((await store.get('d'))?.request_id).toBe('d');
    expect((await store.list({ limit: 10 })).map((r) => r.request_id)).toEqual(['d', 'c', 'b']);
  });

  it('drops records older than the retention', async () => {
    const clock = new ManualClock();
    const store = new MemoryAuditStore({ maxEntries: 10, retentionSec: 60, clock });
    store.append(record('old', clock));
    clock.advance(30_000);
    store.append(record('new', clock));
    clock.advance(31_000);
    expect(await store.get('old')).toBeUndefined();
    expect((await store.list({ limit: 10 })).map((r) => r.request_id)).toEqual(['new']);
  });

  it('filters by credential, status class and exact status', async () => {
    const clock = new ManualClock();
    const store = new MemoryAuditStore({ maxEntries: 10, retentionSec: 60, clock });
    store.append(record('k1', clock, 200));
    store.append(record('x1', clock, 429));
    store.append(record('k2', clock, 503));
    expect((await store.list({ limit: 10, credentialId: 'key_1' })).map((r) => r.request_id)).toEqual([
      'k2',
      'k1',
    ]);
    expect((await store.list({ limit: 10, status: '5xx' })).map((r) => r.request_id)).toEqual(['k2']);
    expect((await store.list({ limit: 10, status: '429' })).map((r) => r.request_id)).toEqual(['x1']);
  });
});
