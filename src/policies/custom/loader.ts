import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ConfigIssue } from '../../config/issues.js';
import { formatPath } from '../../config/issues.js';
import type { PoliciesConfig } from './schema.js';

/** The default exports of the config's policy modules, by policy name. */
export type PolicyModules = ReadonlyMap<string, unknown>;

const isPath = (spec: string) => spec.startsWith('./') || spec.startsWith('../') || isAbsolute(spec);

/**
 * Imports every `policies.<name>.module` of a config file: a path relative to the file, or a
 * package name resolved from the file's directory. A file module is imported afresh when it
 * changed (its mtime is in the URL), so a reload picks up an edited policy. What fails to load is
 * an issue at `policies.<name>.module`, with the reason.
 */
export async function loadPolicyModules(
  policies: PoliciesConfig,
  configFile: string,
): Promise<{ modules: Map<string, unknown>; issues: ConfigIssue[] }> {
  const modules = new Map<string, unknown>();
  const issues: ConfigIssue[] = [];
  const base = dirname(resolve(configFile));
  await Promise.all(
    Object.entries(policies).map(async ([name, entry]) => {
      const spec = entry.module;
      if (spec === undefined) return;
      const path = formatPath(['policies', name, 'module']);
      try {
        modules.set(name, await importDefault(spec, base, configFile));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        const reason = err instanceof Error ? err.message.split('\n')[0]! : String(err);
        issues.push({
          path,
          message: `cannot load ${JSON.stringify(spec)}${code ? ` (${code})` : ''}: ${reason}`,
        });
      }
    }),
  );
  return { modules, issues };
}

async function importDefault(spec: string, base: string, configFile: string): Promise<unknown> {
  let url: string;
  if (isPath(spec)) {
    const file = resolve(base, spec);
    const { mtimeMs } = await stat(file);
    url = `${pathToFileURL(file).href}?mtime=${mtimeMs}`;
  } else {
    // A package, found from the config file's directory (as Node would from a file there).
    let resolved: string;
    try {
      resolved = createRequire(resolve(configFile)).resolve(spec);
    } catch (err) {
      // An ESM-only package has no `require` condition: let import() resolve it from here.
      if ((err as NodeJS.ErrnoException).code !== 'ERR_PACKAGE_PATH_NOT_EXPORTED') throw err;
      resolved = spec;
    }
    url = resolved === spec ? spec : pathToFileURL(resolved).href;
  }
  const mod = (await import(url)) as { default?: unknown };
  if (!('default' in mod)) throw new Error('the module has no default export');
  return mod.default;
}
