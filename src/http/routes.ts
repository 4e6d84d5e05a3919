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

/**
 * The media types a route takes as its request body (type-is patterns, e.g. 'application/json',
 * 'application/*+json'), or 'any' for a route that reads whatever comes (the Vault-compatible API
 * parses every body as JSON, as Vault does). A request with a body of another type is refused with
 * 415 before the handler runs; a request without a body (none, or Content-Length: 0) always passes,
 * and the handler's own validation decides whether the body was optional.
 */
export type BodyTypes = readonly string[] | 'any';

/** JSON, the default for POST, PUT and PATCH (`application/merge-patch+json` and other `+json` types too). */
export const JSON_BODY: readonly string[] = ['application/json', 'application/*+json'];
/** HTML form encoding (the OAuth token endpoint, RFC 6749). */
export const FORM_BODY: readonly string[] = ['application/x-www-form-urlencoded'];

export interface RouteDefinition {
  method: HttpMethod;
  /** OpenAPI-style path, e.g. /v1/secrets/{name}. */
  path: string;
  access: Access;
  /** What the route takes as its body; JSON_BODY for post, put and patch unless it says, nothing checked for get and delete. */
  accepts?: BodyTypes;
  handler: (req: Request, res: Response) => unknown;
}

/** A route as mounted: what the contract test compares with openapi.yaml. */
export interface MountedRoute {
  method: HttpMethod;
  path: string;
  access: Access;
  /** The body types it takes (post, put and patch only). */
  accepts?: BodyTypes;
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

const BODY_METHODS: ReadonlySet<HttpMethod> = new Set(['post', 'put', 'patch']);

/** The body types a route takes: its own, the table's default, or JSON for post, put and patch. */
function acceptsOf(route: RouteDefinition, defaults: TableDefaults): BodyTypes | undefined {
  if (!BODY_METHODS.has(route.method)) return undefined;
  return route.accepts ?? defaults.accepts ?? JSON_BODY;
}

/** Whether the request carries a body: chunked, or a Content-Length above 0 (an empty POST has none). */
export function hasRequestBody(req: Request): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const length = req.headers['content-length'];
  return length !== undefined && Number(length) > 0;
}

/** Refuses a body of a type the route does not take: 415, naming what it takes (and Accept-Post/Accept-Patch). */
export function checkBodyType(req: Request, method: HttpMethod, accepts: BodyTypes | undefined): void {
  if (accepts === undefined || accepts === 'any' || !hasRequestBody(req)) return;
  if (req.is(accepts as string[])) return;
  throw problems.unsupportedMediaType(method, accepts, req.headers['content-type']);
}

/** Defaults for every route of one defineRoutes() call. */
export interface TableDefaults {
  /** The body types of its post, put and patch routes that do not say (e.g. 'any' for the Vault API). */
  accepts?: BodyTypes;
}

export function defineRoutes(router: Router, routes: RouteDefinition[], defaults: TableDefaults = {}): void {
  const table = ((router as RouterWithTable)[ROUTE_TABLE] ??= []);
  for (const route of routes) {
    const accepts = acceptsOf(route, defaults);
    const guard: RequestHandler = (req, _res, next) => {
      try {
        authorize(req.principal, route.access);
      } catch (err) {
        // an authenticated caller refused by role is a security-relevant event: the app records it
        if (req.principal && err instanceof ProblemError && err.status === 403) throw new RouteAccessDenied(`${route.method.toUpperCase()} ${route.path}`, err);
        throw err;
      }
      // after authorization: who may not call the route learns nothing about its body
      checkBodyType(req, route.method, accepts);
      next();
    };
    router[route.method](toExpressPath(route.path), guard, route.handler as RequestHandler);
    if (!table.some((r) => r.method === route.method && r.path === route.path)) {
      table.push({ method: route.method, path: route.path, access: route.access, ...(accepts ? { accepts } : {}) });
    }
  }
}

/** A path template as a regular expression matching what Express routes to it (case-insensitive, optional trailing slash). */
function pathRegex(template: string): RegExp {
  const source = template
    .split(/(\{[A-Za-z0-9_]+\+?\})/)
    .map((part) => (/^\{.+\+\}$/.test(part) ? '.+' : /^\{.+\}$/.test(part) ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}/?$`, 'i');
}

const regexCache = new Map<string, RegExp>();

/**
 * The methods the routes answer at `path`, as an Allow header lists them (upper case, HEAD
 * wherever GET is, sorted); empty when no route has the path.
 */
export function allowedMethods(routes: readonly MountedRoute[], path: string): string[] {
  const methods = new Set<string>();
  for (const route of routes) {
    let regex = regexCache.get(route.path);
    if (!regex) regexCache.set(route.path, (regex = pathRegex(route.path)));
    if (!regex.test(path)) continue;
    methods.add(route.method.toUpperCase());
    if (route.method === 'get') methods.add('HEAD');
  }
  return [...methods].sort();
}

/**
 * 405 with `Allow` for a path that routes answer, but not with this method; a path nothing
 * answers goes on to the 404. `routes` is read at each request, so it is always the mounted table.
 * Place it after the routers it speaks for.
 */
export function methodNotAllowed(routes: () => readonly MountedRoute[]): RequestHandler {
  return (req, _res, next) => {
    const allowed = allowedMethods(routes(), req.path);
    if (allowed.length === 0 || allowed.includes(req.method)) return next();
    next(problems.methodNotAllowed(req.method, req.path, allowed));
  };
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
