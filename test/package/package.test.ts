import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

// The package as a consumer gets it: `npm pack`'s file list, then the tarball installed into a
// temp project (offline from the local npm cache where it can), its CLI run and its types checked.
const run = promisify(execFile);
const root = join(import.meta.dirname, '..', '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const STEP_MS = 180_000;
const temp = mkdtempSync(join(tmpdir(), 'tollgate-pack-'));
afterAll(() => rmSync(temp, { recursive: true, force: true }));

interface PackResult {
  filename: string;
  files: { path: string }[];
}

async function pack(args: string[]): Promise<PackResult> {
  // --ignore-scripts: `pretest` has just built dist/ (prepare would build it again).
  const { stdout } = await run(npm, ['pack', '--json', '--ignore-scripts', ...args], {
    cwd: root,
    timeout: STEP_MS,
    maxBuffer: 16 * 1024 * 1024,
  });
  return (JSON.parse(stdout) as PackResult[])[0]!;
}

/** Relative links of a Markdown file, resolved from the package root, anchors dropped. */
function relativeLinks(file: string): string[] {
  const text = readFileSync(join(root, file), 'utf8');
  const links: string[] = [];
  for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
    const target = m[1]!.split('#')[0]!;
    if (!target || /^[a-z]+:/i.test(target)) continue;
    links.push(normalize(join(dirname(file), target)).replace(/\/$/, ''));
  }
  return links;
}

describe('the npm package', () => {
  it('ships what the README and docs link to, and no sources, tests or source maps', async () => {
    const { files } = await pack(['--dry-run']);
    const paths = files.map((f) => f.path);
    for (const must of [
      'package.json',
      'README.md',
      'LICENSE',
      'CHANGELOG.md',
      'bin/tollgate.js',
      'dist/index.js',
      'dist/index.d.ts',
      'dist/cli/index.js',
      'console/index.html',
      'config/gateway.yaml',
      'ops/grafana/tollgate.json',
      'ops/prometheus/alerts.yml',
    ])
      expect(paths, must).toContain(must);
    const docs = readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md'));
    const linked = [...relativeLinks('README.md'), ...docs.flatMap((d) => relativeLinks(`docs/${d}`))];
    expect(linked.length).toBeGreaterThan(10);
    for (const link of new Set(linked)) {
      // Links into src/ point readers of the repository at the code; the package ships dist/.
      if (link.startsWith('src/')) continue;
      expect(
        paths.some((p) => p === link || p.startsWith(link + '/')),
        `${link} (linked from the docs) is in the package`,
      ).toBe(true);
    }
    for (const example of readdirSync(join(root, 'examples'))) {
      expect(paths, `examples/${example}/README.md`).toContain(`examples/${example}/README.md`);
    }
    expect(paths.filter((p) => p.endsWith('.map'))).toEqual([]);
    expect(paths.filter((p) => /\.test\.|^src\/|^test\/|^\.ci\//.test(p))).toEqual([]);
  });

  it(
    'installs from its tarball: `tollgate --version` runs and an ESM import type-checks',
    { timeout: 4 * STEP_MS },
    async () => {
      const { filename } = await pack(['--pack-destination', temp]);
      const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
        version: string;
        devDependencies: Record<string, string>;
      };
      writeFileSync(
        join(temp, 'package.json'),
        JSON.stringify({ name: 'consumer', private: true, type: 'module' }),
      );
      await run(
        npm,
        [
          'install',
          '--prefer-offline',
          '--no-audit',
          '--no-fund',
          join(temp, filename),
          // The consumer's own type packages, at the versions this repo is tested with.
          `@types/node@${pkg.devDependencies['@types/node']}`,
          `@types/express@${pkg.devDependencies['@types/express']}`,
        ],
        { cwd: temp, timeout: STEP_MS },
      );
      const version = await run(join(temp, 'node_modules', '.bin', 'tollgate'), ['--version'], {
        cwd: temp,
        timeout: 30_000,
      });
      expect(version.stdout.trim()).toBe(pkg.version);

      writeFileSync(
        join(temp, 'check.ts'),
        [
          "import express from 'express';",
          "import { createGateway, notFound, problemDetails, Problem, type Config } from 'tollgate';",
          'const app = express();',
          "const config: Config['routes'] | undefined = undefined;",
          "const gateway = createGateway({ routes: [{ id: 'demo', path: '/demo', mock: { body: { ok: true } } }] });",
          'app.use(gateway.app, notFound(), problemDetails());',
          "const problem: Problem = new Problem('not-found');",
          'void config; void problem;',
          '',
        ].join('\n'),
      );
      writeFileSync(
        join(temp, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            target: 'ES2023',
            module: 'NodeNext',
            moduleResolution: 'NodeNext',
            strict: true,
            noEmit: true,
            types: ['node'],
            // check.ts against tollgate's declarations; not every dependency's .d.ts (minutes on a
            // busy 2-core machine, and not this package's to fix).
            skipLibCheck: true,
          },
          files: ['check.ts'],
        }),
      );
      const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
      await run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: temp, timeout: STEP_MS }).catch(
        (err: Error & { stdout?: string }) => {
          throw new Error(`tsc failed in the consumer project:\n${err.stdout || err.message}`);
        },
      );
      const imported = await run(
        process.execPath,
        [
          '--input-type=module',
          '-e',
          "const m = await import('tollgate'); console.log(typeof m.createGateway)",
        ],
        { cwd: temp, timeout: 30_000 },
      );
      expect(imported.stdout.trim()).toBe('function');
    },
  );
});
