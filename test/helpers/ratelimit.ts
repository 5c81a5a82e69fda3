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
