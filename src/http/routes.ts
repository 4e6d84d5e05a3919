import type { Request, RequestHandler, Response, Router } from 'express';
import type { OperatorRole, Principal } from '../identity/identity-types.js';
import { problems } from './problem.js';

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
    const guard: RequestHandler = (req, _res, next) => {
      authorize(req.principal, route.access);
      next();
    };
    router[route.method](toExpressPath(route.path), guard, route.handler as RequestHandler);
    if (!mountedRoutes.some((r) => r.method === route.method && r.path === route.path)) {
      mountedRoutes.push({ method: route.method, path: route.path, access: route.access });
    }
  }
}
