import fs from 'node:fs';
import path from 'node:path';
import { Router, type RequestHandler } from 'express';
import type { KeyProvider } from '../crypto/key-provider.js';
import type { Database } from '../db/database.js';
import { classifyDatabaseError } from '../db/db-errors.js';
import { migrationsDirectory } from '../db/migrate.js';
import type { Metrics } from './metrics.js';
import { renderDocsPage } from './docs-page.js';
import { defineRoutes, type Access } from './routes.js';

export function openApiFile(): string {
  return path.join(path.dirname(migrationsDirectory()), 'openapi.yaml');
}

export interface OpsRoutesDeps {
  db: Database;
  keyProvider: KeyProvider;
  metrics: Metrics;
  /** KEYWARDEN_METRICS_AUTH: 'api-key' puts /metrics behind an admin or auditor API key. */
  metricsAuth: 'none' | 'api-key';
  /** Establishes req.principal; these routers run before the app-wide authentication step. */
  authenticate: RequestHandler;
  /** The last result of the background audit chain verification (never run inline here). */
  auditChain?: { status: 'pending' | 'ok' | 'broken' };
  /** The SQLite file, whose file system /readyz watches for free space. */
  sqliteFile?: string;
}

/**
 * /readyz must answer within 1 s even when a dependency hangs (a frozen database answers
 * nothing): each check that has not answered by then counts as `timeout`.
 */
export const READINESS_CHECK_TIMEOUT_MS = 800;

/** Below this much free space the SQLite file system counts as full: the next writes would fail. */
export const STORAGE_RESERVE_BYTES = 1024 * 1024;

/**
 * At most one probe in flight: callers that arrive while it runs share its result, so probes
 * stuck on a hung dependency do not pile up (each would hold a connection).
 */
function singleFlight(probe: () => Promise<unknown>): () => Promise<unknown> {
  let inFlight: Promise<unknown> | undefined;
  return () =>
    (inFlight ??= probe().finally(() => {
      inFlight = undefined;
    }));
}

/** 'ok', or why not: 'timeout' when no answer came within the deadline, else `onError`'s verdict. */
async function runCheck(probe: () => Promise<unknown>, onError: (err: unknown) => string): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), READINESS_CHECK_TIMEOUT_MS);
  });
  try {
    return await Promise.race([probe().then(() => 'ok', onError), deadline]);
  } finally {
    clearTimeout(timer);
  }
}

export interface Readiness {
  ready: boolean;
  /** Each check's answer: 'ok', or why not. */
  checks: Record<string, string>;
}

/** The /readyz verdict as a function, for every route that reports readiness (also Vault's sys/health). */
export function readinessProbe(deps: Pick<OpsRoutesDeps, 'db' | 'keyProvider' | 'auditChain' | 'sqliteFile'>): () => Promise<Readiness> {
  const probeDatabase = singleFlight(() => deps.db.ping());
  const probeKeyProvider = singleFlight(() => deps.keyProvider.check());
  const sqliteDir = deps.sqliteFile ? path.dirname(deps.sqliteFile) : undefined;
  /** Readiness checks by name, run in parallel; each answers 'ok' or a short reason. */
  const readinessChecks: Record<string, () => Promise<string>> = {
    database: () => runCheck(probeDatabase, (err) => (classifyDatabaseError(err)?.failure === 'timeout' ? 'timeout' : 'unavailable')),
    keyProvider: () => runCheck(probeKeyProvider, () => 'unavailable'),
    ...(sqliteDir && {
      storage: async () => {
        const fsStats = await fs.promises.statfs(sqliteDir);
        return fsStats.bavail * fsStats.bsize < STORAGE_RESERVE_BYTES ? 'full' : 'ok';
      },
    }),
  };
  return async () => {
    const names = Object.keys(readinessChecks);
    const results = await Promise.all(names.map((name) => readinessChecks[name]().catch(() => 'unavailable')));
    const checks: Record<string, string> = Object.fromEntries(names.map((name, i) => [name, results[i]]));
    // a broken chain refuses audited operations, so the instance must stop looking healthy
    if (deps.auditChain) checks.auditChain = deps.auditChain.status;
    return { ready: Object.values(checks).every((v) => v === 'ok'), checks };
  };
}

export function opsRoutes(deps: OpsRoutesDeps): Router {
  const router = Router();
  // Metrics name routes, status codes and process figures, never secrets or callers, but the
  // traffic pattern they show is still the operator's business when the port is reachable
  const metricsAccess: Access = deps.metricsAuth === 'api-key' ? ['admin', 'auditor'] : 'public';
  if (metricsAccess !== 'public') router.get('/metrics', deps.authenticate);
  const spec = fs.readFileSync(openApiFile(), 'utf8');
  const docsPage = renderDocsPage(spec);
  const readiness = readinessProbe(deps);
  defineRoutes(router, [
    { method: 'get', path: '/healthz', access: 'public', handler: (_req, res) => res.json({ status: 'ok' }) },
    {
      method: 'get',
      path: '/readyz',
      access: 'public',
      handler: async (_req, res) => {
        const { ready, checks } = await readiness();
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
