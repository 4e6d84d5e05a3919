import crypto from 'node:crypto';
import { decodeProtectedHeader, jwtVerify, type JWTPayload } from 'jose';
import type { AuditService } from '../audit/audit-service.js';
import { ForbiddenError, UnauthenticatedError } from '../core/errors.js';
import { actorOf, type Principal, type RequestMeta } from '../core/principal.js';
import type { Clock } from '../core/clock.js';
import type { ApiKeysService } from '../identity/api-keys-service.js';
import { JWT_ALG, type JwtKeyService } from '../identity/jwt-key-service.js';
import type { TokenService } from '../identity/token-service.js';
import type { FailureRateLimiter } from '../identity/rate-limiter.js';

/** The audience of console session tokens: no other verifier accepts them, and they are no access tokens. */
export const CONSOLE_AUDIENCE = 'keywarden-console';
const SESSION_TYPE = 'kw-console+jwt';
/** Roles that may open a console session. Writers, signers and clients may not. */
const CONSOLE_ROLES: ReadonlySet<string> = new Set(['auditor', 'admin']);

/** A console session as every request re-establishes it. */
export interface ConsoleSession {
  principal: Extract<Principal, { kind: 'operator' }>;
  jti: string;
  /** Unix milliseconds. */
  expiresAt: number;
  /** The CSRF token bound to the session (inside the signed, HttpOnly cookie; the page gets it from the session routes). */
  csrfToken: string;
}

interface SessionClaim {
  t: 'console';
  role: string;
  csrf: string;
}

/**
 * Console sessions: an auditor's or admin's API key, presented once, exchanged for a short-lived
 * JWT signed by the broker's JWT keys (audience `keywarden-console`) kept in an HttpOnly cookie.
 * Nothing is kept in the process: every instance on the database verifies the same token, and on
 * every request reads whether its API key is still active and whether its jti was revoked
 * (logout), so revoking the key or logging out ends the session on every instance at once.
 */
export class ConsoleSessionService {
  constructor(
    private readonly deps: {
      apiKeys: ApiKeysService;
      tokens: TokenService;
      jwtKeys: JwtKeyService;
      audit: AuditService;
      clock: Clock;
      issuer: string;
      ttlSeconds: number;
      /** Failed logins count per source address (a bucket of their own), as failed token requests do. */
      rateLimiter?: FailureRateLimiter;
    },
  ) {}

  get ttlSeconds(): number {
    return this.deps.ttlSeconds;
  }

  /** Exchanges an API key for a session token. The key itself is never recorded (an HMAC of it on failure). */
  async login(apiKey: string, meta: RequestMeta): Promise<ConsoleSession & { token: string }> {
    if (!apiKey.startsWith('kw_')) {
      // an access token or anything else: only operator API keys open console sessions
      await this.deps.audit.record({
        actor: { kind: 'unknown' },
        action: 'console.login',
        outcome: 'deny',
        reason: 'console_role_forbidden',
        details: { credential: await this.deps.audit.hmac(apiKey) },
        request: meta,
      });
      throw new ForbiddenError('only auditor and admin API keys can log in to the console', 'console_role_forbidden');
    }
    // guessing API keys through the login form is refused after a few failures from one address
    const buckets = [{ kind: 'address', key: `console@${meta.sourceIp ?? 'unknown'}` }];
    await this.deps.rateLimiter?.check(buckets);
    let principal: Principal;
    try {
      // counted per address with the API keys that fail on every other route, too
      principal = await this.deps.apiKeys.authenticate(apiKey, meta);
    } catch (err) {
      if (err instanceof UnauthenticatedError) {
        await this.deps.rateLimiter?.recordFailure(buckets);
        // as a bad bearer key elsewhere: an auth.failure, with an HMAC of what was presented
        await this.deps.audit.record({
          actor: { kind: 'operator' },
          action: 'auth.failure',
          outcome: 'deny',
          reason: err.code,
          details: { credential: await this.deps.audit.hmac(apiKey), path: '/v1/console/session' },
          request: meta,
        });
      }
      throw err;
    }
    if (principal.kind !== 'operator' || !CONSOLE_ROLES.has(principal.role)) {
      await this.deps.audit.record({
        actor: actorOf(principal),
        action: 'console.login',
        resource: { kind: 'api-key', name: String(principal.id) },
        outcome: 'deny',
        reason: 'console_role_forbidden',
        details: { role: principal.kind === 'operator' ? principal.role : principal.kind },
        request: meta,
      });
      throw new ForbiddenError(`role ${principal.kind === 'operator' ? principal.role : principal.kind} may not log in to the console; use an auditor or admin key`, 'console_role_forbidden');
    }
    const csrf = crypto.randomBytes(32).toString('base64url');
    const claim: SessionClaim = { t: 'console', role: principal.role, csrf };
    const signed = await this.deps.tokens.sign({ kw: claim }, { audience: CONSOLE_AUDIENCE, subject: principal.id, ttlSeconds: this.deps.ttlSeconds, typ: SESSION_TYPE });
    await this.deps.audit.record({
      actor: actorOf(principal),
      action: 'console.login',
      resource: { kind: 'api-key', name: principal.id },
      outcome: 'allow',
      details: { role: principal.role, session: signed.jti, expiresAt: new Date(signed.expiresAt).toISOString() },
      request: meta,
    });
    return { principal: { ...principal, scope: undefined }, jti: signed.jti, expiresAt: signed.expiresAt, csrfToken: csrf, token: signed.token };
  }

  /**
   * The session of a cookie: signature, audience and expiry, then (from the database) that the
   * jti is not revoked and the API key is still active. Throws 401 `session_expired` otherwise.
   */
  async authenticate(token: string): Promise<ConsoleSession> {
    const expired = (detail: string) => new UnauthenticatedError(detail, 'session_expired');
    if (token.length > 4096) throw expired('the console session is not valid');
    let kid: string | undefined;
    try {
      kid = decodeProtectedHeader(token).kid;
    } catch {
      throw expired('the console session is not valid');
    }
    const key = kid ? await this.deps.jwtKeys.publicKey(kid) : undefined;
    if (!key) throw expired('the console session was not signed by a current broker key');
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, key, {
        algorithms: [JWT_ALG],
        issuer: this.deps.issuer,
        audience: CONSOLE_AUDIENCE,
        typ: SESSION_TYPE,
        currentDate: new Date(this.deps.clock()),
        clockTolerance: 5,
        requiredClaims: ['exp', 'jti', 'sub', 'kw'],
      }));
    } catch (err) {
      if ((err as { code?: unknown } | null)?.code === 'ERR_JWT_EXPIRED') throw expired('the console session has expired');
      throw expired('the console session is not valid');
    }
    const kw = payload.kw as Partial<SessionClaim> | undefined;
    if (!kw || kw.t !== 'console' || typeof kw.csrf !== 'string' || typeof payload.sub !== 'string') throw expired('the console session is not valid');
    const jti = payload.jti as string;
    if (await this.deps.tokens.isRevoked(jti)) throw expired('the console session was ended');
    const principal = await this.deps.apiKeys.activeById(payload.sub);
    // the key's role decides, as it is now (a key's role does not change, but fail closed if it did)
    if (principal.kind !== 'operator' || !CONSOLE_ROLES.has(principal.role)) throw expired('the API key of this session may no longer use the console');
    return { principal, jti, expiresAt: (payload.exp as number) * 1000, csrfToken: kw.csrf };
  }

  /** Whether `presented` is the session's CSRF token (constant time). */
  csrfMatches(session: ConsoleSession, presented: string | undefined): boolean {
    if (typeof presented !== 'string' || presented.length === 0 || presented.length > 256) return false;
    const a = crypto.createHash('sha256').update(presented).digest();
    const b = crypto.createHash('sha256').update(session.csrfToken).digest();
    return crypto.timingSafeEqual(a, b);
  }

  /** Ends the session everywhere: its jti joins the revoked tokens, with the audit event. */
  async logout(session: ConsoleSession, meta: RequestMeta): Promise<void> {
    await this.deps.audit.transact(async (trx, record) => {
      await this.deps.tokens.revoke(session.jti, session.expiresAt, `console:${session.principal.id}`, trx);
      await record({
        actor: actorOf(session.principal),
        action: 'console.logout',
        resource: { kind: 'api-key', name: session.principal.id },
        outcome: 'allow',
        details: { session: session.jti },
        request: meta,
      });
    });
  }
}
