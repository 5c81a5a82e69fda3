import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isoTime } from '../../src/core/clock.js';

describe('isoTime', () => {
  it('formats as Date#toISOString does, for any time in any order (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: -8.64e15, max: 8.64e15, noNaN: true }), { minLength: 1, maxLength: 20 }),
        (times) => {
          for (const t of times) expect(isoTime(t)).toBe(new Date(t).toISOString());
        },
      ),
    );
  });

  it('keeps the second across calls and changes it at the boundary', () => {
    const base = Date.UTC(2026, 11, 2, 4, 5, 6);
    for (const t of [base, base + 7, base + 42, base + 999, base + 1000, base + 1001, base - 1, base + 0.9])
      expect(isoTime(t)).toBe(new Date(t).toISOString());
  });

  it('throws on an invalid time, as Date does', () => {
    expect(() => isoTime(Number.NaN)).toThrow(RangeError);
    expect(() => isoTime(9e15)).toThrow(RangeError);
  });
});
