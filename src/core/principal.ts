export const OPERATOR_ROLES = ['admin', 'writer', 'auditor', 'signer'] as const;
export type OperatorRole = (typeof OPERATOR_ROLES)[number];

/** What a signer credential may sign: signing key names and image globs. */
export interface SignerScope {
  keys: string[];
  images: string[];
}

/** Who is calling, once authenticated: an operator (API key, CI signer) or a client (workload). */
export type Principal =
  | {
      kind: 'operator';
      role: OperatorRole;
      /** API key id, or the CI subject for token-exchange signers. */
      id: string;
      name: string;
      scope?: SignerScope;
      via: 'api-key' | 'token-exchange';
      jti?: string;
    }
  | {
      kind: 'client';
      /** Database id of the client row. */
      id: number;
      name: string;
      clientId: string;
      via: 'token' | 'mtls';
      jti?: string;
    };

/** An authenticated client (a workload), as client routes and the services behind them see their caller. */
export type ClientPrincipal = Extract<Principal, { kind: 'client' }>;

/** The audit record's actor for a principal (anonymous when nobody authenticated). */
export function actorOf(principal: Principal | undefined): { kind: string; id?: string; name?: string } {
  if (!principal) return { kind: 'anonymous' };
  if (principal.kind === 'client') return { kind: 'client', id: principal.clientId, name: principal.name };
  return { kind: principal.role === 'signer' && principal.via === 'token-exchange' ? 'ci' : 'operator', id: principal.id, name: principal.name };
}

/** Used in created_by/updated_by columns. */
export function principalLabel(principal: Principal): string {
  return principal.kind === 'client' ? `client:${principal.name}` : `${principal.role}:${principal.name}`;
}

/**
 * Where a request came from, for the audit record. The transport fills it in (see
 * http/request-context.ts); the domain only passes it on.
 */
export interface RequestMeta {
  requestId: string;
  sourceIp: string | null;
  userAgent: string | null;
}
