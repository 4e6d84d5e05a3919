import type { AuditService } from '../audit/audit-service.js';
import { DomainError, OAuthError } from '../core/errors.js';
import type { RequestMeta } from '../core/principal.js';
import type { ClientsService } from './clients-service.js';
import type { FailureRateLimiter } from './rate-limiter.js';
import type { TokenService } from './token-service.js';
import { grantLabel, type Telemetry } from '../core/telemetry.js';

export interface TokenResponse {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  scope?: string;
  issued_token_type?: string;
}

/** One way to trade a proof of identity for an access token (RFC 6749 grant types). */
export type GrantHandler = (params: Record<string, string>, meta: RequestMeta) => Promise<TokenResponse>;

export class AuthService {
  private readonly grants = new Map<string, GrantHandler>();

  constructor(
    private readonly deps: {
      clients: ClientsService;
      tokens: TokenService;
      audit: AuditService;
      rateLimiter?: FailureRateLimiter;
      /** Token requests by grant type and outcome, for /metrics. */
      telemetry?: Telemetry;
    },
  ) {
    this.grants.set('client_credentials', (params, meta) => this.clientCredentials(params, meta));
  }

  /** Adds a grant type; the composition root (broker.ts) registers every grant beyond client_credentials. */
  registerGrant(grantType: string, handler: GrantHandler): void {
    this.grants.set(grantType, handler);
  }

  /** The grant types the token endpoint accepts, for the discovery document. */
  grantTypes(): string[] {
    return [...this.grants.keys()];
  }

  async token(params: Record<string, string>, meta: RequestMeta): Promise<TokenResponse> {
    const telemetry = this.deps.telemetry;
    if (!telemetry) return this.tokenFor(params, meta);
    const grant = grantLabel(params.grant_type, this.grants.has(params.grant_type ?? ''));
    try {
      const response = await this.tokenFor(params, meta);
      telemetry.tokenIssuance(grant, 'allow');
      return response;
    } catch (err) {
      // refused: bad credentials or request, rate limited, forbidden; error: anything else (503s)
      const kind = err instanceof DomainError ? err.kind : undefined;
      telemetry.tokenIssuance(grant, kind && kind !== 'unavailable' && kind !== 'upstream_failure' ? 'deny' : 'error');
      throw err;
    }
  }

  private async tokenFor(params: Record<string, string>, meta: RequestMeta): Promise<TokenResponse> {
    const grantType = params.grant_type;
    if (!grantType) throw new OAuthError('invalid_input', 'invalid_request', 'invalid_request', 'grant_type is required');
    const handler = this.grants.get(grantType);
    if (!handler) throw new OAuthError('invalid_input', 'unsupported_grant_type', 'unsupported_grant_type', `grant_type ${grantType} is not supported`);
    // The per-client bucket is keyed by client id and source address: failures from one place
    // lock out guesses from there, but never the real workload logging in from elsewhere.
    const address = meta.sourceIp ?? 'unknown';
    const clientBucket = params.client_id ? { kind: 'client', key: `${params.client_id.slice(0, 128)}@${address}` } : undefined;
    const buckets = [{ kind: 'address', key: address }, ...(clientBucket ? [clientBucket] : [])];
    await this.deps.rateLimiter?.check(buckets);
    try {
      const response = await handler(params, meta);
      if (clientBucket) await this.deps.rateLimiter?.reset(clientBucket);
      return response;
    } catch (err) {
      if (err instanceof DomainError && err.kind === 'unauthenticated') await this.deps.rateLimiter?.recordFailure(buckets);
      throw err;
    }
  }

  async recordFailure(meta: RequestMeta, actor: { kind: string; id?: string; name?: string }, reason: string, details: Record<string, unknown> = {}) {
    await this.deps.audit.record({ actor, action: 'auth.failure', outcome: 'deny', reason, details, request: meta });
  }

  private async clientCredentials(params: Record<string, string>, meta: RequestMeta): Promise<TokenResponse> {
    const clientId = params.client_id;
    const clientSecret = params.client_secret;
    if (!clientId || !clientSecret) throw new OAuthError('invalid_input', 'invalid_request', 'invalid_request', 'client_id and client_secret are required');
    if (clientId.length > 128 || clientSecret.length > 256) throw new OAuthError('invalid_input', 'invalid_request', 'invalid_request', 'client_id or client_secret is too long');
    const client = await this.deps.clients.verifyCredentials(clientId, clientSecret);
    if (!client) {
      await this.recordFailure(meta, { kind: 'client', id: clientId }, 'invalid client credentials', { grantType: 'client_credentials' });
      throw new OAuthError('unauthenticated', 'invalid_client', 'invalid_client', 'the client credentials are not valid');
    }
    if (!client.enabled) {
      await this.recordFailure(meta, { kind: 'client', id: clientId, name: client.name }, 'client disabled', { grantType: 'client_credentials' });
      throw new OAuthError('unauthenticated', 'invalid_client', 'client_disabled', 'the client is disabled');
    }
    return (await this.issueForClient(client, meta, 'client_credentials')).response;
  }

  /** Issues and audits a client access token; `jti` is for callers that must be able to revoke it. */
  async issueForClient(
    client: { id: number; clientId: string; name: string },
    meta: RequestMeta,
    grantType: string,
    extra: Record<string, unknown> = {},
  ): Promise<{ response: TokenResponse; jti: string }> {
    const issued = await this.deps.tokens.issueClientToken(client);
    await this.deps.audit.record({
      actor: { kind: 'client', id: client.clientId, name: client.name },
      action: 'auth.token.issue',
      resource: { kind: 'client', name: client.name },
      outcome: 'allow',
      details: { jti: issued.jti, grantType, expiresAt: new Date(issued.expiresAt).toISOString(), ...extra },
      request: meta,
    });
    return {
      jti: issued.jti,
      response: {
        access_token: issued.token,
        token_type: 'Bearer',
        // the lifetime granted (RFC 6749 expires_in), fixed at issuance: read off the clock after
        // the audit write, a second boundary crossed meanwhile would report one second less
        expires_in: issued.lifetimeSeconds,
      },
    };
  }
}
