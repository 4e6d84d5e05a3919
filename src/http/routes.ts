import type { ErrorRequestHandler, Request, RequestHandler, Response, Router } from 'express';
import type { AuditService } from '../audit/audit-service.js';
import { actorOf, type OperatorRole, type Principal } from '../core/principal.js';
import { ProblemError, problems } from './problem.js';
import { requestMeta } from './request-context.js';

/**
 * Who may call a route. Deny by default: every route must say.
 * - 'public': anyone (health, discovery, token endpoint)
 * - 'client': an authenticated client (access token or mTLS certificate)
 * - a list of operator roles (admin always included implicitly)
 */
export type Access = 'public' | 'client' | readonly OperatorRole[];

export type HttpMethod = 'get' | 'post' | 'put' | 'patch' | 'delete';

export interface RouteDefinition {
  method: HttpMethod;
  /** OpenAPI-style path, e.g. /v1/secrets/{name}. */
  path: string;
  access: Access;
  handler: (req: Request, res: Response) => unknown;
}

/** A route as mounted: what the contract test compares with openapi.yaml. */
export interface MountedRoute {
  method: HttpMethod;
  path: string;
  access: Access;
}

/** The routes defineRoutes() put on a router, kept on that router (no module-wide list). */
const ROUTE_TABLE = Symbol('keywarden.routes');
type RouterWithTable = Router & { [ROUTE_TABLE]?: MountedRoute[] };

/** The routes defined on `router` with defineRoutes(). */
export function routesOf(router: Router): readonly MountedRoute[] {
  return (router as RouterWithTable)[ROUTE_TABLE] ?? [];
}

/** An authenticated caller refused by a route's access rule; the app records it (see recordAccessDenials). */
export class RouteAccessDenied extends ProblemError {
  constructor(
    /** e.g. "DELETE /v1/secrets/{name}" */
    readonly route: string,
    denial: ProblemError,
  ) {
    super(denial.status, denial.code, denial.title, denial.detail, denial.extra, denial.headers);
  }
}

/** `{name}` is one path segment; `{name+}` is the rest of the path, slashes included (Vault's KV paths). */
export function toExpressPath(path: string): string {
  return path.replace(/\{([A-Za-z0-9_]+)\+\}/g, '*$1').replace(/\{([A-Za-z0-9_]+)\}/g, ':$1');
}

export function authorize(principal: Principal | undefined, access: Access): void {
  if (access === 'public') return;
  if (!principal) throw problems.unauthenticated();
  if (access === 'client') {
    if (principal.kind !== 'client') throw problems.forbidden('this route is for clients (workloads), not operators');
    return;
  }
  if (principal.kind !== 'operator') throw problems.forbidden('this route is for operators, not clients');
  if (principal.role === 'admin' || access.includes(principal.role)) return;
  throw problems.forbidden(`role ${principal.role} may not call this route`);
}

export function defineRoutes(router: Router, routes: RouteDefinition[]): void {
  const table = ((router as RouterWithTable)[ROUTE_TABLE] ??= []);
  for (const route of routes) {
    const guard: RequestHandler = (req, _res, next) => {
      try {
        authorize(req.principal, route.access);
      } catch (err) {
        // an authenticated caller refused by role is a security-relevant event: the app records it
        if (req.principal && err instanceof ProblemError && err.status === 403) throw new RouteAccessDenied(`${route.method.toUpperCase()} ${route.path}`, err);
        throw err;
      }
      next();
    };
    router[route.method](toExpressPath(route.path), guard, route.handler as RequestHandler);
    if (!table.some((r) => r.method === route.method && r.path === route.path)) {
      table.push({ method: route.method, path: route.path, access: route.access });
    }
  }
}

/** Records every route access denial (authz.deny) before the error handler answers it. */
export function recordAccessDenials(audit: AuditService): ErrorRequestHandler {
  return async (err, req, _res, next) => {
    if (err instanceof RouteAccessDenied && req.principal) {
      await audit.record({
        actor: actorOf(req.principal),
        action: 'authz.deny',
        resource: { kind: 'route', name: err.route },
        outcome: 'deny',
        reason: err.detail ?? err.title,
        request: requestMeta(req),
      });
    }
    next(err);
  };
}

/** Mounts `child` on `parent` and lists the child's routes as the parent's (for routers that wrap others). */
export function mountRoutes(parent: Router, child: Router): void {
  parent.use(child);
  const table = ((parent as RouterWithTable)[ROUTE_TABLE] ??= []);
  for (const route of routesOf(child)) {
    if (!table.some((r) => r.method === route.method && r.path === route.path)) table.push(route);
  }
}
