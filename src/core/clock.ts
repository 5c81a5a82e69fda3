/**
 * The gateway's only source of time. Handlers never call `Date.now()` directly, so tests can
 * inject a clock and move it.
 */
export interface Clock {
  /** Wall-clock milliseconds since the epoch (for timestamps, windows, expiry). */
  now(): number;
  /** Monotonic milliseconds for measuring durations. */
  monotonic(): number;
  /**
   * Runs `fn` once, `ms` milliseconds from now; returns the function that cancels it. Optional:
   * without it, `after()` below uses `setTimeout`. A `ManualClock` runs it when advanced past it.
   */
  after?(ms: number, fn: () => void): () => void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  after: systemAfter,
};

function systemAfter(ms: number, fn: () => void): () => void {
  const timer = setTimeout(fn, ms);
  return () => clearTimeout(timer);
}

/** `clock.after(ms, fn)`, or a real timer for a clock without one. Returns the canceller. */
export function after(clock: Clock, ms: number, fn: () => void): () => void {
  return clock.after !== undefined ? clock.after(ms, fn) : systemAfter(ms, fn);
}

interface ManualTimer {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
}

/** A clock for tests: starts at `start` and only moves when told to. */
export class ManualClock implements Clock {
  #now: number;
  #mono = 0;
  #seq = 0;
  #timers: ManualTimer[] = [];

  constructor(start = Date.UTC(2030, 0, 1)) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  monotonic(): number {
    return this.#mono;
  }

  /** A timer that fires when `advance` moves the monotonic time to or past it. */
  after(ms: number, fn: () => void): () => void {
    const timer: ManualTimer = { at: this.#mono + Math.max(0, ms), seq: this.#seq++, fn };
    this.#timers.push(timer);
    return () => {
      const i = this.#timers.indexOf(timer);
      if (i !== -1) this.#timers.splice(i, 1);
    };
  }

  /** Timers scheduled with `after` that have neither fired nor been cancelled. */
  get pendingTimers(): number {
    return this.#timers.length;
  }

  /** Moves both clocks forward, running due timers in order (each sees the time it was due at). */
  advance(ms: number): void {
    const target = this.#mono + ms;
    for (;;) {
      let next: ManualTimer | undefined;
      for (const t of this.#timers)
        if (
          t.at <= target &&
          (next === undefined || t.at < next.at || (t.at === next.at && t.seq < next.seq))
        )
          next = t;
      if (next === undefined) break;
      this.#timers.splice(this.#timers.indexOf(next), 1);
      this.#now += next.at - this.#mono;
      this.#mono = next.at;
      next.fn();
    }
    this.#now += target - this.#mono;
    this.#mono = target;
  }

  set(epochMs: number): void {
    this.#now = epochMs;
  }
}

let isoSecond = Number.NaN;
let isoPrefix = '';

/**
 * `new Date(ms).toISOString()`, with the part up to the seconds kept from the last call in the same
 * second: two timestamps are formatted per request (the audit record, the access line), and
 * Date's formatting cost ~0.5 µs each.
 */
export function isoTime(ms: number): string {
  const t = Math.trunc(ms); // as Date does
  const second = Math.floor(t / 1000);
  if (second !== isoSecond) {
    const iso = new Date(second * 1000).toISOString(); // throws on an invalid time, as Date does
    isoPrefix = iso.slice(0, -4); // `…T04:05:06.` (years past 9999 have a longer prefix)
    isoSecond = second;
  }
  const milli = t - second * 1000;
  return isoPrefix + (milli < 10 ? '00' : milli < 100 ? '0' : '') + String(milli) + 'Z';
}
