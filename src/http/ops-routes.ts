import fs from 'node:fs';
import path from 'node:path';
import { Router, type RequestHandler } from 'express';
import type { Knex } from 'knex';
import type { KeyProvider } from '../crypto/key-provider.js';
import { migrationsDirectory } from '../db/migrate.js';
import type { Metrics } from './metrics.js';
import { renderDocsPage } from './docs-page.js';
import { defineRoutes, type Access } from './routes.js';

export function openApiFile(): string {
  return path.join(path.dirname(migrationsDirectory()), 'openapi.yaml');
}

export interface OpsRoutesDeps {
  db: Knex;
  keyProvider: KeyProvider;
  metrics: Metrics;
  /** KEYWARDEN_METRICS_AUTH: 'api-key' puts /metrics behind an admin or auditor API key. */
  metricsAuth: 'none' | 'api-key';
  /** Establishes req.principal; these routers run before the app-wide authentication step. */
  authenticate: RequestHandler;
}

export function opsRoutes(deps: OpsRoutesDeps): Router {
  const router = Router();
  // Metrics name routes, status codes and process figures, never secrets or callers, but the
  // traffic pattern they show is still the operator's business when the port is reachable
  const metricsAccess: Access = deps.metricsAuth === 'api-key' ? ['admin', 'auditor'] : 'public';
  if (metricsAccess !== 'public') router.get('/metrics', deps.authenticate);
  const spec = fs.readFileSync(openApiFile(), 'utf8');
  const docsPage = renderDocsPage(spec);
  defineRoutes(router, [
    { method: 'get', path: '/healthz', access: 'public', handler: (_req, res) => res.json({ status: 'ok' }) },
    {
      method: 'get',
      path: '/readyz',
      access: 'public',
      handler: async (_req, res) => {
        const checks: Record<string, string> = {};
        try {
          await deps.db.raw('select 1');
          checks.database = 'ok';
        } catch {
          checks.database = 'unavailable';
        }
        try {
          await deps.keyProvider.check();
          checks.keyProvider = 'ok';
        } catch {
          checks.keyProvider = 'unavailable';
        }
        const ready = Object.values(checks).every((v) => v === 'ok');
        res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'not ready', checks });
      },
    },
    {
      method: 'get',
      path: '/metrics',
      access: metricsAccess,
      handler: async (_req, res) => {
        res.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
      },
    },
    { method: 'get', path: '/openapi.yaml', access: 'public', handler: (_req, res) => res.type('application/yaml').send(spec) },
    {
      method: 'get',
      path: '/docs',
      access: 'public',
      handler: (_req, res) => {
        // static HTML with one inline stylesheet: nothing to load, nothing to run
        res.set('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'").type('html').send(docsPage);
      },
    },
  ]);
  return router;
}
