/** Parses a structured-field list like `"burst";q=20;w=1, "hourly";q=1000;w=3600`. */
export function parsePolicies(value: string | string[] | undefined): Array<Record<string, string | number>> {
  if (typeof value !== 'string') return [];
  return value.split(/,\s*/).map((item) => {
    const [name, ...params] = item.split(';');
    const out: Record<string, string | number> = { name: JSON.parse(name!) as string };
    for (const p of params) {
      const [k, v] = p.split('=');
      out[k!] = Number(v);
    }
    return out;
  });
}

/**
 * Fixed windows start at multiples of their length since the epoch, so a test that fills a
 * window and expects the next request to be refused fails when it straddles a window's end.
 * This waits (at most `needMs`) until at least `needMs` of the current window remain.
 */
export async function roomInWindow(windowSec: number, needMs: number): Promise<void> {
  const windowMs = windowSec * 1000;
  const left = windowMs - (Date.now() % windowMs);
  if (left >= needMs || needMs >= windowMs) return;
  await new Promise((resolve) => setTimeout(resolve, left + 5));
}

/**
 * `roomInWindow` for every fixed window of 30 s or more a config (object or YAML/JSON text)
 * names, so that a test starting a gateway on it does not straddle a window's end in its first
 * 10 s. Shorter windows are the test's own business (they are meant to roll over).
 */
export async function roomInConfigWindows(config: unknown): Promise<void> {
  const text = typeof config === 'string' ? config : JSON.stringify(config);
  const seconds = new Set<number>();
  for (const m of text.matchAll(/"?windowSec"?\s*:\s*([\d_]+)/g)) {
    const s = Number(m[1]!.replaceAll('_', ''));
    if (s >= 30) seconds.add(s);
  }
  for (const s of [...seconds].sort((a, b) => a - b)) await roomInWindow(s, 10_000);
}
