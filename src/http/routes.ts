import type { Request, RequestHandler, Response, Router } from 'express';
import type { AuditService } from '../audit/audit-service.js';
import { actorOf, type OperatorRole, type Principal } from '../identity/identity-types.js';
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

/** Every mounted route, so the contract test can compare them with openapi.yaml. */
export const mountedRoutes: Array<{ method: HttpMethod; path: string; access: Access }> = [];

export function toExpressPath(path: string): string {
  return path.replace(/\{([A-Za-z0-9_]+)\}/g, ':$1');
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
  for (const route of routes) {
    const guard: RequestHandler = async (req, _res, next) => {
      try {
        authorize(req.principal, route.access);
      } catch (err) {
        // an authenticated caller refused by role is a security-relevant event: record it
        const audit = req.app.locals.audit as AuditService | undefined;
        if (audit && req.principal && err instanceof ProblemError && err.status === 403) {
          await audit.record({
            actor: actorOf(req.principal),
            action: 'authz.deny',
            resource: { kind: 'route', name: `${route.method.toUpperCase()} ${route.path}` },
            outcome: 'deny',
            reason: err.detail ?? err.title,
            request: requestMeta(req),
          });
        }
        throw err;
      }
      next();
    };
    router[route.method](toExpressPath(route.path), guard, route.handler as RequestHandler);
    if (!mountedRoutes.some((r) => r.method === route.method && r.path === route.path)) {
      mountedRoutes.push({ method: route.method, path: route.path, access: route.access });
    }
  }
}
