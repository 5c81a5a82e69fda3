/** An operation waiting for a batched call: told when the call failed. */
export interface Batched {
  reject(err: unknown): void;
}

export interface CallBatcherOptions<Op extends Batched> {
  /** Sends one batch (one script call) and settles its operations; a rejection rejects them all. */
  send: (batch: Op[]) => Promise<void>;
  /** Nothing waits and nothing is in flight (the owner may forget this batcher). */
  idle: () => void;
  /** The most operations one call carries. */
  maxBatch: number;
  /** The most calls in flight at once; past it, operations wait for one to return. */
  maxInFlight: number;
  /**
   * Operations that can wait (`urgent` false) go out with the next urgent one, or alone after
   * this many ms. Unset: every operation is urgent.
   */
  lazyDelayMs?: number | undefined;
  urgent?: ((op: Op) => boolean) | undefined;
}

/**
 * Operations coalesced into calls: an urgent one waits for the end of the current event-loop turn
 * (`setImmediate`) and, while `maxInFlight` calls are in flight, for one to return; then every
 * operation waiting goes in one call (at most `maxBatch`). The added wait is bounded by one round
 * trip. Lazy operations ride on the next call, or go alone after `lazyDelayMs`. An idle owner sends
 * each operation on its own at once; a busy one sends one call for many.
 */
export class CallBatcher<Op extends Batched> {
  readonly #o: CallBatcherOptions<Op>;
  #queue: Op[] = [];
  #urgent = false;
  #scheduled = false;
  readonly #inFlight = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | undefined;

  constructor(options: CallBatcherOptions<Op>) {
    this.#o = options;
  }

  push(op: Op): void {
    this.#queue.push(op);
    if (this.#o.urgent === undefined || this.#o.urgent(op)) this.#urgent = true;
    this.#kick();
  }

  #kick(): void {
    if (this.#queue.length === 0) return;
    if (this.#urgent || this.#o.lazyDelayMs === undefined || this.#queue.length >= this.#o.maxBatch) {
      if (this.#scheduled || this.#inFlight.size >= this.#o.maxInFlight) return;
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.#run();
      });
    } else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#run();
      }, this.#o.lazyDelayMs);
      this.#timer.unref();
    }
  }

  #run(): void {
    if (this.#inFlight.size >= this.#o.maxInFlight) return;
    if (this.#queue.length === 0) {
      if (this.#inFlight.size === 0) this.#o.idle();
      return;
    }
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    const max = this.#o.maxBatch;
    const batch = this.#queue.length <= max ? this.#queue : this.#queue.slice(0, max);
    this.#queue = batch === this.#queue ? [] : this.#queue.slice(max);
    const urgent = this.#o.urgent;
    this.#urgent = this.#queue.length > 0 && (urgent === undefined || this.#queue.some(urgent));
    const call: Promise<void> = this.#o
      .send(batch)
      .catch((err: unknown) => {
        for (const op of batch) op.reject(err);
      })
      .finally(() => {
        this.#inFlight.delete(call);
        if (this.#queue.length > 0) this.#kick();
        else if (this.#inFlight.size === 0) this.#o.idle();
      });
    this.#inFlight.add(call);
    // More than one call's worth waited: the rest goes next turn if another call may be in flight.
    if (this.#queue.length > 0) this.#kick();
  }

  /** Sends what waits now and waits for it (shutdown). */
  async flush(): Promise<void> {
    while (this.#inFlight.size > 0 || this.#queue.length > 0) {
      this.#run();
      await Promise.all([...this.#inFlight]);
    }
  }
}
