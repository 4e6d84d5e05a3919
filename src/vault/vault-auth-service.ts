import type { TLSSocket } from 'node:tls';
import type { AuditService } from '../audit/audit-service.js';
import { iso, type Clock } from '../core/clock.js';
import { InvalidInputError, OAuthError, UnauthenticatedError } from '../core/errors.js';
import type { Principal, RequestMeta } from '../core/principal.js';
import type { AuthService } from '../identity/auth-service.js';
import type { ClientsService } from '../identity/clients-service.js';
import { TokenService } from '../identity/token-service.js';
import { BOOTSTRAP_GRANT, type WorkloadIdentityService } from '../identity/workload-identity-service.js';

export interface VaultAuthDeps {
  auth: AuthService;
  tokens: TokenService;
  clients: ClientsService;
  workload: WorkloadIdentityService;
  audit: AuditService;
  clock: Clock;
  accessTokenTtlSeconds: number;
  accessTokenMaxTtlSeconds: number;
}

/** The grant type cert logins are audited under (auth.token.issue, auth.failure). */
export const CERT_LOGIN_GRANT = 'vault:cert';

/** Vault's `auth` block of a login, renewal or unwrapped login response. */
export interface VaultAuthBlock {
  client_token: string;
  /** The token's jti: what Keywarden revokes and audits tokens by. */
  accessor: string;
  policies: string[];
  token_policies: string[];
  identity_policies: string[];
  metadata: Record<string, string>;
  lease_duration: number;
  renewable: boolean;
  entity_id: string;
  token_type: 'service';
  orphan: boolean;
  mfa_requirement: null;
  num_uses: number;
}

/** The claims of a client access token this broker signed (its signature is checked before it gets here). */
interface ClientTokenClaims {
  jti: string;
  iat: number;
  exp: number;
  kw: { t: 'client'; id: number; cid: string; n: string; o?: number; c?: string };
}

/**
 * Vault's token and AppRole auth over Keywarden's identities: a Vault token is a Keywarden client
 * access token, an AppRole is a client (role_id = client id, secret_id = client secret), a policy
 * is a group, a wrapping token is a bootstrap token. Logins and unwraps go through AuthService's
 * token endpoint logic, so rate limiting, replay detection and auditing are the native ones.
 */
export class VaultAuthService {
  constructor(private readonly deps: VaultAuthDeps) {}

  async login(roleId: unknown, secretId: unknown, meta: RequestMeta): Promise<VaultAuthBlock> {
    if (typeof roleId !== 'string' || !roleId) throw new InvalidInputError('missing role_id', { code: 'invalid_request' });
    if (typeof secretId !== 'string' || !secretId) throw new InvalidInputError('missing secret_id', { code: 'invalid_request' });
    let token: string;
    try {
      token = (await this.deps.auth.token({ grant_type: 'client_credentials', client_id: roleId, client_secret: secretId }, meta)).access_token;
    } catch (err) {
      // Vault's answer to a wrong role or secret is a 400 with this text (hvac: InvalidRequest)
      if (err instanceof OAuthError) throw new InvalidInputError('invalid role or secret ID', { code: err.code });
      throw err;
    }
    return this.describe(token);
  }

  /**
   * Vault's `cert` auth method over the native mTLS authentication: the verified TLS client
   * certificate is mapped to a client as on the native API (SPIFFE URI SAN, else CN, against the
   * client's certIdentity), and the client gets an access token, audited as auth.token.issue
   * (grant `vault:cert`). `name` (Vault's certificate role) must then be the client's name. Every
   * refusal is Vault's 400 with Vault's text; the audit log (auth.failure) has the reason.
   */
  async certLogin(socket: TLSSocket | undefined, name: unknown, meta: RequestMeta): Promise<VaultAuthBlock> {
    const refuse = async (reason: string, actor: { kind: string; id?: string; name?: string } = { kind: 'unknown' }) => {
      await this.deps.auth.recordFailure(meta, actor, reason, { grantType: CERT_LOGIN_GRANT });
      return new InvalidInputError('invalid certificate or no client certificate supplied', { code: 'invalid_client_certificate' });
    };
    if (name !== undefined && name !== null && name !== '' && typeof name !== 'string') throw new InvalidInputError('name must be a string', { code: 'invalid_request' });
    if (!socket) throw await refuse('no client certificate (not a TLS connection)');
    let principal: Principal | undefined;
    try {
      principal = await this.deps.workload.authenticateCertificate(socket);
    } catch (err) {
      if (err instanceof UnauthenticatedError) throw await refuse(err.code);
      throw err;
    }
    if (!principal || principal.kind !== 'client') throw await refuse('no client certificate');
    if (typeof name === 'string' && name !== '' && name !== principal.name) {
      throw await refuse('certificate role name does not match the certificate\'s client', { kind: 'client', id: principal.clientId, name: principal.name });
    }
    const { response } = await this.deps.auth.issueForClient({ id: principal.id, clientId: principal.clientId, name: principal.name }, meta, CERT_LOGIN_GRANT);
    return this.describe(response.access_token);
  }

  /**
   * The wrapping token is a bootstrap token: unwrapping it is the `urn:keywarden:bootstrap`
   * exchange (single use; a second presentation flags it compromised, revokes what the first one
   * issued and writes an alert). What comes out is a login (`auth`), as when Vault unwraps a
   * wrapped login: Keywarden never hands out a client secret again after creating it.
   */
  async unwrap(wrappingToken: string | undefined, meta: RequestMeta): Promise<VaultAuthBlock> {
    if (!wrappingToken) throw new InvalidInputError('no wrapping token given (X-Vault-Token or "token" in the body)', { code: 'invalid_request' });
    let token: string;
    try {
      token = (await this.deps.auth.token({ grant_type: BOOTSTRAP_GRANT, bootstrap_token: wrappingToken }, meta)).access_token;
    } catch (err) {
      // Vault's wording for every failure: unknown, used, expired (the audit log has which)
      if (err instanceof OAuthError) throw new InvalidInputError('wrapping token is not valid or does not exist', { code: err.code });
      throw err;
    }
    return this.describe(token);
  }

  /** Vault's lookup-self `data` for the caller's own token. */
  async lookupSelf(principal: Principal, token: string | undefined) {
    const now = Math.floor(this.deps.clock() / 1000);
    if (principal.kind === 'operator') {
      // an operator API key does not expire on its own: Vault's picture of that is a root-like, non-renewable token
      return {
        id: token ?? '',
        accessor: principal.id,
        policies: [principal.role],
        display_name: `operator-${principal.name}`,
        meta: { role: principal.role },
        path: principal.via === 'api-key' ? 'auth/keywarden/api-key' : 'auth/keywarden/token-exchange',
        creation_time: 0,
        creation_ttl: 0,
        expire_time: null,
        explicit_max_ttl: 0,
        ttl: 0,
        num_uses: 0,
        orphan: true,
        renewable: false,
        type: 'service',
        entity_id: principal.id,
      };
    }
    const claims = this.claimsOf(principal, token);
    const groups = await this.deps.clients.groupsOf(claims.kw.id);
    const origin = claims.kw.o ?? claims.iat;
    return {
      id: token,
      accessor: claims.jti,
      policies: groups,
      display_name: `approle-${claims.kw.n}`,
      meta: { role_name: claims.kw.n },
      path: 'auth/approle/login',
      creation_time: origin,
      creation_ttl: claims.exp - claims.iat,
      issue_time: iso(claims.iat * 1000),
      expire_time: iso(claims.exp * 1000),
      explicit_max_ttl: this.deps.accessTokenMaxTtlSeconds,
      ttl: Math.max(0, claims.exp - now),
      num_uses: 0,
      orphan: true,
      renewable: origin + this.deps.accessTokenMaxTtlSeconds > now,
      type: 'service',
      entity_id: claims.kw.cid,
    };
  }

  /**
   * A JWT's expiry cannot move, so renewing mints a new token (auth.client_token, which
   * node-vault adopts by itself; hvac callers set client.token). Its life ends at the latest
   * KEYWARDEN_ACCESS_TOKEN_MAX_TTL after the first token of the chain was issued, as Vault's
   * max TTL does. The renewed token stays valid until its own expiry, unless any token of its
   * chain is revoked: revoking one (by jti, revoke-self, or bootstrap reuse detection) revokes
   * every token renewed from the same login (TokenService.revoke).
   */
  async renewSelf(principal: Principal, token: string | undefined, increment: unknown, meta: RequestMeta): Promise<{ auth: VaultAuthBlock; warnings: string[] | null }> {
    if (principal.kind !== 'client') throw new InvalidInputError('only client tokens can be renewed');
    const claims = this.claimsOf(principal, token);
    const requested = increment === undefined || increment === null || increment === '' ? this.deps.accessTokenTtlSeconds : parseVaultDuration(increment);
    const now = Math.floor(this.deps.clock() / 1000);
    const origin = claims.kw.o ?? claims.iat;
    const left = origin + this.deps.accessTokenMaxTtlSeconds - now;
    if (left < 1) throw new InvalidInputError('the token has reached its maximum TTL; log in again', { code: 'token_max_ttl_reached' });
    const ttl = Math.min(requested, left);
    const warnings = ttl < requested ? [`TTL of "${requested}s" exceeded the effective max_ttl of "${left}s"; TTL value is capped accordingly`] : null;
    const client = { id: claims.kw.id, clientId: claims.kw.cid, name: claims.kw.n };
    const chain = TokenService.chainOf(claims);
    const issued = await this.deps.tokens.issueClientToken(client, ttl, { originSeconds: origin, chainId: chain });
    await this.deps.audit.record({
      actor: { kind: 'client', id: client.clientId, name: client.name },
      action: 'auth.token.issue',
      resource: { kind: 'client', name: client.name },
      outcome: 'allow',
      details: { jti: issued.jti, grantType: 'vault:renew-self', renewedFrom: claims.jti, chain, expiresAt: iso(issued.expiresAt) },
      request: meta,
    });
    return { auth: await this.describe(issued.token), warnings };
  }

  /** Revokes the caller's own token (its jti) and its renewal chain, audited as token.revoke. */
  async revokeSelf(principal: Principal, token: string | undefined, meta: RequestMeta): Promise<void> {
    if (principal.kind !== 'client') throw new InvalidInputError('only client tokens can be revoked with revoke-self; operator API keys are revoked with DELETE /v1/api-keys/{id}');
    const claims = this.claimsOf(principal, token);
    await this.deps.workload.revoke(principal, meta, claims.jti, claims.exp * 1000, TokenService.chainOf(claims));
  }

  /**
   * The auth block for a client access token this broker has just issued. Its lease_duration is
   * the TTL granted (exp − iat), as Vault reports it, not the clock's reading of what remains: a
   * response built in the second after issuance would otherwise tell the client one second less
   * than it was granted.
   */
  private async describe(token: string): Promise<VaultAuthBlock> {
    const claims = decodeClaims(token);
    const groups = await this.deps.clients.groupsOf(claims.kw.id);
    return {
      client_token: token,
      accessor: claims.jti,
      policies: groups,
      token_policies: groups,
      identity_policies: [],
      metadata: { role_name: claims.kw.n },
      lease_duration: claims.exp - claims.iat,
      renewable: true,
      entity_id: claims.kw.cid,
      token_type: 'service',
      orphan: true,
      mfa_requirement: null,
      num_uses: 0,
    };
  }

  /** The claims of the token that authenticated `principal` (an mTLS client has none). */
  private claimsOf(principal: Principal, token: string | undefined): ClientTokenClaims {
    if (principal.kind !== 'client' || !principal.jti || !token) throw new UnauthenticatedError('this call needs a client token in X-Vault-Token', 'token_required');
    const claims = decodeClaims(token);
    // the header the route read is the one authenticate() verified; this guards against a mix-up
    if (claims.jti !== principal.jti) throw new UnauthenticatedError('the token does not match the authenticated caller', 'invalid_token');
    return claims;
  }
}

/** Reads the claims of a token whose signature has already been verified. */
function decodeClaims(token: string): ClientTokenClaims {
  const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as ClientTokenClaims;
  if (claims?.kw?.t !== 'client') throw new UnauthenticatedError('not a client access token', 'invalid_token');
  return claims;
}

/** Vault's duration parameters: whole seconds as a number or string, or "90s", "15m", "1h". */
export function parseVaultDuration(value: unknown): number {
  if (typeof value === 'number' && Number.isInteger(value) && value > 0) return value;
  if (typeof value === 'string') {
    const m = /^(\d{1,9})(s|m|h)?$/.exec(value.trim());
    if (m) {
      const seconds = Number(m[1]) * (m[2] === 'h' ? 3600 : m[2] === 'm' ? 60 : 1);
      if (seconds > 0) return seconds;
    }
  }
  throw new InvalidInputError('increment must be a positive number of seconds or a duration like "30m"', { code: 'invalid_request' });
}
