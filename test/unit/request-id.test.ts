import { describe, expect, it } from 'vitest';
import { mintRequestId, requestIdFrom, uuidV7Time } from '../../src/core/request-id.js';

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('request ids (SPEC §4)', () => {
  it('mints UUIDv7s of the arrival time, read back by uuidV7Time', () => {
    const at = Date.UTC(2026, 11, 3, 9, 30, 0, 123);
    const id = mintRequestId(at);
    expect(id).toMatch(V7);
    expect(uuidV7Time(id)).toBe(at);
    expect(id.slice(0, 13)).toBe(
      `${at.toString(16).padStart(12, '0').slice(0, 8)}-${at.toString(16).padStart(12, '0').slice(8)}`,
    );
    // Now by default.
    const before = Date.now();
    const now = uuidV7Time(mintRequestId())!;
    expect(now).toBeGreaterThanOrEqual(before);
    expect(now).toBeLessThanOrEqual(Date.now());
  });

  it('74 random bits: 20,000 ids of one millisecond are distinct, every random digit and the variant vary', () => {
    const at = Date.now();
    const ids = Array.from({ length: 20_000 }, () => mintRequestId(at));
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(id).toMatch(V7);
    // Each random position (all but the time, the dashes and the version digit) takes all 16
    // hex digits across the ids (the variant digit its four).
    const random = [15, 16, 17, 20, 21, 22, ...Array.from({ length: 12 }, (_, i) => 24 + i)];
    for (const p of random) expect(new Set(ids.map((id) => id[p])).size).toBe(16);
    expect(new Set(ids.map((id) => id[19])).size).toBe(4);
  });

  it('keeps a well-formed client id, mints one for anything else', () => {
    expect(requestIdFrom('client-id.1:a_b')).toBe('client-id.1:a_b');
    const at = Date.now();
    for (const bad of [undefined, '', 'has space', 'x'.repeat(129), ['a', 'b'], 'a\r\nb'])
      expect(uuidV7Time(requestIdFrom(bad, at))).toBe(at);
  });

  it('uuidV7Time reads only lower-case UUIDv7s', () => {
    const id = mintRequestId(1_000);
    expect(uuidV7Time(id)).toBe(1_000);
    for (const other of [
      id.toUpperCase(),
      id.replace(/^(.{14})7/, '$14'), // version 4
      `${id.slice(0, 19)}c${id.slice(20)}`, // another variant
      `${id}0`,
      id.slice(1),
      'client-id',
    ])
      expect(uuidV7Time(other)).toBeUndefined();
  });
});
