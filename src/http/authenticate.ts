import type { RequestHandler } from 'express';
import type { TLSSocket } from 'node:tls';
import type { AuditService } from '../audit/audit-service.js';
import type { ApiKeysService } from '../identity/api-keys-service.js';
import { actorOf, type Principal } from '../core/principal.js';
import type { TokenService } from '../identity/token-service.js';
import type { ConsoleSessionService } from '../console/console-session-service.js';
import { clearConsoleCookie, CSRF_HEADER, readConsoleCookie } from '../console/console-routes.js';
import { isUnauthenticated, problems } from './problem.js';
import { requestMeta } from './request-context.js';

const CONSOLE_LOGIN_PATH = '/v1/console/session';
/** The only writes a console session may make (with its CSRF token): verify the log, log out. */
const CONSOLE_COOKIE_WRITES: ReadonlySet<string> = new Set(['POST /v1/audit/verify', 'DELETE /v1/console/session']);

/** Resolves a client from a verified TLS peer certificate (mTLS), when configured. */
export type CertificateAuthenticator = (socket: TLSSocket) => Promise<Principal | undefined>;

/**
 * Establishes who is calling; authorization happens per route. A credential that is presented
 * but invalid is a 401 (and an audited failure) even on public routes, so mistakes are loud.
 */
export function authenticate(deps: {
  apiKeys: ApiKeysService;
  tokens: TokenService;
  audit: AuditService;
  certificates?: CertificateAuthenticator;
  /**
   * The Vault-compatible routes also take the token from `X-Vault-Token` (before `Authorization`,
   * as Vault does). A bootstrap token there (`kwb_`) is a wrapping token: it authenticates no one
   * and is left to `sys/wrapping/unwrap`, which reads the header itself.
   */
  vaultTokenHeader?: boolean;
  /** Console sessions: the `kw_console` cookie authenticates when no Authorization header is given. */
  consoleSessions?: ConsoleSessionService;
  /** Whether the broker serves TLS (the session cookie is then `Secure`). */
  consoleTls?: boolean;
}): RequestHandler {
  return async (req, res, next) => {
    const header = req.headers.authorization;
    const vaultToken = deps.vaultTokenHeader ? req.headers['x-vault-token'] : undefined;
    if (typeof vaultToken === 'string' && vaultToken.startsWith('kwb_')) return next();
    if (typeof vaultToken === 'string' || (header && /^bearer /i.test(header))) {
      const token = typeof vaultToken === 'string' ? vaultToken.trim() : header!.slice(7).trim();
      if (!token || token.length > 8192) throw problems.unauthenticated('the bearer token is malformed', 'invalid_token');
      try {
        req.principal = token.startsWith('kw_') ? await deps.apiKeys.authenticate(token, requestMeta(req)) : await deps.tokens.authenticate(token);
      } catch (err) {
        if (isUnauthenticated(err)) {
          await deps.audit.record({
            actor: { kind: token.startsWith('kw_') ? 'operator' : 'unknown' },
            action: 'auth.failure',
            outcome: 'deny',
            reason: err.code,
            details: { credential: await deps.audit.hmac(token), path: req.path },
            request: requestMeta(req),
          });
        }
        throw err;
      }
      return next();
    }
    const cookie = deps.consoleSessions && !header ? readConsoleCookie(req.headers.cookie) : undefined;
    // the login route takes an API key, whatever stale cookie the browser still sends
    if (cookie !== undefined && !(req.method === 'POST' && req.path === CONSOLE_LOGIN_PATH)) {
      let session;
      try {
        session = await deps.consoleSessions!.authenticate(cookie);
      } catch (err) {
        if (isUnauthenticated(err)) {
          clearConsoleCookie(req, res, deps.consoleTls ?? false);
          await deps.audit.record({
            actor: { kind: 'operator' },
            action: 'auth.failure',
            outcome: 'deny',
            reason: err.code,
            details: { credential: await deps.audit.hmac(cookie), path: req.path, via: 'console-session', why: err instanceof Error ? err.message : null },
            request: requestMeta(req),
          });
        }
        throw err;
      }
      // a session is the auditor's view whoever logged in: an admin's session must not reach
      // admin- or writer-only reads (secret values through /v1/secrets/{name}/content, say), so a
      // script running in the console's origin can never get more than an auditor can see
      req.principal = { ...session.principal, role: 'auditor' };
      res.locals.consoleSession = session;
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        // a cookie is sent by the browser whoever made the page: state changes need the session's
        // CSRF token, and a cookie may change nothing but the log's verification and the session
        let denial: ReturnType<typeof problems.forbidden> | undefined;
        if (!deps.consoleSessions!.csrfMatches(session, req.get(CSRF_HEADER))) {
          denial = problems.forbidden(`a console session request other than GET needs the session's ${CSRF_HEADER} header`, 'csrf_rejected');
        } else if (!CONSOLE_COOKIE_WRITES.has(`${req.method} ${req.path}`)) {
          denial = problems.forbidden('the console is read-only: this route takes an API key in the Authorization header, not a console session', 'console_read_only');
        }
        if (denial) {
          await deps.audit.record({
            actor: actorOf(session.principal),
            action: 'authz.deny',
            resource: { kind: 'route', name: `${req.method} ${req.path}`.slice(0, 512) },
            outcome: 'deny',
            reason: denial.code,
            details: { via: 'console-session' },
            request: requestMeta(req),
          });
          throw denial;
        }
      }
      return next();
    }
    const socket = req.socket as TLSSocket;
    if (deps.certificates && socket.encrypted) {
      req.principal = await deps.certificates(socket);
    }
    next();
  };
}
