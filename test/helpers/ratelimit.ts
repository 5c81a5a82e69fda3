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
