import { readFileSync } from 'node:fs';

let version: string | undefined;

/** The package version (read once from package.json). */
export function packageVersion(): string {
  if (version === undefined) {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    version = pkg.version;
  }
  return version;
}
