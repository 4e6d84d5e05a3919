import crypto from 'node:crypto';
import type { Queryable } from '../db/database.js';
import type { ClientsDal } from './clients-dal.js';
import type { ClientTokenState, TokensDal } from './tokens-dal.js';
import { EpochCache, type CacheEpoch } from '../db/cache-epoch.js';
import { SignJWT, decodeProtectedHeader, jwtVerify, type JWTPayload } from 'jose';
import { UnauthenticatedError } from '../core/errors.js';
import type { Principal, SignerScope } from './identity-types.js';
import { JWT_ALG, type JwtKeyService } from './jwt-key-service.js';
import type { Clock } from '../core/clock.js';
import type { Telemetry } from '../core/telemetry.js';

export interface TokenServiceDeps {
  dal: TokensDal;
  clients: ClientsDal;
  jwtKeys: JwtKeyService;
  clock: Clock;
  issuer: string;
  trustDomain: string;
  accessTokenTtlSeconds: number;
  /** The longest a renewal chain lives (KEYWARDEN_ACCESS_TOKEN_MAX_TTL): how long a revoked chain id must be kept. */
  accessTokenMaxTtlSeconds: number;
  /** Counts renewals (the token endpoint's grants are counted by AuthService). */
  telemetry?: Telemetry;
  /** Keeps each client token's revocation state between uses, within the epoch's bound; without it every use reads the database. */
  cacheEpoch?: CacheEpoch;
}

/** Claims private to Keywarden access tokens. */
type KwClaim =
  /**
   * `o`: when the first token of a renewal chain was issued (unix seconds; Vault's renew-self caps the chain's life).
   * `c`: the renewal chain, the jti of its first token (renewed tokens only; a token without it is its own chain).
   */
  | { t: 'client'; id: number; cid: string; n: string; via: 'token'; rot?: number; o?: number; c?: string }
  | { t: 'signer'; sub: string; n: string; scope: SignerScope; g?: string };

/**
 * Decides whether the trusted issuer a signer token came from still stands behind it (exists, is
 * enabled, still has the configuration generation the token was minted under); throws a 401
 * problem when not. Registered by the token-exchange grant, read from the database on every use.
 */
export type SignerTokenCheck = (token: { issuer: string; generation: string | null }) => Promise<void>;

interface VerifiedToken {
  payload: JWTPayload & { kw: KwClaim };
  expMs: number;
}

const ACCESS_TOKEN_TYPE = 'at+jwt';

/**
 * Access tokens: short-lived JWTs for the broker itself (audience `${issuer}/v1`). Signature
 * checks are cached per token until expiry. A client token's revocation state (client disabled
 * or deleted, secret rotated, jti or renewal chain revoked) is kept per token under the cache
 * epoch (src/db/cache-epoch.ts): a revocation committed on any instance is honoured by every
 * instance within CACHE_STALENESS_BOUND_MS, and at once on the instance that committed it. A
 * signer token's trusted issuer is read from the database on every use.
 */
export class TokenService {
  private readonly verified = new Map<string, VerifiedToken>();
  private signerTokenCheck?: SignerTokenCheck;
  private static readonly MAX_CACHE = 50_000;
  private readonly clientStates?: EpochCache<string, ClientTokenState | undefined>;

  constructor(private readonly deps: TokenServiceDeps) {
    if (deps.cacheEpoch) this.clientStates = new EpochCache(deps.cacheEpoch, TokenService.MAX_CACHE);
  }

  /** The client's and the token's revocation state: from the epoch cache, or read (and kept). */
  private async clientTokenState(jti: string, chainId: string, clientId: number): Promise<ClientTokenState | undefined> {
    // jti alone is the key: chain and client come from the same verified token
    const hit = this.clientStates?.get(jti);
    if (hit) return hit.value;
    const { state, epochGeneration } = await this.deps.dal.clientTokenState(jti, chainId, clientId);
    this.clientStates?.set(jti, state, epochGeneration);
    return state;
  }

  get accessAudience(): string {
    return `${this.deps.issuer}/v1`;
  }

  spiffeId(clientName: string): string {
    return `spiffe://${this.deps.trustDomain}/client/${clientName}`;
  }

  async sign(
    claims: Record<string, unknown>,
    options: { audience: string | string[]; subject: string; ttlSeconds: number; typ: string },
  ): Promise<{ token: string; jti: string; expiresAt: number; lifetimeSeconds: number }> {
    const { kid, privateKey } = await this.deps.jwtKeys.signingKey();
    const nowS = Math.floor(this.deps.clock() / 1000);
    const jti = crypto.randomUUID();
    const exp = nowS + options.ttlSeconds;
    const token = await new SignJWT(claims)
      .setProtectedHeader({ alg: JWT_ALG, kid, typ: options.typ })
      .setIssuer(this.deps.issuer)
      .setSubject(options.subject)
      .setAudience(options.audience)
      .setIssuedAt(nowS)
      .setNotBefore(nowS)
      .setExpirationTime(exp)
      .setJti(jti)
      .sign(privateKey);
    return { token, jti, expiresAt: exp * 1000, lifetimeSeconds: options.ttlSeconds };
  }

  /**
   * `renewalOf`: the token is a renewal (Vault's renew-self) in the chain `chainId`, which began at
   * `originSeconds`. It carries the chain id, and its jti is recorded with the chain before it is
   * handed out, so revoking either this token or any other of the chain ends them all. A
   * revocation racing the renewal still catches the new token: it carries the chain id, which
   * the revocation puts into revoked_tokens.
   */
  async issueClientToken(client: { id: number; clientId: string; name: string }, ttlSeconds = this.deps.accessTokenTtlSeconds, renewalOf?: { originSeconds: number; chainId: string }) {
    // the secret generation the token was issued under (ms precision), so a rotation revokes
    // exactly the tokens issued before it, independent of whole-second iat and clock skew
    const generation = await this.deps.clients.tokenGeneration(client.id);
    const kw: KwClaim = { t: 'client', id: client.id, cid: client.clientId, n: client.name, via: 'token' };
    if (generation !== undefined) kw.rot = generation;
    if (renewalOf) {
      kw.o = renewalOf.originSeconds;
      kw.c = renewalOf.chainId;
    }
    const issued = await this.sign({ kw }, { audience: this.accessAudience, subject: this.spiffeId(client.name), ttlSeconds, typ: ACCESS_TOKEN_TYPE });
    if (renewalOf) {
      await this.deps.dal.recordRenewal({ jti: issued.jti, chain_id: renewalOf.chainId, expires_at: issued.expiresAt });
      this.deps.telemetry?.tokenIssuance('renew', 'allow');
    }
    return issued;
  }

  /** The renewal chain of a client token's claims: `kw.c`, or the token's own jti (a first token, or one from before chains). */
  static chainOf(claims: { jti?: unknown; kw?: unknown }): string {
    const c = (claims.kw as { c?: unknown } | undefined)?.c;
    return typeof c === 'string' && c.length > 0 ? c : String(claims.jti);
  }

  registerSignerTokenCheck(check: SignerTokenCheck): void {
    this.signerTokenCheck = check;
  }

  /** `generation`: the issuing trusted issuer's configuration generation (null for rows from before there were any). */
  async issueSignerToken(subject: string, name: string, scope: SignerScope, ttlSeconds: number, generation: string | null) {
    const kw: KwClaim = { t: 'signer', sub: subject, n: name, scope };
    if (generation !== null) kw.g = generation;
    return this.sign({ kw }, { audience: this.accessAudience, subject, ttlSeconds, typ: ACCESS_TOKEN_TYPE });
  }

  private async verifySignature(token: string): Promise<VerifiedToken> {
    const now = this.deps.clock();
    const hit = this.verified.get(token);
    if (hit) {
      if (hit.expMs > now) return hit;
      this.verified.delete(token);
      throw new UnauthenticatedError('the access token has expired', 'token_expired');
    }
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch {
      throw new UnauthenticatedError('the bearer token is malformed', 'invalid_token');
    }
    const key = kid ? await this.deps.jwtKeys.publicKey(kid) : undefined;
    if (!key) throw new UnauthenticatedError('the access token was not signed by a current broker key', 'invalid_token');
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, key, {
        algorithms: [JWT_ALG],
        issuer: this.deps.issuer,
        audience: this.accessAudience,
        typ: ACCESS_TOKEN_TYPE,
        currentDate: new Date(now),
        // instances' clocks differ by a little; a fresh token must not fail nbf on a peer
        clockTolerance: 5,
        requiredClaims: ['exp', 'jti', 'kw'],
      }));
    } catch (err) {
      if ((err as { code?: unknown } | null)?.code === 'ERR_JWT_EXPIRED') throw new UnauthenticatedError('the access token has expired', 'token_expired');
      throw new UnauthenticatedError('the access token is not valid', 'invalid_token');
    }
    const kw = payload.kw as KwClaim | undefined;
    if (!kw || (kw.t !== 'client' && kw.t !== 'signer')) throw new UnauthenticatedError('the access token is not valid', 'invalid_token');
    const entry: VerifiedToken = { payload: payload as VerifiedToken['payload'], expMs: (payload.exp as number) * 1000 };
    if (this.verified.size >= TokenService.MAX_CACHE) this.verified.clear();
    this.verified.set(token, entry);
    return entry;
  }

  /**
   * Full check: signature, expiry, and revocation state in the database (for signer tokens also
   * the state of the trusted issuer that minted them).
   */
  async authenticate(token: string): Promise<Principal> {
    const { payload } = await this.verifySignature(token);
    const jti = payload.jti as string;
    const kw = payload.kw;
    if (kw.t === 'client') {
      const row = await this.clientTokenState(jti, TokenService.chainOf(payload), kw.id);
      if (!row || row.name !== kw.n) throw new UnauthenticatedError('the client no longer exists', 'client_deleted');
      if (!row.enabled) throw new UnauthenticatedError('the client is disabled', 'client_disabled');
      if (Number(row.revoked) > 0) throw new UnauthenticatedError('the access token was revoked', 'token_revoked');
      const rotatedSince = typeof kw.rot === 'number'
        ? kw.rot !== Number(row.secret_rotated_at)
        : (payload.iat as number) * 1000 < Number(row.secret_rotated_at) - 999;
      if (rotatedSince) {
        // the generation moves on a secret rotation and on disabling the client
        throw new UnauthenticatedError('the client secret was rotated or the client disabled after this token was issued', 'token_revoked');
      }
      return { kind: 'client', id: kw.id, name: kw.n, clientId: kw.cid, via: 'token', jti };
    }
    if (await this.deps.dal.isRevoked(jti)) throw new UnauthenticatedError('the access token was revoked', 'token_revoked');
    // fail closed: a signer token is only as good as the trusted issuer that minted it
    if (!this.signerTokenCheck) throw new UnauthenticatedError('signer tokens are not accepted by this broker', 'token_revoked');
    await this.signerTokenCheck({ issuer: kw.n, generation: typeof kw.g === 'string' ? kw.g : null });
    return { kind: 'operator', role: 'signer', id: kw.sub, name: kw.n, scope: kw.scope, via: 'token-exchange', jti };
  }

  /** Whether a jti is in the revoked-tokens store (any token this broker signs, e.g. console sessions). */
  isRevoked(jti: string): Promise<boolean> {
    return this.deps.dal.isRevoked(jti);
  }

  /**
   * Revokes a token by jti, and with it its whole renewal chain: every token renewed from it,
   * and the ones it was renewed from (idempotent). The chain is `chainId` when the caller read it
   * from the verified token, else looked up by jti (a renewed token's jti is recorded at
   * renewal; any other jti is its own chain). Pass `trx` to commit with an audit event. Returns
   * the chain id when it differs from `jti`.
   */
  async revoke(jti: string, expiresAt: number, by: string, trx?: Queryable, chainId?: string): Promise<{ chain?: string }> {
    const chain = chainId ?? (await this.deps.dal.chainOf(jti, trx)) ?? jti;
    const now = this.deps.clock();
    // a chain lives at most the max TTL after its first token, which was issued before now (a
    // jti that is its own chain may head one: its row is kept as long)
    const chainExpiresAt = Math.max(expiresAt, now + this.deps.accessTokenMaxTtlSeconds * 1000);
    const rows = [{ jti, expires_at: chain === jti ? chainExpiresAt : expiresAt, revoked_at: now, revoked_by: by }];
    if (chain !== jti) rows.push({ jti: chain, expires_at: chainExpiresAt, revoked_at: now, revoked_by: by });
    await this.deps.dal.revoke(rows, trx);
    // in a caller's transaction the epoch is read once it commits (AuditService.transact)
    if (!trx) await this.deps.cacheEpoch?.refreshAfterChange();
    return chain !== jti ? { chain } : {};
  }
}
