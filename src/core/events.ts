/**
 * Events the gateway tells operators about (SPEC §11), as stages and key management raise them.
 * Raising one never blocks and never throws: the sink (the webhook dispatcher, `src/events/`)
 * queues it and delivers it off the request path.
 */
export type EventType =
  | 'quota.threshold'
  | 'quota.exhausted'
  | 'key.created'
  | 'key.updated'
  | 'key.rotated'
  | 'key.revoked'
  | 'key.expired';

export const EVENT_TYPES: readonly EventType[] = [
  'quota.threshold',
  'quota.exhausted',
  'key.created',
  'key.updated',
  'key.rotated',
  'key.revoked',
  'key.expired',
];

export interface RaisedEvent {
  type: EventType;
  data: Record<string, unknown>;
  /**
   * What deliveries are ordered by: events with the same key reach each receiver in the order
   * they were raised (a key id, or a quota holder).
   */
  orderKey: string;
  /**
   * Raised at most once per this key across instances, for as long as `onceTtlMs` (a quota
   * threshold: per holder, period and threshold).
   */
  once?: { key: string; ttlMs: number } | undefined;
}

/** Where events go. `raise` returns once the event is queued durably (or dropped); callers on the request path do not await it. */
export interface EventSink {
  raise(event: RaisedEvent): Promise<void>;
  /** The quota thresholds any webhook listens for (fractions of the limit, ascending); empty: none. */
  readonly quotaThresholds: readonly number[];
  /** Whether anyone listens for this type at all (nothing is built for events nobody takes). */
  wants(type: EventType): boolean;
}

/** A sink that drops everything (no webhooks configured). */
export const noEvents: EventSink = {
  raise: () => Promise.resolve(),
  quotaThresholds: [],
  wants: () => false,
};
