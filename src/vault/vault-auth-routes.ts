import type { TLSSocket } from 'node:tls';
import { Router, type Request } from 'express';
import { UnauthenticatedError } from '../core/errors.js';
import { requestMeta } from '../http/request-context.js';
import { defineRoutes } from '../http/routes.js';
import { VaultAuthService, type VaultAuthDeps } from './vault-auth-service.js';
import { vaultResponse } from './vault-response.js';

/** The token the caller presented, as authenticate() read it: X-Vault-Token first, then Bearer. */
function presentedToken(req: Request): string | undefined {
  const vaultToken = req.headers['x-vault-token'];
  if (typeof vaultToken === 'string') return vaultToken.trim();
  const header = req.headers.authorization;
  return header && /^bearer /i.test(header) ? header.slice(7).trim() : undefined;
}

function bodyOf(req: Request): Record<string, unknown> {
  return req.body && typeof req.body === 'object' && !Array.isArray(req.body) ? (req.body as Record<string, unknown>) : {};
}

/**
 * Vault's token, AppRole and cert auth endpoints, and response unwrapping (see VaultAuthService).
 * `logins` are mounted before the authentication step: like Vault's unauthenticated login paths
 * they ignore whatever token comes along (node-vault and hvac send their current one, expired or
 * revoked, with every request, the login that replaces it included). `tokens` read the caller's.
 */
export function vaultAuthRoutes(deps: VaultAuthDeps): { logins: Router; tokens: Router } {
  const service = new VaultAuthService(deps);
  const logins = Router();
  defineRoutes(logins, [
    {
      method: 'post',
      path: '/v1/auth/approle/login',
      access: 'public',
      handler: async (req, res) => {
        const body = bodyOf(req);
        const auth = await service.login(body.role_id, body.secret_id, requestMeta(req));
        res.set('Cache-Control', 'no-store').json(vaultResponse(req.requestId, { auth }));
      },
    },
    {
      // Vault's cert auth method: the credential is the TLS client certificate of the connection
      method: 'post',
      path: '/v1/auth/cert/login',
      access: 'public',
      handler: async (req, res) => {
        const socket = req.socket as TLSSocket;
        const auth = await service.certLogin(socket.encrypted ? socket : undefined, bodyOf(req).name, requestMeta(req));
        res.set('Cache-Control', 'no-store').json(vaultResponse(req.requestId, { auth }));
      },
    },
  ], { accepts: 'any' });
  const router = Router();
  defineRoutes(router, [
    {
      // any authenticated caller (client token or operator API key): hvac's is_authenticated() asks this
      method: 'get',
      path: '/v1/auth/token/lookup-self',
      access: 'public',
      handler: async (req, res) => {
        if (!req.principal) throw new UnauthenticatedError('missing client token', 'unauthenticated');
        const data = await service.lookupSelf(req.principal, presentedToken(req));
        res.set('Cache-Control', 'no-store').json(vaultResponse(req.requestId, { data }));
      },
    },
    {
      method: 'post',
      path: '/v1/auth/token/renew-self',
      access: 'client',
      handler: async (req, res) => {
        const { auth, warnings } = await service.renewSelf(req.principal!, presentedToken(req), bodyOf(req).increment, requestMeta(req));
        res.set('Cache-Control', 'no-store').json(vaultResponse(req.requestId, { auth, warnings }));
      },
    },
    {
      method: 'post',
      path: '/v1/auth/token/revoke-self',
      access: 'client',
      handler: async (req, res) => {
        await service.revokeSelf(req.principal!, presentedToken(req), requestMeta(req));
        res.status(204).end();
      },
    },
    {
      // the wrapping token is its own credential: in the body (hvac's unwrap(token)) or in X-Vault-Token
      method: 'post',
      path: '/v1/sys/wrapping/unwrap',
      access: 'public',
      handler: async (req, res) => {
        const fromBody = bodyOf(req).token;
        const header = req.headers['x-vault-token'];
        const wrapping = typeof fromBody === 'string' && fromBody ? fromBody : typeof header === 'string' && header.startsWith('kwb_') ? header : undefined;
        const auth = await service.unwrap(wrapping, requestMeta(req));
        res.set('Cache-Control', 'no-store').json(vaultResponse(req.requestId, { auth }));
      },
    },
  ], { accepts: 'any' }); // Vault reads every body as JSON, whatever its content type (vault-routes.ts parses it so)
  return { logins, tokens: router };
}
