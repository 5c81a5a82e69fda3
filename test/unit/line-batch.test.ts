import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { LINE_BATCH_CHARS, LineBatch } from '../../src/observability/logger.js';

/** A destination that records each write it is given, and whether `flush` reached it. */
function recorder(): {
  writes: string[];
  flushed: number;
  write(s: string): void;
  flush(cb: () => void): void;
} {
  return {
    writes: [],
    flushed: 0,
    write(s: string) {
      this.writes.push(s);
    },
    flush(cb: () => void) {
      this.flushed++;
      cb();
    },
  };
}

describe('LineBatch (the stdout logger’s line batch)', () => {
  it('hands on every line, in order, joined once a batch reaches LINE_BATCH_CHARS (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ minLength: 1, maxLength: 3000 }), { maxLength: 90 }), (lines) => {
        const dest = recorder();
        const batch = new LineBatch(dest);
        let given = '';
        let held = 0;
        for (const line of lines) {
          batch.write(line);
          given += line;
          held += line.length;
          // Nothing waits once the threshold is reached: what is held stays below it.
          if (held >= LINE_BATCH_CHARS) held = 0;
          expect(dest.writes.join('')).toBe(given.slice(0, given.length - held));
        }
        batch.drain();
        expect(dest.writes.join('')).toBe(lines.join(''));
      }),
    );
    // The threshold is reached in these runs, not only at the final drain.
    const dest = recorder();
    const batch = new LineBatch(dest);
    for (let i = 0; i * 1000 < LINE_BATCH_CHARS; i++) batch.write('x'.repeat(1000));
    expect(dest.writes).toHaveLength(1);
  });

  it('keeps pino’s own lines in order with the access lines, and logger.flush() drains the batch', async () => {
    const dest = recorder();
    const batch = new LineBatch(dest);
    const logger = pino({ base: undefined, timestamp: false }, batch);
    batch.write('{"msg":"request","n":1}\n');
    logger.warn('after the first request');
    batch.write('{"msg":"request","n":2}\n');
    expect(dest.writes).toEqual([]); // below the threshold: held, the warning too
    await new Promise<void>((resolve) => logger.flush(() => resolve()));
    expect(dest.flushed).toBe(1);
    expect(dest.writes).toEqual([
      '{"msg":"request","n":1}\n{"level":40,"msg":"after the first request"}\n{"msg":"request","n":2}\n',
    ]);
  });
});
