export const OPERATOR_ROLES = ['admin', 'writer', 'auditor', 'signer'] as const;
export type OperatorRole = (typeof OPERATOR_ROLES)[number];

/** What a signer credential may sign: signing key names and image globs. */
export interface SignerScope {
  keys: string[];
  images: string[];
}

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

export function actorOf(principal: Principal | undefined): { kind: string; id?: string; name?: string } {
  if (!principal) return { kind: 'anonymous' };
  if (principal.kind === 'client') return { kind: 'client', id: principal.clientId, name: principal.name };
  return { kind: principal.role === 'signer' && principal.via === 'token-exchange' ? 'ci' : 'operator', id: principal.id, name: principal.name };
}

/** Used in created_by/updated_by columns. */
export function principalLabel(principal: Principal): string {
  return principal.kind === 'client' ? `client:${principal.name}` : `${principal.role}:${principal.name}`;
}
