import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { request } from 'undici';
import type { Clock } from '../core/clock.js';
import type { EventSink, EventType, RaisedEvent } from '../core/events.js';
import type { Logger } from '../observability/logger.js';
import type { WebhookOutcome } from '../observability/metrics.js';
import { Outbox } from './outbox.js';
import type { WebhookConfig } from './schema.js';
import { groupOf, type AttemptRecord, type Delivery, type DeliveryStore } from './store.js';

/** The most of a receiver's answer body that is read (the rest is discarded unread). */
export const RESPONSE_BODY_CAP = 4_096;
/** Deliveries queued at most (in memory, or in Redis across instances); past it the oldest are dropped. */
export const MAX_QUEUE_DEPTH = 10_000;

export interface DispatcherOptions {
  store: DeliveryStore;
  clock: Clock;
  logger: Logger;
  /** The webhooks of the config in force (re-read on every event and attempt: reload changes them). */
  webhooks: () => readonly WebhookConfig[];
  onOutcome?: (outcome: WebhookOutcome) => void;
  onDropped?: (count: number) => void;
  /** How often due deliveries are looked for (ms). Default 250. */
  pollMs?: number;
  /** Attempts in flight at once, per instance. Default 8. */
  concurrency?: number;
  /** How long a claimed delivery is this instance's before another may take it over (ms). Default: the longest `timeoutMs` + 5 s. */
  leaseMs?: number;
  /** Deliveries waiting to be written to the store, at most (the outbox). Default MAX_QUEUE_DEPTH. */
  maxOutbox?: number;
  /** [0, 1): the jitter source. */
  random?: () => number;
  /**
   * `false`: this instance only queues (durably, in the store) and never attempts a delivery — a
   * short-lived process such as the CLI, whose close would cut an attempt short and push it to
   * its first backoff; the running gateways deliver. Default true.
   */
  deliver?: boolean;
}

/** Backoff: `initial · 2^(attempts-1)`, capped, with jitter in [½, 1] of it. */
export function retryDelay(retry: WebhookConfig['retry'], attempts: number, random: number): number {
  const full = Math.min(retry.maxDelayMs, retry.initialDelayMs * 2 ** Math.min(attempts - 1, 40));
  return Math.max(1, Math.round(full / 2 + (full / 2) * random));
}

/**
 * Webhooks (SPEC §11): the event sink of the gateway. `raise` turns an event into one delivery per
 * receiver that takes it and queues them (never blocking: an outbox in memory, written to the
 * store in batches); a loop off the request path claims due deliveries, signs them per Standard
 * Webhooks and POSTs them, and reschedules failures with exponential backoff for `retry.maxAgeSec`.
 */
export class WebhookDispatcher implements EventSink {
  readonly #o: DispatcherOptions;
  readonly #store: DeliveryStore;
  readonly #clock: Clock;
  readonly #outbox: Outbox<Delivery>;
  readonly #inflight = new Set<Promise<void>>();
  readonly #concurrency: number;
  readonly #random: () => number;
  #timer: NodeJS.Timeout | undefined;
  #ticking: Promise<void> | undefined;
  #closed = false;
  /** Aborts attempts in flight on close (a hanging receiver must not hold a shutdown). */
  readonly #closing = new AbortController();
  #signers = new Map<string, Webhook>();
  /** Queue depth as the store last said (across instances with Redis). */
  depth = 0;

  constructor(options: DispatcherOptions) {
    this.#o = options;
    this.#store = options.store;
    this.#clock = options.clock;
    this.#concurrency = options.concurrency ?? 8;
    this.#random = options.random ?? Math.random;
    this.#outbox = new Outbox<Delivery>({
      maxItems: options.maxOutbox ?? MAX_QUEUE_DEPTH,
      write: async (batch) => {
        const { dropped, depth } = await this.#store.enqueue(batch, this.#clock.now());
        this.depth = depth;
        if (dropped > 0) options.onDropped?.(dropped);
        this.kick();
      },
      onDropped: (n) => options.onDropped?.(n),
      onError: (err) =>
        options.logger.debug({ err }, 'webhook queue write failed; kept for the next attempt'),
    });
    if (options.deliver !== false) this.#schedule();
  }

  get quotaThresholds(): readonly number[] {
    const all = new Set<number>();
    for (const w of this.#o.webhooks())
      if (w.events.includes('quota.threshold')) w.thresholds.forEach((t) => all.add(t));
    return [...all].sort((a, b) => a - b);
  }

  wants(type: EventType): boolean {
    return this.#o.webhooks().some((w) => w.events.includes(type));
  }

  /**
   * Queues the event for every receiver that takes it. Resolves once it is written to the store
   * (admin calls await this; the request path does not). Never rejects.
   */
  async raise(event: RaisedEvent): Promise<void> {
    try {
      const receivers = this.#o
        .webhooks()
        .filter(
          (w) =>
            w.events.includes(event.type) &&
            (event.type !== 'quota.threshold' || w.thresholds.includes(event.data.threshold as number)),
        );
      if (receivers.length === 0) return;
      const now = this.#clock.now();
      if (event.once !== undefined && !(await this.#store.once(event.once.key, event.once.ttlMs, now)))
        return;
      const eventId = `msg_${randomBytes(16).toString('base64url')}`;
      const timestamp = new Date(now).toISOString();
      const body = JSON.stringify({ type: event.type, timestamp, data: event.data });
      await this.#outbox.push(
        receivers.map((w) => ({
          id: `dlv_${randomBytes(12).toString('base64url')}`,
          eventId,
          type: event.type,
          url: w.url,
          body,
          group: groupOf(w.url, event.orderKey),
          createdAt: now,
          attempts: 0,
          lastStatus: null,
          lastError: null,
        })),
      );
    } catch (err) {
      this.#o.logger.warn({ err, event: event.type }, 'webhook event not queued');
    }
  }

  /** Recent attempts, newest first. */
  recent(limit: number): Promise<AttemptRecord[]> {
    return this.#store.recent(limit);
  }

  /** Looks for due deliveries now (after an enqueue) instead of at the next poll. */
  kick(): void {
    if (this.#closed || this.#o.deliver === false) return;
    void this.tick();
  }

  /** One round: write the outbox, claim what is due (up to the free slots), attempt it. */
  tick(): Promise<void> {
    this.#ticking ??= this.#tick().finally(() => {
      this.#ticking = undefined;
    });
    return this.#ticking;
  }

  async #tick(): Promise<void> {
    const free = this.#concurrency - this.#inflight.size;
    // No receivers, nothing to deliver (a delivery for a removed receiver waits for a reload).
    if (free <= 0 || this.#closed || this.#o.webhooks().length === 0) return;
    const now = this.#clock.now();
    let claimed: Delivery[];
    try {
      const got = await this.#store.claim(now, free, now + this.#leaseMs());
      claimed = got.deliveries;
      this.depth = got.depth;
    } catch (err) {
      this.#o.logger.debug({ err }, 'webhook claim failed');
      return;
    }
    for (const d of claimed) {
      const p: Promise<void> = this.#attempt(d)
        .catch((err: unknown) => this.#o.logger.warn({ err, delivery: d.id }, 'webhook attempt failed'))
        .finally(() => {
          this.#inflight.delete(p);
          // A finished head may have made its group's next one due.
          this.kick();
        });
      this.#inflight.add(p);
    }
  }

  #leaseMs(): number {
    if (this.#o.leaseMs !== undefined) return this.#o.leaseMs;
    // An attempt ends by its timeout at the latest: a lease a little longer is never cut short.
    return Math.max(0, ...this.#o.webhooks().map((w) => w.timeoutMs)) + 5_000;
  }

  #signer(secret: string): Webhook {
    let signer = this.#signers.get(secret);
    if (signer === undefined) {
      if (this.#signers.size > 100) this.#signers.clear();
      signer = new Webhook(secret);
      this.#signers.set(secret, signer);
    }
    return signer;
  }

  async #attempt(d: Delivery): Promise<void> {
    const hook = this.#o.webhooks().find((w) => w.url === d.url);
    const record = (
      status: number | null,
      error: string | null,
      outcome: WebhookOutcome,
      next: number | null,
    ) => {
      this.#o.onOutcome?.(outcome);
      const attempt: AttemptRecord = {
        time: new Date(this.#clock.now()).toISOString(),
        delivery_id: d.id,
        event_id: d.eventId,
        type: d.type,
        url: d.url,
        status,
        error,
        attempts: d.attempts,
        outcome,
        next_retry_at: next === null ? null : new Date(next).toISOString(),
      };
      return attempt;
    };
    if (hook === undefined) {
      // Its receiver was removed from the config: nobody to send it to.
      await this.#store.finish(
        d,
        record(null, 'receiver no longer configured', 'dropped', null),
        this.#clock.now(),
      );
      return;
    }
    d.attempts++;
    const sentAt = this.#clock.now();
    const { status, error } = await this.#send(hook, d, sentAt);
    d.lastStatus = status;
    d.lastError = error;
    const now = this.#clock.now();
    if (status !== null && status >= 200 && status < 300) {
      await this.#store.finish(d, record(status, null, 'delivered', null), now);
      return;
    }
    const deadline = d.createdAt + hook.retry.maxAgeSec * 1000;
    if (now >= deadline) {
      this.#o.logger.warn({ delivery: d.id, url: d.url, attempts: d.attempts }, 'webhook delivery given up');
      await this.#store.finish(d, record(status, error, 'failed', null), now);
      return;
    }
    // The last attempt falls on the deadline itself: attempts cover the whole retry.maxAgeSec.
    const nextAt = Math.min(deadline, now + retryDelay(hook.retry, d.attempts, this.#random()));
    await this.#store.retry(d, record(status, error, 'retry', nextAt), nextAt);
  }

  /** One POST: the status, or why there was none. Redirects are not followed; the body is read up to a cap. */
  async #send(
    hook: WebhookConfig,
    d: Delivery,
    now: number,
  ): Promise<{ status: number | null; error: string | null }> {
    const timestamp = new Date(now);
    const signature = this.#signer(hook.secret).sign(d.eventId, timestamp, d.body);
    const timeout = AbortSignal.timeout(hook.timeoutMs);
    const signal = AbortSignal.any([timeout, this.#closing.signal]);
    try {
      const res = await request(d.url, {
        method: 'POST',
        body: d.body,
        headers: {
          'content-type': 'application/json',
          'user-agent': 'tollgate-webhooks',
          'webhook-id': d.eventId,
          'webhook-timestamp': String(Math.floor(now / 1000)),
          'webhook-signature': signature,
        },
        signal,
        headersTimeout: hook.timeoutMs,
        bodyTimeout: hook.timeoutMs,
      });
      let read = 0;
      try {
        for await (const chunk of res.body) {
          read += (chunk as Buffer).length;
          if (read > RESPONSE_BODY_CAP) break;
        }
      } finally {
        // Past the cap (or on a read error) the rest is not waited for.
        if (read > RESPONSE_BODY_CAP || !res.body.readableEnded) res.body.destroy();
      }
      return { status: res.statusCode, error: null };
    } catch (err) {
      const e = err as { code?: unknown; name?: unknown };
      const code = typeof e.code === 'string' ? e.code : typeof e.name === 'string' ? e.name : 'error';
      return {
        status: null,
        error: timeout.aborted ? 'timeout' : this.#closing.signal.aborted ? 'shutdown' : code,
      };
    }
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      void this.#outbox.flush();
      void this.tick().finally(() => this.#schedule());
    }, this.#o.pollMs ?? 250);
    this.#timer.unref();
  }

  /** Writes what is still in the outbox, lets attempts in flight end (bounded), stops the loop. */
  async close(timeoutMs = 5_000): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
      timer.unref();
    });
    const flushed = this.#outbox.flush();
    // Attempts in flight end now, each rescheduled as a failed attempt: another instance (or
    // the next start) retries them without waiting for a lease to run out.
    this.#closing.abort();
    await Promise.race([Promise.all([flushed, ...this.#inflight]).then(() => undefined), bound]);
    clearTimeout(timer);
  }
}
