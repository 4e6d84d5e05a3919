import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Router, type Response } from 'express';
import { defineRoutes } from '../http/routes.js';
import { NotFoundError, UnavailableError } from '../core/errors.js';

/**
 * The console's Content-Security-Policy: only the broker's own files, no inline script or style,
 * no eval, no framing, violations reported to the broker.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  'report-uri /v1/console/csp-report',
].join('; ');

/** Headers on every /console response, files and errors alike. */
export const CONSOLE_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy': CONSOLE_CSP,
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

/**
 * Where the built console is: KEYWARDEN_CONSOLE_DIR, else `dist/console-app/` of the package
 * (two levels above this module, whether it runs from src/ under tsx or from dist/).
 */
export function defaultConsoleDir(): string {
  return fileURLToPath(new URL('../../dist/console-app/', import.meta.url));
}

/** A file of the built console: one path segment, no leading dot. */
const CONSOLE_FILE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/**
 * Serves the auditors' console (a static single-page app) at /console/ with Express's own static
 * file machinery: nothing on the runtime path beyond what the broker already has. Unknown files
 * are 404 problems (the app routes with the URL fragment, so it needs no fallback); a broker
 * whose console was not built answers 503 for it and runs on.
 */
export function consoleStaticRouter(options: { dir?: string } = {}): Router {
  const dir = path.resolve(options.dir ?? defaultConsoleDir());
  const router = Router();
  const notBuilt = () => new UnavailableError('console not built: run npm run build:console', { code: 'console_not_built', title: 'Console not built' });
  const built = () => fs.existsSync(path.join(dir, 'index.html'));
  const send = (res: Response, file: string, cacheControl: string) =>
    new Promise<void>((resolve, reject) => {
      res.set('Cache-Control', cacheControl);
      res.sendFile(file, { root: dir, dotfiles: 'deny', lastModified: false }, (err) => {
        if (!err) return resolve();
        if (res.headersSent) return reject(err);
        reject(built() ? new NotFoundError(`console file ${file}`, { code: 'route_not_found' }) : notBuilt());
      });
    });
  // every /console response, files and errors alike, carries the console's security headers
  router.use('/console', (_req, res, next) => {
    res.set(CONSOLE_SECURITY_HEADERS);
    next();
  });
  defineRoutes(router, [
    {
      method: 'get',
      path: '/console',
      access: 'public',
      handler: async (req, res) => {
        // /console (no slash): relative URLs in the page resolve against /console/
        if (!req.path.endsWith('/')) {
          res.status(301).location('/console/').end();
          return;
        }
        if (!built()) throw notBuilt();
        // index.html names the current bundle: never cached, so an upgrade takes effect at once
        await send(res, 'index.html', 'no-store');
      },
    },
    {
      method: 'get',
      path: '/console/{file}',
      access: 'public',
      handler: async (req, res) => {
        const file = String(req.params.file);
        if (!built()) throw notBuilt();
        if (!CONSOLE_FILE.test(file)) throw new NotFoundError(`console file ${file}`, { code: 'route_not_found' });
        await send(res, file, file === 'index.html' ? 'no-store' : 'no-cache');
      },
    },
  ]);
  return router;
}
