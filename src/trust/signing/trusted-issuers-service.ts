import type { Knex } from 'knex';
import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, jwtVerify, type JWK, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { z } from 'zod';
import type { AuditService } from '../../audit/audit-service.js';
import { problems } from '../../http/problem.js';
import type { RequestMeta } from '../../http/request-context.js';
import { nameSchema } from '../../http/validation.js';
import { oauthError, type AuthService, type TokenResponse } from '../../identity/auth-service.js';
import { actorOf, principalLabel, type Principal } from '../../identity/identity-types.js';
import { iso, rethrowUniqueAsConflictFn } from '../../identity/identity-util.js';
import type { TokenService } from '../../identity/token-service.js';
import { globMatch } from './glob.js';

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCEPTED_SUBJECT_TOKEN_TYPES = new Set(['urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:id_token']);
/** Asymmetric only: `none` and HMAC (key-confusion) tokens are refused before any key lookup. */
const ALLOWED_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'EdDSA'];

const claimRuleValue = z.union([z.string().min(1).max(512), z.array(z.string().min(1).max(512)).min(1).max(50)]);

export const trustedIssuerSchema = z
  .object({
    name: nameSchema,
    issuer: z.string().url().max(512),
    jwksUri: z.string().url().max(1024).optional(),
    jwks: z.object({ keys: z.array(z.record(z.unknown())).min(1).max(50) }).optional(),
    audience: z.string().min(1).max(512),
    /** claim name → exact value or glob (`refs/tags/v*`); an array means any of them */
    claims: z.record(z.string().regex(/^[A-Za-z0-9_:.-]{1,64}$/), claimRuleValue).default({}),
    keys: z.array(z.string().regex(/^([A-Za-z0-9._-]{1,128}|\*)$/)).min(1).max(100),
    images: z.array(z.string().min(1).max(512)).min(1).max(100),
    tokenTtl: z.number().int().min(60).max(3600).default(600),
  })
  .strict()
  .refine((v) => (v.jwksUri === undefined) !== (v.jwks === undefined), 'give exactly one of jwksUri or jwks');

type TrustedIssuerInput = z.infer<typeof trustedIssuerSchema>;

function rowToIssuer(row: any) {
  return {
    name: row.name as string,
    issuer: row.issuer as string,
    jwksUri: (row.jwks_uri ?? undefined) as string | undefined,
    jwks: row.jwks ? (JSON.parse(row.jwks) as { keys: JWK[] }) : undefined,
    audience: row.audience as string,
    claims: JSON.parse(row.claim_rules) as Record<string, string | string[]>,
    keys: JSON.parse(row.allowed_keys) as string[],
    images: JSON.parse(row.allowed_images) as string[],
    tokenTtl: row.token_ttl as number,
    createdBy: row.created_by as string,
    createdAt: iso(row.created_at),
    updatedAt: iso(row.updated_at),
  };
}

type TrustedIssuer = ReturnType<typeof rowToIssuer>;

/** Which claim rule failed, or undefined when every rule matches. */
export function claimMismatch(payload: JWTPayload, rules: Record<string, string | string[]>): string | undefined {
  for (const [claim, rule] of Object.entries(rules)) {
    const value = payload[claim];
    if (typeof value !== 'string') return `claim ${claim} is missing`;
    const patterns = Array.isArray(rule) ? rule : [rule];
    if (!patterns.some((p) => globMatch(p, value, { segmentSeparator: null }))) return `claim ${claim}=${value} does not match ${patterns.join(' | ')}`;
  }
  return undefined;
}

/**
 * CI pipelines trade their OIDC token (GitHub Actions, GitLab CI, ...) for a short-lived signer
 * token scoped to the keys and images their trusted issuer allows (RFC 8693 token exchange).
 */
export class TrustedIssuersService {
  private readonly remoteJwks = new Map<string, JWTVerifyGetKey>();

  constructor(private readonly deps: { db: Knex; audit: AuditService; tokens: TokenService; auth: AuthService; clock: () => number }) {
    deps.auth.registerGrant(TOKEN_EXCHANGE_GRANT, (params, meta) => this.exchange(params, meta));
  }

  async create(principal: Principal, meta: RequestMeta, input: TrustedIssuerInput) {
    const now = this.deps.clock();
    await this.deps.audit
      .transact(async (trx, record) => {
        if (await trx('trusted_issuers').where({ name: input.name }).first()) throw problems.conflict(`trusted issuer ${input.name} already exists`, 'already_exists');
        await trx('trusted_issuers').insert({
          name: input.name,
          issuer: input.issuer.replace(/\/$/, ''),
          jwks_uri: input.jwksUri ?? null,
          jwks: input.jwks ? JSON.stringify(input.jwks) : null,
          audience: input.audience,
          claim_rules: JSON.stringify(input.claims),
          allowed_keys: JSON.stringify(input.keys),
          allowed_images: JSON.stringify(input.images),
          token_ttl: input.tokenTtl,
          created_by: principalLabel(principal),
          created_at: now,
          updated_at: now,
        });
        await record({ actor: actorOf(principal), action: 'trustedissuer.create', resource: { kind: 'trusted-issuer', name: input.name }, outcome: 'allow', details: { issuer: input.issuer, keys: input.keys, images: input.images }, request: meta });
      })
      .catch(rethrowUniqueAsConflictFn(`trusted issuer ${input.name} already exists`));
    return this.get(input.name);
  }

  async list() {
    return (await this.deps.db('trusted_issuers').orderBy('name')).map(rowToIssuer);
  }

  async get(name: string) {
    const row = await this.deps.db('trusted_issuers').where({ name }).first();
    if (!row) throw problems.notFound(`trusted issuer ${name}`);
    return rowToIssuer(row);
  }

  async remove(principal: Principal, meta: RequestMeta, name: string) {
    await this.deps.audit.transact(async (trx, record) => {
      const deleted = await trx('trusted_issuers').where({ name }).delete();
      if (!deleted) throw problems.notFound(`trusted issuer ${name}`);
      await record({ actor: actorOf(principal), action: 'trustedissuer.delete', resource: { kind: 'trusted-issuer', name }, outcome: 'allow', request: meta });
    });
  }

  private keySet(issuer: TrustedIssuer): JWTVerifyGetKey {
    if (issuer.jwks) return createLocalJWKSet(issuer.jwks);
    let set = this.remoteJwks.get(issuer.jwksUri!);
    if (!set) {
      set = createRemoteJWKSet(new URL(issuer.jwksUri!), { timeoutDuration: 5000, cooldownDuration: 30_000, cacheMaxAge: 600_000 });
      this.remoteJwks.set(issuer.jwksUri!, set);
    }
    return set;
  }

  private async fail(meta: RequestMeta, status: 401 | 403, code: string, detail: string, details: Record<string, unknown>): Promise<never> {
    await this.deps.auth.recordFailure(meta, { kind: 'ci', id: (details.subject as string) ?? undefined }, detail, { grantType: TOKEN_EXCHANGE_GRANT, ...details });
    throw oauthError(status, status === 401 ? 'invalid_grant' : 'access_denied', code, detail);
  }

  async exchange(params: Record<string, string>, meta: RequestMeta): Promise<TokenResponse> {
    const subjectToken = params.subject_token;
    if (!subjectToken || subjectToken.length > 16_384) throw oauthError(400, 'invalid_request', 'invalid_request', 'subject_token is required');
    if (params.subject_token_type && !ACCEPTED_SUBJECT_TOKEN_TYPES.has(params.subject_token_type)) {
      throw oauthError(400, 'invalid_request', 'invalid_request', 'subject_token_type must be a JWT or ID token type');
    }
    const credential = await this.deps.audit.hmac(subjectToken);
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(subjectToken);
    } catch {
      return this.fail(meta, 401, 'invalid_subject_token', 'subject_token is not a JWT', { credential });
    }
    const iss = typeof unverified.iss === 'string' ? unverified.iss.replace(/\/$/, '') : '';
    const candidates = (await this.deps.db('trusted_issuers').where({ issuer: iss }).orderBy('name')).map(rowToIssuer);
    if (candidates.length === 0) return this.fail(meta, 401, 'untrusted_issuer', `issuer ${iss || '(none)'} is not trusted`, { credential });

    let lastMismatch = '';
    // several registrations may share an issuer (per audience, per repository): try each, and
    // report a verification failure only when no registration accepted the token's signature
    let verifyFailure: { reason: string; detail: string; issuer: string } | undefined;
    for (const issuer of candidates) {
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(subjectToken, this.keySet(issuer), {
          issuer: [issuer.issuer, `${issuer.issuer}/`],
          audience: issuer.audience,
          algorithms: ALLOWED_ALGORITHMS,
          requiredClaims: ['exp', 'iat'],
          currentDate: new Date(this.deps.clock()),
          clockTolerance: 30,
        }));
      } catch (err: any) {
        const code = String(err?.code ?? '');
        const claim = String(err?.claim ?? '');
        const [, reason, detail]: [401, string, string] =
          code === 'ERR_JWT_EXPIRED'
            ? [401, 'subject_token_expired', 'the CI token has expired']
            : code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && claim === 'aud'
              ? [401, 'audience_mismatch', `the CI token audience is not ${issuer.audience}`]
              : code === 'ERR_JWT_CLAIM_VALIDATION_FAILED' && claim === 'nbf'
                ? [401, 'subject_token_not_yet_valid', 'the CI token is not valid yet']
                : code === 'ERR_JWKS_NO_MATCHING_KEY'
                  ? [401, 'unknown_signing_key', 'the CI token was signed by a key the issuer does not publish']
                  : code === 'ERR_JOSE_ALG_NOT_ALLOWED' || code === 'ERR_JOSE_NOT_SUPPORTED'
                    ? [401, 'algorithm_not_allowed', 'the CI token algorithm is not allowed (asymmetric signatures only)']
                    : code === 'ERR_JWKS_TIMEOUT' || code === 'ERR_JOSE_GENERIC'
                      ? [401, 'issuer_keys_unavailable', 'the issuer keys could not be fetched']
                      : [401, 'invalid_subject_token', 'the CI token signature or claims are not valid'];
        verifyFailure ??= { reason, detail, issuer: issuer.name };
        continue;
      }
      const mismatch = claimMismatch(payload, issuer.claims);
      if (mismatch) {
        lastMismatch = mismatch;
        continue;
      }
      const subject = `${issuer.name}:${String(payload.sub ?? '')}`.slice(0, 200);
      const scope = { keys: issuer.keys, images: issuer.images };
      const issued = await this.deps.tokens.issueSignerToken(subject, issuer.name, scope, issuer.tokenTtl);
      await this.deps.audit.record({
        actor: { kind: 'ci', id: subject, name: issuer.name },
        action: 'auth.token.issue',
        resource: { kind: 'trusted-issuer', name: issuer.name },
        outcome: 'allow',
        details: {
          jti: issued.jti,
          grantType: TOKEN_EXCHANGE_GRANT,
          expiresAt: iso(issued.expiresAt),
          claims: pickClaims(payload, ['sub', 'repository', 'ref', 'workflow', 'project_path', 'pipeline_id', 'run_id', 'sha']),
        },
        request: meta,
      });
      return {
        access_token: issued.token,
        token_type: 'Bearer',
        expires_in: issuer.tokenTtl,
        issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        scope: `sign keys:${scope.keys.join(',')} images:${scope.images.join(',')}`,
      };
    }
    if (!lastMismatch && verifyFailure) return this.fail(meta, 401, verifyFailure.reason, verifyFailure.detail, { credential, issuer: verifyFailure.issuer });
    return this.fail(meta, 403, 'claims_mismatch', lastMismatch || 'the CI token claims do not match any rule', { credential, subject: String(unverified.sub ?? '') });
  }
}

function pickClaims(payload: JWTPayload, names: string[]): Record<string, unknown> {
  return Object.fromEntries(names.filter((n) => typeof payload[n] === 'string' || typeof payload[n] === 'number').map((n) => [n, payload[n]]));
}

