import crypto from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { z } from 'zod';
import type { AuditService } from '../audit/audit-service.js';
import { randomToken, sha256Hex, randomIdentifier } from '../crypto/hashing.js';
import { ConflictError, ForbiddenError, InvalidInputError, OAuthError, UnauthenticatedError } from '../core/errors.js';
import type { RequestMeta, ClientPrincipal } from '../core/principal.js';
import type { AccessService } from '../access/access-service.js';
import type { AuthService } from './auth-service.js';
import type { BootstrapTokensDal } from './bootstrap-tokens-dal.js';
import type { ClientsDal } from './clients-dal.js';
import type { ClientsService } from './clients-service.js';
import { actorOf, principalLabel, type Principal } from './identity-types.js';
import { iso, type Clock } from '../core/clock.js';
import type { TokenService } from './token-service.js';

export const BOOTSTRAP_GRANT = 'urn:keywarden:bootstrap';

export const bootstrapTokenRequestSchema = z
  .object({ ttl: z.number().int().min(10).max(3600).default(600) })
  .strict();

export const mintJwtSchema = z
  .object({
    audience: z.string().min(1).max(512),
    ttl: z.number().int().min(10).max(86400).default(300),
  })
  .strict();

export const revokeSchema = z
  .object({
    jti: z.string().min(1).max(64).regex(/^[A-Za-z0-9._-]+$/),
    expiresAt: z.string().datetime({ offset: true }).optional(),
  })
  .strict();

export interface WorkloadIdentityDeps {
  bootstrapTokens: BootstrapTokensDal;
  clientsDal: ClientsDal;
  access: AccessService;
  audit: AuditService;
  clients: ClientsService;
  tokens: TokenService;
  auth: AuthService;
  clock: Clock;
  bootstrapTokenMaxTtlSeconds: number;
  workloadJwtMaxTtlSeconds: number;
  accessTokenMaxTtlSeconds: number;
}

/**
 * How workloads prove who they are beyond client credentials: single-use bootstrap tokens
 * (response-wrapping style), mTLS certificates, and the workload JWTs they mint to call others.
 */
export class WorkloadIdentityService {
  // the composition root (broker.ts) registers exchangeBootstrapToken() as the BOOTSTRAP_GRANT
  constructor(private readonly deps: WorkloadIdentityDeps) {}

  async createBootstrapToken(principal: Principal, meta: RequestMeta, clientName: string, ttlSeconds: number) {
    if (ttlSeconds > this.deps.bootstrapTokenMaxTtlSeconds) {
      throw new InvalidInputError(`ttl must be at most ${this.deps.bootstrapTokenMaxTtlSeconds} seconds`);
    }
    const token = randomToken('kwb_');
    const accessor = randomIdentifier(12);
    const now = this.deps.clock();
    const expiresAt = now + ttlSeconds * 1000;
    await this.deps.audit.transact(async (trx, record) => {
      const client = await this.deps.clients.require(clientName, trx);
      if (!client.enabled) throw new ConflictError(`client ${clientName} is disabled`, 'client_disabled');
      await this.deps.bootstrapTokens.insert(trx, {
        token_hash: sha256Hex(token),
        accessor,
        client_id: client.id,
        created_by: principalLabel(principal),
        created_at: now,
        expires_at: expiresAt,
      });
      await record({
        actor: actorOf(principal),
        action: 'bootstrap.create',
        resource: { kind: 'client', name: clientName },
        outcome: 'allow',
        details: { accessor, expiresAt: iso(expiresAt) },
        request: meta,
      });
    });
    return { token, accessor, client: clientName, expiresAt: iso(expiresAt) };
  }

  /**
   * Exactly one exchange can win: the conditional UPDATE is atomic on both databases. A second
   * presentation means the token leaked, so it is flagged compromised, the token issued by the
   * first use is revoked, and an alert-level audit event is written.
   */
  async exchangeBootstrapToken(token: string | undefined, meta: RequestMeta) {
    if (!token || token.length > 256) throw new OAuthError('invalid_input', 'invalid_request', 'invalid_request', 'bootstrap_token is required');
    const hash = sha256Hex(token);
    const now = this.deps.clock();
    const claimed = await this.deps.bootstrapTokens.claim(hash, now);
    const row = await this.deps.bootstrapTokens.findWithClient(hash);
    const hmac = await this.deps.audit.hmac(token);
    if (claimed && row) {
      if (!row.enabled) {
        await this.deps.auth.recordFailure(meta, { kind: 'client', id: row.public_client_id, name: row.name }, 'client disabled', { grantType: BOOTSTRAP_GRANT });
        throw new OAuthError('unauthenticated', 'invalid_grant', 'client_disabled', 'the client is disabled');
      }
      const { response, jti } = await this.deps.auth.issueForClient({ id: row.client_id, clientId: row.public_client_id, name: row.name }, meta, BOOTSTRAP_GRANT, { accessor: row.accessor });
      await this.deps.bootstrapTokens.setIssuedJti(hash, jti);
      // a concurrent second presentation may have flagged the token before issued_jti was
      // written (and so found nothing to revoke): re-check now that the jti is visible
      const latest = await this.deps.bootstrapTokens.find(hash);
      if (latest && latest.compromised_at !== null) {
        await this.deps.tokens.revoke(jti, now + this.deps.accessTokenMaxTtlSeconds * 1000, 'system:bootstrap-reuse');
      }
      return response;
    }
    if (!row) {
      await this.deps.auth.recordFailure(meta, { kind: 'unknown' }, 'unknown bootstrap token', { grantType: BOOTSTRAP_GRANT, credential: hmac });
      throw new OAuthError('unauthenticated', 'invalid_grant', 'invalid_bootstrap_token', 'the bootstrap token is not valid');
    }
    if (row.used_at !== null) {
      await this.deps.bootstrapTokens.markCompromised(hash, now);
      // re-read after flagging: the winning exchange may have recorded its jti since `row` was read
      const issuedJti: string | null = (await this.deps.bootstrapTokens.find(hash))?.issued_jti ?? row.issued_jti ?? null;
      if (issuedJti) await this.deps.tokens.revoke(issuedJti, now + this.deps.accessTokenMaxTtlSeconds * 1000, 'system:bootstrap-reuse');
      await this.deps.audit.record({
        actor: { kind: 'client', id: row.public_client_id, name: row.name },
        action: 'auth.bootstrap.reuse',
        resource: { kind: 'client', name: row.name },
        outcome: 'deny',
        reason: 'bootstrap token presented again after its single use',
        details: { alert: true, accessor: row.accessor, credential: hmac, revokedJti: issuedJti },
        request: meta,
      });
      throw new OAuthError('unauthenticated', 'invalid_grant', 'bootstrap_token_reused', 'the bootstrap token was already used; it is now flagged as compromised');
    }
    await this.deps.auth.recordFailure(meta, { kind: 'client', id: row.public_client_id, name: row.name }, 'bootstrap token expired', { grantType: BOOTSTRAP_GRANT, accessor: row.accessor });
    throw new OAuthError('unauthenticated', 'invalid_grant', 'bootstrap_token_expired', 'the bootstrap token has expired');
  }

  private async jtiOf(accessToken: string): Promise<string> {
    const payload = JSON.parse(Buffer.from(accessToken.split('.')[1], 'base64url').toString('utf8'));
    return payload.jti;
  }

  async listBootstrapTokens(clientName: string) {
    const client = await this.deps.clients.require(clientName);
    const rows = await this.deps.bootstrapTokens.listForClient(client.id);
    return rows.map((r) => ({
      accessor: r.accessor,
      createdBy: r.created_by,
      createdAt: iso(r.created_at),
      expiresAt: iso(r.expires_at),
      usedAt: iso(r.used_at),
      compromised: r.compromised_at !== null,
      compromisedAt: iso(r.compromised_at),
    }));
  }

  /**
   * Maps a verified client certificate to a client: the URI SAN (spiffe://...) is preferred,
   * else the subject CN, matched against the client's explicit certIdentity.
   */
  async authenticateCertificate(socket: TLSSocket): Promise<Principal | undefined> {
    const cert = socket.getPeerCertificate();
    if (!cert || Object.keys(cert).length === 0) return undefined;
    if (!socket.authorized) {
      const reason = String(socket.authorizationError ?? 'certificate not trusted');
      const expired = /EXPIRED/i.test(reason);
      throw new UnauthenticatedError(
        expired ? 'the client certificate has expired' : `the client certificate is not trusted (${reason})`,
        expired ? 'certificate_expired' : 'certificate_untrusted',
      );
    }
    const identity = certificateIdentity(cert.subjectaltname, cert.subject?.CN);
    if (!identity) throw new UnauthenticatedError('the client certificate has no SPIFFE URI SAN or CN', 'certificate_unmapped');
    const row = await this.deps.clientsDal.findByCertIdentity(identity);
    if (!row) throw new UnauthenticatedError(`no client is mapped to certificate identity ${identity}`, 'certificate_unmapped');
    if (!row.enabled) throw new UnauthenticatedError('the client is disabled', 'client_disabled');
    return { kind: 'client', id: row.id, name: row.name, clientId: row.client_id, via: 'mtls' };
  }

  async allowedAudiences(clientDbId: number): Promise<Set<string>> {
    const client = await this.deps.clientsDal.findById(clientDbId);
    const groups = await this.deps.access.audiencesOfClientGroups(clientDbId);
    const allowed = new Set<string>();
    for (const json of [client?.allowed_audiences, ...groups]) {
      if (json) for (const a of JSON.parse(json) as string[]) allowed.add(a);
    }
    return allowed;
  }

  async mintWorkloadJwt(principal: ClientPrincipal, meta: RequestMeta, audience: string, ttlSeconds: number) {
    if (ttlSeconds > this.deps.workloadJwtMaxTtlSeconds) {
      throw new InvalidInputError(`ttl must be at most ${this.deps.workloadJwtMaxTtlSeconds} seconds`);
    }
    if (audience === this.deps.tokens.accessAudience) {
      throw new ForbiddenError('workload JWTs cannot target the broker itself', 'audience_not_allowed');
    }
    const allowed = await this.allowedAudiences(principal.id);
    if (!allowed.has(audience) && !allowed.has('*')) {
      await this.deps.audit.record({
        actor: actorOf(principal),
        action: 'credential.jwt.mint',
        resource: { kind: 'audience', name: audience },
        outcome: 'deny',
        reason: 'audience not allowed for this client or its groups',
        request: meta,
      });
      throw new ForbiddenError(`audience ${audience} is not allowed for this client`, 'audience_not_allowed');
    }
    const issued = await this.deps.tokens.sign(
      { client: principal.name },
      { audience, subject: this.deps.tokens.spiffeId(principal.name), ttlSeconds, typ: 'JWT' },
    );
    await this.deps.audit.record({
      actor: actorOf(principal),
      action: 'credential.jwt.mint',
      resource: { kind: 'audience', name: audience },
      outcome: 'allow',
      details: { jti: issued.jti, audience, expiresAt: iso(issued.expiresAt) },
      request: meta,
    });
    return { token: issued.token, jti: issued.jti, audience, subject: this.deps.tokens.spiffeId(principal.name), expiresAt: iso(issued.expiresAt) };
  }

  /**
   * Revokes a token and its renewal chain (every token renewed from it or it from). `chainId`:
   * the chain as read from the caller's own verified token (revoke-self); else it is looked up.
   */
  async revoke(principal: Principal, meta: RequestMeta, jti: string, expiresAt?: number, chainId?: string) {
    await this.deps.audit.transact(async (trx, record) => {
      const { chain } = await this.deps.tokens.revoke(jti, expiresAt ?? this.deps.clock() + this.deps.accessTokenMaxTtlSeconds * 1000, principalLabel(principal), trx, chainId);
      await record({ actor: actorOf(principal), action: 'token.revoke', resource: { kind: 'token', name: jti }, outcome: 'allow', details: chain ? { chain } : undefined, request: meta });
    });
    return { jti, revoked: true };
  }
}

export function certificateIdentity(subjectAltName: string | undefined, commonName: string | string[] | undefined): string | undefined {
  const uris = (subjectAltName ?? '')
    .split(/,\s*/)
    .filter((entry) => entry.startsWith('URI:'))
    .map((entry) => entry.slice(4));
  const spiffe = uris.find((u) => u.startsWith('spiffe://'));
  if (spiffe) return spiffe;
  const cn = Array.isArray(commonName) ? commonName[0] : commonName;
  return cn ? `CN=${cn}` : undefined;
}
