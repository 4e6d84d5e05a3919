import express, { Router } from 'express';
import { authenticate } from '../http/authenticate.js';
import { methodNotAllowed, recordAccessDenials, mountRoutes, routesOf } from '../http/routes.js';
import { vaultErrorHandler, vaultNotFound, vaultPrefixes } from '../http/vault-errors.js';
import type { Services } from '../broker.js';
import { vaultAuthRoutes } from './vault-auth-routes.js';
import { vaultSysRoutes, type HealthProbe } from './vault-sys-routes.js';

/**
 * The Vault-compatible API as one router, mounted before the app's own body parser and
 * authentication step (a "public" router in buildApp): it parses, authenticates (X-Vault-Token or
 * Bearer) and answers its errors in Vault's shape itself, for its own prefixes only; every other
 * path leaves it untouched (next('router')) for the native routes and their problem+json.
 * `kv` are the KV v2 routers (kv-routes.ts), mounted inside the same error mapper.
 */
export function vaultRouters(s: Services, deps: { health: HealthProbe; kv?: Router[] }): Router {
  const prefixes = vaultPrefixes(s.config.vaultKvMount);
  const router = Router();
  router.use((req, _res, next) => (prefixes.some((p) => req.path.startsWith(p)) ? next() : next('router')));
  // Vault parses every request body as JSON whatever its content type (curl -d sends form type)
  router.use(express.json({ limit: s.config.maxBodyBytes, strict: true, type: () => true }));
  // before authentication: like /healthz and /readyz, health and mount discovery ignore whatever
  // token comes along (clients send their token on every call, a stale one included)
  mountRoutes(router, vaultSysRoutes({ health: deps.health, kvMount: s.config.vaultKvMount }));
  const auth = vaultAuthRoutes({ auth: s.auth, tokens: s.tokens, clients: s.clients, workload: s.workload, audit: s.audit, clock: s.clock, accessTokenTtlSeconds: s.config.accessTokenTtlSeconds, accessTokenMaxTtlSeconds: s.config.accessTokenMaxTtlSeconds });
  // login paths ignore any token, as Vault's do: a client whose token expired must be able to log in again
  mountRoutes(router, auth.logins);
  router.use(authenticate({ apiKeys: s.apiKeys, tokens: s.tokens, audit: s.audit, vaultTokenHeader: true }));
  mountRoutes(router, auth.tokens);
  for (const kv of deps.kv ?? []) mountRoutes(router, kv);
  // Vault's 405 for an operation a path does not support, with Allow
  router.use(methodNotAllowed(() => routesOf(router)));
  router.use(vaultNotFound);
  router.use(recordAccessDenials(s.audit));
  router.use(vaultErrorHandler(s.logger));
  return router;
}
