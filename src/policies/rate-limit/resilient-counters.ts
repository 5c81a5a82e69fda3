import { Problem, isProblem } from '../../problems/problem.js';
import type { RedisHandle } from '../../shared/redis.js';
import type { ConsumeResult, CounterSpec, CounterStore } from './counters.js';
import { MemoryCounters, RedisCounters } from './counters.js';

/**
 * Redis counters with a plan for when Redis goes away (SPEC §7): rate limits fall back to
 * per-instance memory counters (rate-limiter-flexible's insurance idea) so traffic keeps flowing;
 * quota and `remaining` fail closed with 503 unless `redis.onError: open` (then they are not
 * enforced until Redis is back). Redis is used again as soon as it answers — no restart.
 * The outage is logged once by the Redis handle; `fallbacks` counts requests served by memory.
 */
export class ResilientCounters implements CounterStore {
  readonly #redis: RedisHandle;
  readonly #primary: RedisCounters;
  readonly #memory = new MemoryCounters();
  readonly #failOpen: boolean;
  fallbacks = 0;

  constructor(redis: RedisHandle, failOpen: boolean) {
    this.#redis = redis;
    this.#primary = new RedisCounters(redis);
    this.#primary.onSettleError = () => this.#redis.recordError();
    this.#failOpen = failOpen;
  }

  /** True while limits run on memory (Redis unavailable). */
  get fallbackActive(): boolean {
    return !this.#redis.available;
  }

  consume(specs: readonly CounterSpec[]): ConsumeResult | Promise<ConsumeResult> {
    if (!this.#redis.available) {
      // Still connecting at start: wait for the connection (bounded) rather than count in memory.
      if (this.#redis.state === 'connecting')
        return this.#redis.whenReady().then(
          () => this.consume(specs),
          () => this.#fallback(specs),
        );
      return this.#fallback(specs);
    }
    return this.#primary.consume(specs).catch((err: unknown) => {
      if (isProblem(err)) throw err;
      this.#redis.recordError();
      return this.#fallback(specs, err);
    });
  }

  #fallback(specs: readonly CounterSpec[], cause?: unknown): ConsumeResult | Promise<ConsumeResult> {
    this.fallbacks++;
    const owed = specs.some((s) => s.kind !== 'rate');
    if (owed && !this.#failOpen)
      throw new Problem('service-unavailable', {
        detail: 'Quota accounting is unavailable; try again shortly.',
        headers: { 'retry-after': '1' },
        cause,
      });
    const rateIdx: number[] = [];
    specs.forEach((s, i) => {
      if (s.kind === 'rate') rateIdx.push(i);
    });
    if (rateIdx.length === 0) return { ok: true, used: specs.map(() => 0) };
    const r = this.#memory.consume(rateIdx.map((i) => specs[i]!));
    const used = specs.map(() => 0);
    rateIdx.forEach((idx, k) => (used[idx] = r.used[k]!));
    return r.ok ? { ok: true, used } : { ok: false, failed: rateIdx[r.failed]!, used };
  }

  refund(specs: readonly CounterSpec[]): void | Promise<void> {
    if (!this.#redis.available) return; // nothing was charged in Redis while it was away
    return this.#primary.refund(specs).catch(() => {
      this.#redis.recordError();
    });
  }

  peek(specs: readonly CounterSpec[]): number[] | Promise<number[]> {
    if (!this.#redis.available) return this.#memory.peek(specs);
    return this.#primary.peek(specs);
  }

  settle(specs: readonly CounterSpec[]): void {
    if (this.#redis.available) {
      this.#primary.settle(specs);
      return;
    }
    // Redis is away: rate limits run on memory, so their meters settle there; a metered quota's
    // value is lost (quota was not enforced meanwhile, or the request was refused with 503).
    const rate = specs.filter((s) => s.kind === 'rate');
    if (rate.length > 0) this.#memory.settle(rate);
  }

  flush(): Promise<void> {
    return this.#primary.flush();
  }

  reset(key: string, tag: string): Promise<void> {
    return Promise.resolve(this.#primary.reset(key, tag)).then(() => this.#memory.reset(key));
  }
}

export { MemoryCounters, RedisCounters };
