import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/core/clock.js';
import { MemoryIdempotencyStore, type StoredResponse } from '../../src/policies/idempotency/store.js';
import { idempotencyStoreSchema } from '../../src/policies/idempotency/schema.js';
import { MemoryReplayStore } from '../../src/policies/signature/replay-store.js';
import { replayCacheSchema } from '../../src/policies/signature/schema.js';
import { Problem } from '../../src/problems/problem.js';

/*
 * Version 2 hardening: the in-memory idempotency and replay stores are bounded, and a full store
 * refuses new work (503) rather than forgetting what it holds.
 */

/** The Problem `fn` throws (a failing assertion when it throws none). */
function refusal(fn: () => unknown): Problem {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(Problem);
    return err as Problem;
  }
  throw new Error('expected a refusal');
}

const response = (bytes: number): StoredResponse => ({
  status: 201,
  headers: ['content-type', 'text/plain'],
  body: Buffer.alloc(bytes, 'x').toString('base64'),
});

describe('MemoryIdempotencyStore caps', () => {
  const limits = (o: Partial<{ maxEntries: number; maxBytes: number; callerShare: number }>) =>
    idempotencyStoreSchema.parse(o);

  it('refuses a new key with 503 and Retry-After when maxEntries are held, never dropping a lock or a kept response', async () => {
    const clock = new ManualClock();
    const store = new MemoryIdempotencyStore(clock, limits({ maxEntries: 2, callerShare: 1 }));
    const a = store.begin('idem:{ip:1}:a', 'fa', 10_000);
    const b = store.begin('idem:{ip:1}:b', 'fb', 10_000);
    expect([a.state, b.state]).toEqual(['acquired', 'acquired']);
    await store.complete('idem:{ip:1}:a', (a as { owner: string }).owner, 'fa', response(10), 60_000);
    const full = refusal(() => store.begin('idem:{ip:1}:c', 'fc', 10_000));
    expect(full.slug).toBe('service-unavailable');
    // Until the lock of b expires (10 s), nothing can make room.
    expect(full.headers?.['retry-after']).toBe('10');
    // What it holds is intact: a is replayed, b is still in flight.
    expect(store.begin('idem:{ip:1}:a', 'fa', 10_000).state).toBe('done');
    expect(store.begin('idem:{ip:1}:b', 'fb', 10_000).state).toBe('locked');
    expect(store.size.entries).toBe(2);
  });

  it('sweeps expired entries to make room, and only those', async () => {
    const clock = new ManualClock();
    const store = new MemoryIdempotencyStore(clock, limits({ maxEntries: 2, callerShare: 1 }));
    const a = store.begin('k{1}:a', 'fa', 1000);
    store.begin('k{1}:b', 'fb', 60_000);
    await store.complete('k{1}:a', (a as { owner: string }).owner, 'fa', response(10), 5000);
    refusal(() => store.begin('k{1}:c', 'fc', 1000));
    clock.advance(5001); // a's record has expired; b's lock lives on
    expect(store.begin('k{1}:c', 'fc', 1000).state).toBe('acquired');
    expect(store.begin('k{1}:b', 'fb', 1000).state).toBe('locked');
    expect(store.size.entries).toBe(2);
  });

  it('keeps maxBytes: a response that does not fit is not kept (its key is released) and new keys wait', async () => {
    const clock = new ManualClock();
    const store = new MemoryIdempotencyStore(clock, limits({ maxBytes: 2000, callerShare: 1 }));
    const a = store.begin('k{1}:a', 'fa', 10_000);
    await store.complete('k{1}:a', (a as { owner: string }).owner, 'fa', response(900), 60_000); // ~1.3 KB
    const b = store.begin('k{1}:b', 'fb', 10_000);
    await store.complete('k{1}:b', (b as { owner: string }).owner, 'fb', response(900), 60_000);
    // b did not fit: not kept, and its key is free again (a retry runs rather than meets a lock).
    expect(store.begin('k{1}:b', 'fb', 10_000).state).toBe('acquired');
    expect(store.begin('k{1}:a', 'fa', 10_000).state).toBe('done');
    expect(store.size.bytes).toBeLessThanOrEqual(2000);
  });

  it('one caller holds at most callerShare of the store; others still get keys', () => {
    const clock = new ManualClock();
    const store = new MemoryIdempotencyStore(clock, limits({ maxEntries: 10, callerShare: 0.2 }));
    expect(store.begin('idem:{key_a}:1', 'f', 10_000).state).toBe('acquired');
    expect(store.begin('idem:{key_a}:2', 'f', 10_000).state).toBe('acquired');
    expect(refusal(() => store.begin('idem:{key_a}:3', 'f', 10_000)).slug).toBe('service-unavailable');
    expect(store.begin('idem:{key_b}:1', 'f', 10_000).state).toBe('acquired');
  });

  it('a lock released or expired gives its room back', async () => {
    const clock = new ManualClock();
    const store = new MemoryIdempotencyStore(clock, limits({ maxEntries: 1, callerShare: 1 }));
    const a = store.begin('k{1}:a', 'f', 1000);
    await store.release('k{1}:a', (a as { owner: string }).owner);
    expect(store.begin('k{1}:b', 'f', 1000).state).toBe('acquired');
    clock.advance(1001);
    expect(store.begin('k{1}:c', 'f', 1000).state).toBe('acquired');
    expect(store.size).toEqual({ entries: 1, bytes: expect.any(Number) });
  });
});

describe('MemoryReplayStore: partitioned per key, never forgetting a live signature', () => {
  const limits = (o: Partial<{ maxEntries: number; maxEntriesPerKey: number }>) => replayCacheSchema.parse(o);

  it('one key filling its share cannot make another key’s captured request replayable: it is refused alone', () => {
    const clock = new ManualClock();
    const store = new MemoryReplayStore(clock, limits({ maxEntries: 100, maxEntriesPerKey: 3 }));
    expect(store.first('victim', 'captured', 600_000)).toBe(true);
    for (let i = 0; i < 3; i++) expect(store.first('flooder', `sig-${i}`, 600_000)).toBe(true);
    const refused = refusal(() => store.first('flooder', 'sig-3', 600_000));
    expect(refused.slug).toBe('service-unavailable');
    expect(refused.headers?.['retry-after']).toBe('600');
    // The victim's request is still remembered: its replay is refused, its new requests pass.
    expect(store.first('victim', 'captured', 600_000)).toBe(false);
    expect(store.first('victim', 'next', 600_000)).toBe(true);
  });

  it('refuses (503, Retry-After) when the whole store is full, forgets nothing live, and takes signatures again once some expire', () => {
    const clock = new ManualClock();
    const store = new MemoryReplayStore(clock, limits({ maxEntries: 4, maxEntriesPerKey: 4 }));
    store.first('a', '1', 10_000);
    store.first('b', '1', 10_000);
    clock.advance(5000);
    store.first('c', '1', 10_000);
    store.first('d', '1', 10_000);
    const full = refusal(() => store.first('e', '1', 10_000));
    expect(full.headers?.['retry-after']).toBe('5');
    for (const k of ['a', 'b', 'c', 'd']) expect(store.first(k, '1', 10_000)).toBe(false);
    clock.advance(5000); // a's and b's signatures are past their window
    expect(store.first('e', '1', 10_000)).toBe(true);
    expect(store.first('c', '1', 10_000)).toBe(false);
    expect(store.size).toBe(3);
  });

  it('a signature past its window is accepted again and its room reused', () => {
    const clock = new ManualClock();
    const store = new MemoryReplayStore(clock, limits({ maxEntries: 10, maxEntriesPerKey: 1 }));
    expect(store.first('k', 's1', 1000)).toBe(true);
    refusal(() => store.first('k', 's2', 1000));
    clock.advance(1000);
    expect(store.first('k', 's2', 1000)).toBe(true); // s1's room, reused
    expect(store.size).toBe(1);
    expect(store.first('k', 's2', 1000)).toBe(false);
  });
});
