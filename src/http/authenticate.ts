import type { RequestHandler } from 'express';
import type { TLSSocket } from 'node:tls';
import type { AuditService } from '../audit/audit-service.js';
import type { ApiKeysService } from '../identity/api-keys-service.js';
import type { Principal } from '../core/principal.js';
import type { TokenService } from '../identity/token-service.js';
import { isUnauthenticated, problems } from './problem.js';
import { requestMeta } from './request-context.js';

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
}): RequestHandler {
  return async (req, _res, next) => {
    const header = req.headers.authorization;
    const vaultToken = deps.vaultTokenHeader ? req.headers['x-vault-token'] : undefined;
    if (typeof vaultToken === 'string' && vaultToken.startsWith('kwb_')) return next();
    if (typeof vaultToken === 'string' || (header && /^bearer /i.test(header))) {
      const token = typeof vaultToken === 'string' ? vaultToken.trim() : header!.slice(7).trim();
      if (!token || token.length > 8192) throw problems.unauthenticated('the bearer token is malformed', 'invalid_token');
      try {
        req.principal = token.startsWith('kw_') ? await deps.apiKeys.authenticate(token) : await deps.tokens.authenticate(token);
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
    const socket = req.socket as TLSSocket;
    if (deps.certificates && socket.encrypted) {
      req.principal = await deps.certificates(socket);
    }
    next();
  };
}
