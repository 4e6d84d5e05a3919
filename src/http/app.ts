import express, { type Express, type Router } from 'express';
import type { Logger } from 'pino';
import { authenticate, type CertificateAuthenticator } from './authenticate.js';
import { errorHandler, notFoundHandler } from './error-handler.js';
import { requestLogger } from './logging.js';
import type { Metrics } from './metrics.js';
import { methodNotAllowed, recordAccessDenials, routesOf, type MountedRoute } from './routes.js';
import type { TrustProxy } from '../config.js';
import type { AuditService } from '../audit/audit-service.js';
import type { ApiKeysService } from '../identity/api-keys-service.js';
import type { TokenService } from '../identity/token-service.js';
import type { ConsoleSessionService } from '../console/console-session-service.js';

export interface AppDeps {
  logger: Logger;
  metrics: Metrics;
  maxBodyBytes: number;
  /** Never `true`: see parseTrustProxy in config.ts. */
  trustProxy: TrustProxy;
  apiKeys: ApiKeysService;
  tokens: TokenService;
  audit: AuditService;
  certificates?: CertificateAuthenticator;
  /** The auditors' console sessions (the `kw_console` cookie), and whether the broker serves TLS (Secure cookies). */
  consoleSessions?: ConsoleSessionService;
  consoleTls?: boolean;
  /** Routers that need no authentication step before them (ops, docs). */
  publicRouters: Router[];
  /** Domain routers; each route authorizes itself. */
  routers: Router[];
}

export interface BuiltApp {
  app: Express;
  /** Every route the app mounts with defineRoutes(), for the contract test. */
  routes: readonly MountedRoute[];
}

export function buildApp(deps: AppDeps): BuiltApp {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // a hop count or proxy list makes req.ip the address the last trusted proxy saw; trusting
  // every hop would let a client pick its own address from the left of X-Forwarded-For
  app.set('trust proxy', deps.trustProxy);
  app.set('query parser', 'simple');
  app.use(deps.metrics.middleware);
  app.use(requestLogger(deps.logger));
  app.use((req, res, next) => {
    req.requestId = String((req as { id?: unknown }).id);
    res.set('X-Content-Type-Options', 'nosniff');
    next();
  });
  for (const router of deps.publicRouters) app.use(router);
  app.use(express.json({ limit: deps.maxBodyBytes, strict: true, type: ['application/json', 'application/*+json'] }));
  app.use(express.urlencoded({ limit: '64kb', extended: false, parameterLimit: 50 }));
  app.use(authenticate(deps));
  for (const router of deps.routers) app.use(router);
  // a path some route answers, with another method: 405 and Allow, from the mounted route tables
  const mounted = [...deps.publicRouters, ...deps.routers].flatMap(routesOf);
  app.use(methodNotAllowed(() => mounted));
  app.use(notFoundHandler);
  app.use(recordAccessDenials(deps.audit));
  app.use(errorHandler(deps.logger));
  return { app, routes: mounted };
}
