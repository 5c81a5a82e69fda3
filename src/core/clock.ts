/**
 * The gateway's only source of time. Handlers never call `Date.now()` directly, so tests can
 * inject a clock and move it.
 */
export interface Clock {
  /** Wall-clock milliseconds since the epoch (for timestamps, windows, expiry). */
  now(): number;
  /** Monotonic milliseconds for measuring durations. */
  monotonic(): number;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
};

/** A clock for tests: starts at `start` and only moves when told to. */
export class ManualClock implements Clock {
  #now: number;
  #mono = 0;

  constructor(start = Date.UTC(2030, 0, 1)) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  monotonic(): number {
    return this.#mono;
  }

  advance(ms: number): void {
    this.#now += ms;
    this.#mono += ms;
  }

  set(epochMs: number): void {
    this.#now = epochMs;
  }
}
