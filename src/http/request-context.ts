import type { Request } from 'express';
import type { ClientPrincipal, Principal, RequestMeta } from '../core/principal.js';

export type { RequestMeta };

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      requestId: string;
      principal?: Principal;
    }
  }
}

export function requestMeta(req: Request): RequestMeta {
  return {
    requestId: req.requestId,
    // req.ip honours only the configured trusted proxies (KEYWARDEN_TRUST_PROXY); the socket
    // address is the fallback for a request whose socket has already gone
    sourceIp: req.ip ?? req.socket.remoteAddress ?? null,
    userAgent: (req.get('user-agent') ?? '').slice(0, 256) || null,
  };
}


/**
 * The caller of a route with access 'client'. `authorize` has already refused everyone else,
 * so a caller of another kind here is a wiring mistake, not a client error.
 */
export function clientPrincipal(req: Request): ClientPrincipal {
  const principal = req.principal;
  if (principal?.kind !== 'client') throw new Error('a client route was reached without an authenticated client');
  return principal;
}
