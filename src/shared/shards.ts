import keySlot from 'cluster-key-slot';

/** Redis Cluster's slot count. */
const SLOTS = 16_384;

/**
 * `n` hash tags whose slots are spread evenly over Redis Cluster's slot space: tag `i` falls in
 * the `i`-th of `n` equal slot ranges. A cluster gives each master contiguous slot ranges, so
 * writes spread over these tags spread over the masters in proportion to their share of slots,
 * however few tags there are (hashing `n` arbitrary names would not: 16 random tags land 7/5/4 on
 * three masters as easily as 6/5/5). Deterministic: every gateway computes the same tags.
 */
export function shardTags(prefix: string, n: number): string[] {
  const tags: string[] = [];
  for (let i = 0; i < n; i++) {
    const from = Math.floor((i * SLOTS) / n);
    const to = Math.floor(((i + 1) * SLOTS) / n);
    for (let j = 0; ; j++) {
      const tag = `${prefix}${i}-${j}`;
      const slot = keySlot(tag);
      if (slot >= from && slot < to) {
        tags.push(tag);
        break;
      }
    }
  }
  return tags;
}

/** Which of `n` shards a value belongs to: its own slot, folded (stable across processes). */
export function shardOf(value: string, n: number): number {
  return n === 1 ? 0 : keySlot(value) % n;
}
