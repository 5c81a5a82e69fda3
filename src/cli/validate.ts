import { loadConfigFile } from '../config/load.js';
import type { ConfigIssue } from '../config/issues.js';
import { ConfigError, createGateway } from '../gateway/create-gateway.js';
import { configPathFrom, parse, type CliIo } from './args.js';

/** `tollgate validate --config FILE`: every problem with its path; exit 1 if invalid. */
export async function validate(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { config: { type: 'string', short: 'c' } });
  const path = configPathFrom(values, io.env);
  const result = await loadConfigFile(path, io.env);
  // `FILE:LINE:COLUMN: path: message`, as compilers print it (editors and terminals link it).
  const where = (i: ConfigIssue) =>
    i.line !== undefined ? `${path}:${i.line}:${i.column ?? 1}: ` : `${path}: `;
  for (const w of result.warnings) io.err(`${where(w)}warning: ${w.path}: ${w.message}`);
  const refuse = (issues: readonly ConfigIssue[]) => {
    for (const issue of issues) io.err(`${where(issue)}${issue.path}: ${issue.message}`);
    io.err(`${path}: ${issues.length} problem${issues.length === 1 ? '' : 's'}`);
    return 1;
  };
  if (!result.ok) return refuse(result.issues);
  // Build it too (nothing listens, nothing connects): factories check what the schema cannot.
  let gateway;
  try {
    gateway = createGateway(result.config, { env: io.env, policies: result.modules });
  } catch (err) {
    if (err instanceof ConfigError) return refuse(err.issues);
    throw err;
  }
  await gateway.close();
  io.out(
    `${path}: valid (${result.config.routes.length} route${result.config.routes.length === 1 ? '' : 's'})`,
  );
  return 0;
}
