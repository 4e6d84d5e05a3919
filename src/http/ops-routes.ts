import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import express, { Router } from 'express';
import type { Knex } from 'knex';
import type { KeyProvider } from '../crypto/key-provider.js';
import { migrationsDirectory } from '../db/migrate.js';
import type { Metrics } from './metrics.js';
import { defineRoutes } from './routes.js';

export function openApiFile(): string {
  return path.join(path.dirname(migrationsDirectory()), 'openapi.yaml');
}

const DOCS_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keywarden API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script></body></html>`;

export function opsRoutes(deps: { db: Knex; keyProvider: KeyProvider; metrics: Metrics }): Router {
  const router = Router();
  const spec = fs.readFileSync(openApiFile(), 'utf8');
  const require = createRequire(import.meta.url);
  const swaggerDir = path.dirname(require.resolve('swagger-ui-dist/package.json'));
  router.use('/docs/assets', express.static(swaggerDir, { index: false, fallthrough: false }));
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
      access: 'public',
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
        res.set('Content-Security-Policy', "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:").type('html').send(DOCS_PAGE);
      },
    },
  ]);
  // not an API route: the docs page's own script, kept out of the contract
  router.get('/docs/init.js', (_req, res) => {
    res.type('application/javascript').send("window.ui = SwaggerUIBundle({ url: '/openapi.yaml', dom_id: '#ui' });");
  });
  return router;
}
