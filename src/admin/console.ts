import { fileURLToPath } from 'node:url';
import express, { type ErrorRequestHandler, type Router } from 'express';
import { Problem } from '../problems/problem.js';
import { catalog, catalogExtras, problemSlugs } from '../problems/catalog.js';
import { contextOf } from '../core/context.js';
import type { Logger } from '../observability/logger.js';

export interface ConsoleOptions {
  logger: Logger;
  /** `problems.typeBase` of the config in force. */
  typeBase: () => string;
  /** Whether any admin token is configured (without one the admin API is off). */
  adminApiOn: () => boolean;
}

/** `console/` at the package root (beside `dist/` and `src/`). */
function consoleDirectory(): string {
  return fileURLToPath(new URL('../../console/', import.meta.url));
}

/** The built-in default, which names no page that exists. */
import { DEFAULT_TYPE_BASE } from '../problems/schema.js';
/** Names reserved for examples and tests (RFC 2606, RFC 6761): no page lives there. */
const RESERVED_HOST = /(^|\.)(example(\.(com|net|org))?|test|invalid|localhost)$/i;

/**
 * Where the console links a problem slug: `problems.typeBase` + slug when the operator set it to a
 * URL that can exist, else the catalog the admin listener serves itself (`/console/problems#slug`,
 * the same text as docs/problems.md), which works offline and from an installed package.
 */
export function problemDocsBase(typeBase: string): string {
  if (typeBase === DEFAULT_TYPE_BASE) return 'problems#';
  const url = URL.canParse(typeBase) ? new URL(typeBase) : undefined;
  if (url === undefined || (url.protocol !== 'https:' && url.protocol !== 'http:')) return 'problems#';
  return RESERVED_HOST.test(url.hostname) ? 'problems#' : typeBase;
}

const escapeHtml = (text: string): string => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
/** The catalog's Markdown-ish text: only `code` spans. */
const inline = (text: string): string =>
  escapeHtml(text).replace(/`([^`]+)`/g, (_m, code: string) => `<code>${code}</code>`);

/** The problem catalog as a page of the console (built once: the catalog is constant). */
function catalogPage(): string {
  const rows = problemSlugs.map((slug) => {
    const e = catalog[slug];
    return `<tr id="${slug}"><th scope="row"><code>${slug}</code></th><td>${e.status}</td><td>${escapeHtml(e.title)}</td><td>${inline(e.when)}</td><td>${inline(catalogExtras[slug] ?? '')}</td></tr>`;
  });
  return `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>Problem catalog · Tollgate console</title>
    <link rel="stylesheet" href="style.css" />
    <link rel="icon" href="data:," />
  </head>
  <body>
    <header class="top"><h1>Tollgate <span class="muted">problem catalog</span></h1></header>
    <main id="main">
      <p><a href="./">Back to the console</a></p>
      <p class="hint">Every error is <code>application/problem+json</code> (RFC 9457) with <code>type</code> = <code>problems.typeBase</code> + slug. The same catalog is docs/problems.md.</p>
      <div class="table-wrap">
        <table id="problem-catalog">
          <caption class="sr-only">Problem types</caption>
          <thead><tr><th scope="col">Slug</th><th scope="col">Status</th><th scope="col">Title</th><th scope="col">When</th><th scope="col">Extensions / headers</th></tr></thead>
          <tbody>
            ${rows.join('\n            ')}
          </tbody>
        </table>
      </div>
    </main>
  </body>
</html>
`;
}

/**
 * The console's routes under `/console`: its static files, the problem catalog page, and
 * `GET /console/status`, which answers without a token with only what the sign-in page needs —
 * whether the admin API is on (any token configured) and where problem slugs link to.
 */
export function consoleRouter(options: ConsoleOptions): Router {
  const router = express.Router();
  const page = catalogPage();
  router.get('/status', (_req, res) => {
    res.setHeader('cache-control', 'no-store');
    res.json({
      adminApi: options.adminApiOn() ? 'on' : 'off',
      problemDocs: problemDocsBase(options.typeBase()),
    });
  });
  router.get('/problems', (_req, res) => {
    res.type('html').send(page);
  });
  router.use(express.static(consoleDirectory(), { index: 'index.html', fallthrough: false }));
  // A path `send` refuses (a malformed escape, NUL, `..`) or a file that is not there: the
  // client's mistake, answered 400 or 404 and logged at debug — never a 500 with a stack.
  const refused: ErrorRequestHandler = function consolePathRefused(err: unknown, req, _res, next) {
    const status = (err as { status?: unknown } | null)?.status;
    if (status !== 400 && status !== 403 && status !== 404) {
      next(err);
      return;
    }
    options.logger.debug({ err, request_id: contextOf(req)?.requestId }, 'console path refused');
    next(
      status === 404
        ? new Problem('not-found', { detail: 'No such console file.', cause: err })
        : new Problem('bad-request', { detail: 'The console path is not valid.', cause: err }),
    );
  };
  router.use(refused);
  return router;
}
