/** A quota period: calendar UTC day or month, or the key's whole life. */
import type { QuotaPeriod } from '../../core/identity.js';

export type { QuotaPeriod };

export interface PeriodWindow {
  /** Names the period in counter keys: `d20301231`, `m203012`, `l`. */
  id: string;
  /** Epoch ms when the period ends (the quota resets), or null for lifetime. */
  endsAt: number | null;
}

const pad = (n: number) => String(n).padStart(2, '0');

/** The period `now` falls in (UTC calendar boundaries). */
export function periodOf(period: QuotaPeriod, now: number): PeriodWindow {
  if (period === 'lifetime') return { id: 'l', endsAt: null };
  const d = new Date(now);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth();
  if (period === 'month') return { id: `m${y}${pad(m + 1)}`, endsAt: Date.UTC(y, m + 1, 1) };
  const day = d.getUTCDate();
  return { id: `d${y}${pad(m + 1)}${pad(day)}`, endsAt: Date.UTC(y, m, day + 1) };
}
