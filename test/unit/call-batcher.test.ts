import { afterEach, describe, expect, it, vi } from 'vitest';
import { CallBatcher } from '../../src/shared/call-batcher.js';

interface Op {
  n: number;
  lazy?: boolean;
  reject: (err: unknown) => void;
}

/** A batcher whose calls are held until the test lets them go, in the order they were sent. */
function harness(o: { maxBatch?: number; maxInFlight?: number; lazyDelayMs?: number } = {}) {
  const sent: number[][] = [];
  const pending: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  let idle = 0;
  const rejected: Array<[number, unknown]> = [];
  const b = new CallBatcher<Op>({
    send: (batch) => {
      sent.push(batch.map((op) => op.n));
      return new Promise<void>((resolve, reject) => pending.push({ resolve, reject }));
    },
    idle: () => {
      idle++;
    },
    maxBatch: o.maxBatch ?? 128,
    maxInFlight: o.maxInFlight ?? 1,
    lazyDelayMs: o.lazyDelayMs,
    urgent: o.lazyDelayMs === undefined ? undefined : (op) => op.lazy !== true,
  });
  const push = (n: number, lazy = false) => b.push({ n, lazy, reject: (err) => rejected.push([n, err]) });
  const turn = () => new Promise<void>((r) => setImmediate(r));
  return { b, sent, pending, push, turn, rejected, idleCount: () => idle };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('CallBatcher', () => {
  it('sends the operations of one event-loop turn in one call, and the ones that came while it was in flight in the next', async () => {
    const h = harness();
    h.push(1);
    h.push(2);
    h.push(3);
    expect(h.sent).toEqual([]);
    await h.turn();
    expect(h.sent).toEqual([[1, 2, 3]]);
    h.push(4);
    h.push(5);
    await h.turn();
    expect(h.sent).toEqual([[1, 2, 3]]); // one call in flight: 4 and 5 wait for it
    h.pending[0]!.resolve();
    await h.turn();
    await h.turn();
    expect(h.sent).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
    h.pending[1]!.resolve();
    await h.turn();
    await h.turn();
    expect(h.idleCount()).toBe(1);
  });

  it('holds at most maxBatch operations a call, and up to maxInFlight calls at once', async () => {
    const h = harness({ maxBatch: 2, maxInFlight: 2 });
    for (let n = 1; n <= 5; n++) h.push(n);
    await h.turn();
    await h.turn();
    expect(h.sent).toEqual([
      [1, 2],
      [3, 4],
    ]);
    h.pending[0]!.resolve();
    await h.turn();
    await h.turn();
    expect(h.sent).toEqual([[1, 2], [3, 4], [5]]);
    h.pending[1]!.resolve();
    h.pending[2]!.resolve();
    await h.turn();
    await h.turn();
    expect(h.idleCount()).toBe(1);
  });

  it('rejects every operation of a call that failed, and goes on with the next', async () => {
    const h = harness();
    h.push(1);
    h.push(2);
    await h.turn();
    h.push(3);
    const boom = new Error('redis away');
    h.pending[0]!.reject(boom);
    await h.turn();
    await h.turn();
    expect(h.rejected).toEqual([
      [1, boom],
      [2, boom],
    ]);
    expect(h.sent).toEqual([[1, 2], [3]]);
  });

  it('lets lazy operations ride on the next urgent one, or sends them alone after lazyDelayMs', async () => {
    vi.useFakeTimers();
    const h = harness({ lazyDelayMs: 5 });
    h.push(1, true);
    h.push(2, true);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.sent).toEqual([]); // lazy: no call of their own yet
    h.push(3);
    await vi.advanceTimersByTimeAsync(0);
    expect(h.sent).toEqual([[1, 2, 3]]); // they rode on the urgent one
    h.pending[0]!.resolve();
    await vi.advanceTimersByTimeAsync(0);
    h.push(4, true);
    await vi.advanceTimersByTimeAsync(4);
    expect(h.sent).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(h.sent).toEqual([[1, 2, 3], [4]]); // alone, after 5 ms
  });

  it('flush sends what waits and resolves when every call returned', async () => {
    const h = harness({ lazyDelayMs: 1000 });
    h.push(1, true);
    let done = false;
    const flushed = h.b.flush().then(() => {
      done = true;
    });
    expect(h.sent).toEqual([[1]]); // not left for the timer
    await h.turn();
    expect(done).toBe(false);
    h.pending[0]!.resolve();
    await flushed;
    expect(done).toBe(true);
  });
});
