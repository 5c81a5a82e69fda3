/**
 * A bounded buffer between a producer that must never wait (the request path) and a store that
 * may be slow or down: `push` is synchronous underneath (it returns a promise the caller may
 * ignore), writes go out in batches, a failed write keeps its items for the next flush, and past
 * `maxItems` the oldest items are dropped (and counted) so memory stays bounded.
 *
 * Webhook deliveries use it; per-request usage counters can reuse it the same way (batch, write,
 * keep on failure).
 */
export class Outbox<T> {
  readonly #maxItems: number;
  readonly #batch: number;
  readonly #write: (batch: T[]) => Promise<void>;
  readonly #onDropped: ((count: number) => void) | undefined;
  readonly #onError: ((err: unknown) => void) | undefined;
  #items: Array<{ item: T; done: () => void }> = [];
  #flushing: Promise<void> | undefined;
  dropped = 0;

  constructor(options: {
    maxItems: number;
    /** Items per write. Default 100. */
    batch?: number;
    write: (batch: T[]) => Promise<void>;
    onDropped?: (count: number) => void;
    onError?: (err: unknown) => void;
  }) {
    this.#maxItems = options.maxItems;
    this.#batch = options.batch ?? 100;
    this.#write = options.write;
    this.#onDropped = options.onDropped;
    this.#onError = options.onError;
  }

  get size(): number {
    return this.#items.length;
  }

  /** Queues the items and starts a flush; resolves when they are written (or dropped). */
  push(items: readonly T[]): Promise<void> {
    const written = items.map(
      (item) =>
        new Promise<void>((resolve) => {
          this.#items.push({ item, done: resolve });
        }),
    );
    if (this.#items.length > this.#maxItems) {
      const excess = this.#items.splice(0, this.#items.length - this.#maxItems);
      for (const e of excess) e.done();
      this.dropped += excess.length;
      this.#onDropped?.(excess.length);
    }
    void this.flush();
    return Promise.all(written).then(() => undefined);
  }

  /** Writes everything queued, batch by batch; stops at the first failure (kept for the next flush). */
  flush(): Promise<void> {
    this.#flushing ??= this.#flush().finally(() => {
      this.#flushing = undefined;
    });
    return this.#flushing;
  }

  async #flush(): Promise<void> {
    while (this.#items.length > 0) {
      const batch = this.#items.slice(0, this.#batch);
      try {
        await this.#write(batch.map((e) => e.item));
      } catch (err) {
        this.#onError?.(err);
        return;
      }
      // Items dropped meanwhile (the buffer overflowed during the write) are no longer at the front.
      for (const e of batch) {
        const at = this.#items.indexOf(e);
        if (at !== -1) this.#items.splice(at, 1);
        e.done();
      }
    }
  }
}
