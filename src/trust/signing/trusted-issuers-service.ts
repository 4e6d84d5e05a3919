import crypto from 'node:crypto';
import { createLocalJWKSet, createRemoteJWKSet, decodeJwt, jwtVerify, type JWK, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { z } from 'zod';
import type { AuditService } from '../../audit/audit-service.js';
import { ConflictError, InvalidInputError, NotFoundError, OAuthError, UnauthenticatedError } from '../../core/errors.js';
import type { RequestMeta } from '../../core/principal.js';
import { nameSchema } from '../../core/validation.js';
import type { AuthService, TokenResponse } from '../../identity/auth-service.js';
import { actorOf, principalLabel, type Principal } from '../../identity/identity-types.js';
import { rethrowUniqueAsConflictFn } from '../../identity/identity-util.js';
import { iso, type Clock } from '../../core/clock.js';
import type { TokenService } from '../../identity/token-service.js';
import { matchesValueGlob } from '../glob.js';
import type { Database, Transaction } from '../../db/database.js';
import { unknownSigningKeysError, type SigningKeysService } from './signing-keys-service.js';
import { TrustedIssuerDal, type TrustedIssuerChanges, type TrustedIssuerRow } from './trusted-issuer-dal.js';

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCEPTED_SUBJECT_TOKEN_TYPES = new Set(['urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:id_token']);
/** Asymmetric only: `none` and HMAC (key-confusion) tokens are refused before any key lookup. */
const ALLOWED_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'EdDSA'];

const claimRuleValue = z.union([z.string().min(1).max(512), z.array(z.string().min(1).max(512)).min(1).max(50)]);
/** claim name → exact value or glob (`refs/tags/v*`); an array means any of them */
const claimRulesSchema = z.record(z.string().regex(/^[A-Za-z0-9_:.-]{1,64}$/), claimRuleValue);
type ClaimRules = z.infer<typeof claimRulesSchema>;

const issuerFields = {
  issuer: z.string().url().max(512),
  jwksUri: z.string().url().max(1024),
  jwks: z.object({ keys: z.array(z.record(z.unknown())).min(1).max(50) }),
  audience: z.string().min(1).max(512),
  claims: claimRulesSchema,
  keys: z.array(z.string().regex(/^([A-Za-z0-9._-]{1,128}|\*)$/)).min(1).max(100),
  images: z.array(z.string().min(1).max(512)).min(1).max(100),
  tokenTtl: z.number().int().min(60).max(3600),
};

export const trustedIssuerSchema = z
  .object({
    name: nameSchema,
    ...issuerFields,
    jwksUri: issuerFields.jwksUri.optional(),
    jwks: issuerFields.jwks.optional(),
    // required in effect: create() refuses rules that do not identify a subject (see SUBJECT_CLAIMS)
    claims: issuerFields.claims.default({}),
    tokenTtl: issuerFields.tokenTtl.default(600),
  })
  .strict()
  .refine((v) => (v.jwksUri === undefined) !== (v.jwks === undefined), 'give exactly one of jwksUri or jwks')
  // Refinements do not reach JSON Schema; the description carries them to openapi.yaml.
  .describe('Give exactly one of `jwksUri` or `jwks`.');

/** A partial change; `enabled: false` disables the issuer (like clients). Any change revokes its signer tokens. */
export const updateTrustedIssuerSchema = z
  .object({
    issuer: issuerFields.issuer.optional(),
    jwksUri: issuerFields.jwksUri.optional(),
    jwks: issuerFields.jwks.optional(),
    audience: issuerFields.audience.optional(),
    claims: issuerFields.claims.optional(),
    keys: issuerFields.keys.optional(),
    images: issuerFields.images.optional(),
    tokenTtl: issuerFields.tokenTtl.optional(),
    enabled: z.boolean().optional(),
  })
  .strict()
  .refine((v) => v.jwksUri === undefined || v.jwks === undefined, 'give at most one of jwksUri or jwks')
  .refine((v) => Object.keys(v).length > 0, 'give at least one field to change')
  // Refinements do not reach JSON Schema; the description carries them to openapi.yaml.
  .describe('The fields to change (at least one); give at most one of `jwksUri` or `jwks`.');

type TrustedIssuerInput = z.infer<typeof trustedIssuerSchema>;
type TrustedIssuerUpdate = z.infer<typeof updateTrustedIssuerSchema>;

/**
 * Claims that say who a CI token was issued to: on GitHub Actions the repository (`sub` is
 * `repo:<owner>/<repo>:...`, `workflow_ref` is `<owner>/<repo>/.github/workflows/...`) or its
 * owner, on GitLab CI the project or its group. Claims such as `ref`, `workflow` or `environment`
 * are chosen freely by whoever owns any repository, so they identify nobody. `job_workflow_ref`
 * is left out on purpose: it names a (reusable) workflow, which any repository may call.
 */
export const SUBJECT_CLAIMS = [
  'sub',
  'repository',
  'repository_id',
  'repository_owner',
  'repository_owner_id',
  'workflow_ref',
  'project_path',
  'project_id',
  'namespace_path',
  'namespace_id',
] as const;

/** Characters that make a glob match more than one literal value (now or in a future glob dialect). */
const GLOB_SYNTAX = /[*?[\]{}]/;

/**
 * A pattern pins a subject when its leading segment (up to the first `/`, or the whole pattern
 * when it has none) is non-empty and literal: `org/app`, `org/*`, `repo:org/app:ref:*`, `12345`.
 * Patterns like `*`, `repo:*`, `org*` or a wildcard owner followed by `/app` match values that
 * any account on the platform can produce.
 */
export function patternPinsSubject(pattern: string): boolean {
  const slash = pattern.indexOf('/');
  const leading = slash === -1 ? pattern : pattern.slice(0, slash);
  return leading.length > 0 && !GLOB_SYNTAX.test(leading);
}

/** The claims whose rule pins a subject; an array rule counts only when every alternative does. */
export function subjectIdentifyingClaims(rules: ClaimRules): string[] {
  return Object.entries(rules)
    .filter(([claim, rule]) => (SUBJECT_CLAIMS as readonly string[]).includes(claim) && (Array.isArray(rule) ? rule : [rule]).every(patternPinsSubject))
    .map(([claim]) => claim);
}

const UNCONSTRAINED_EXPLANATION =
  `without a claim rule that identifies the CI subject, any repository or project on the CI platform could exchange its token for a signer token; ` +
  `add a rule on one of ${SUBJECT_CLAIMS.join(', ')} whose leading segment (up to the first /) has no wildcards, e.g. {"repository": "my-org/my-app"} or {"project_path": "my-group/*"}`;

function unconstrainedProblem(): InvalidInputError {
  return new InvalidInputError(`claims: ${UNCONSTRAINED_EXPLANATION}`, {
    code: 'unconstrained_issuer',
    errors: [{ path: 'claims', message: 'no rule identifies a subject' }],
  });
}

/** Stored JSON, read defensively: a row edited outside the API must not turn into a 500 or a looser rule. */
function parseStored<S extends z.ZodTypeAny>(text: unknown, schema: S): z.infer<S> | undefined {
  if (typeof text !== 'string') return undefined;
  try {
    const parsed = schema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

function rowToIssuer(row: TrustedIssuerRow) {
  const claims = parseStored(row.claim_rules, claimRulesSchema);
  const problemList: string[] = [];
  if (claims === undefined) problemList.push('the stored claim rules are not valid JSON claim rules, so none of them can be applied');
  if (subjectIdentifyingClaims(claims ?? {}).length === 0) problemList.push(`unconstrained: token exchange is refused until a subject-identifying claim rule is added; ${UNCONSTRAINED_EXPLANATION}`);
  return {
    name: row.name,
    issuer: row.issuer,
    jwksUri: row.jwks_uri ?? undefined,
    jwks: row.jwks ? parseStored(row.jwks, issuerFields.jwks) as { keys: JWK[] } | undefined : undefined,
    audience: row.audience,
    claims: claims ?? {},
    keys: parseStored(row.allowed_keys, z.array(z.string())) ?? [],
    images: parseStored(row.allowed_images, z.array(z.string())) ?? [],
    tokenTtl: Number(row.token_ttl),
    enabled: Boolean(row.enabled),
    /** true when exchange is refused because no rule identifies who may exchange (or the rules are unreadable) */
    unconstrained: problemList.length > 0,
    problems: problemList,
    createdBy: row.created_by,
    createdAt: iso(row.created_at),
    updatedAt: iso(row.updated_at),
    tokenGeneration: row.token_generation ?? null,
  };
}

type TrustedIssuer = ReturnType<typeof rowToIssuer>;

/** The API view: the token generation is internal. */
function present(issuer: TrustedIssuer) {
  const { tokenGeneration: _generation, ...view } = issuer;
  return view;
}

/** Which claim rule failed, or undefined when every rule matches. */
export function claimMismatch(payload: JWTPayload, rules: Record<string, string | string[]>): string | undefined {
  for (const [claim, rule] of Object.entries(rules)) {
    const value = payload[claim];
    if (typeof value !== 'string') return `claim ${claim} is missing`;
    const patterns = Array.isArray(rule) ? rule : [rule];
    if (!patterns.some((p) => matchesValueGlob(p, value))) return `claim ${claim}=${value} does not match ${patterns.join(' | ')}`;
  }
  return undefined;
}

/**
 * CI pipelines trade their OIDC token (GitHub Actions, GitLab CI, ...) for a short-lived signer
 * token scoped to the keys and images their trusted issuer allows (RFC 8693 token exchange).
 */
export class TrustedIssuersService {
  private readonly remoteJwks = new Map<string, JWTVerifyGetKey>();

  // the composition root (broker.ts) registers exchange() as the token-exchange grant and
  // checkSignerToken() with the token service
  private readonly dal: TrustedIssuerDal;

  constructor(
    private readonly deps: {
      db: Database;
      audit: AuditService;
      tokens: TokenService;
      auth: AuthService;
      clock: Clock;
      /** resolves the signing keys an issuer's signer scope names (`keys`) */
      signingKeys: Pick<SigningKeysService, 'unknownNames'>;
    },
  ) {
    this.dal = new TrustedIssuerDal(deps.db);
  }

  /** The signer scope may name only signing keys that exist, or `*` (any key, present or future). */
  private async checkKeys(keys: string[] | undefined): Promise<void> {
    if (!keys) return;
    const unknown = await this.deps.signingKeys.unknownNames(keys.filter((k) => k !== '*'));
    if (unknown.length) throw unknownSigningKeysError('trusted issuer', unknown, (n) => `keys.${keys.indexOf(n)}`);
  }

  async create(principal: Principal, meta: RequestMeta, input: TrustedIssuerInput) {
    if (subjectIdentifyingClaims(input.claims).length === 0) throw unconstrainedProblem();
    await this.checkKeys(input.keys);
    const now = this.deps.clock();
    await this.deps.audit
      .transact(async (trx, record) => {
        if (await this.dal.find(input.name, trx)) throw new ConflictError(`trusted issuer ${input.name} already exists`, 'already_exists');
        await this.dal.insert(trx, {
          name: input.name,
          issuer: input.issuer.replace(/\/$/, ''),
          jwks_uri: input.jwksUri ?? null,
          jwks: input.jwks ? JSON.stringify(input.jwks) : null,
          audience: input.audience,
          claim_rules: JSON.stringify(input.claims),
          allowed_keys: JSON.stringify(input.keys),
          allowed_images: JSON.stringify(input.images),
          token_ttl: input.tokenTtl,
          enabled: true,
          // fresh on every create, so tokens of an earlier issuer with the same name never match
          token_generation: crypto.randomUUID(),
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
    return (await this.dal.list()).map((row) => present(rowToIssuer(row)));
  }

  async get(name: string) {
    return present(await this.require(name));
  }

  private async require(name: string, trx?: Transaction): Promise<TrustedIssuer> {
    const row = await this.dal.find(name, trx);
    if (!row) throw new NotFoundError(`trusted issuer ${name}`);
    return rowToIssuer(row);
  }

  /**
   * Changes an issuer, and with it revokes every signer token it issued (they were granted under
   * the old configuration). An enabled issuer must keep a subject-identifying rule; a legacy
   * issuer without one can still be disabled as it is.
   */
  async update(principal: Principal, meta: RequestMeta, name: string, patch: TrustedIssuerUpdate) {
    await this.checkKeys(patch.keys);
    await this.deps.audit.transact(async (trx, record) => {
      const current = await this.require(name, trx);
      const claims = patch.claims ?? current.claims;
      const enabled = patch.enabled ?? current.enabled;
      const unconstrained = patch.claims !== undefined ? subjectIdentifyingClaims(patch.claims).length === 0 : current.unconstrained;
      if (unconstrained && (enabled || patch.claims !== undefined)) throw unconstrainedProblem();
      const changes: TrustedIssuerChanges = { updated_at: this.deps.clock(), token_generation: crypto.randomUUID(), enabled };
      if (patch.issuer !== undefined) changes.issuer = patch.issuer.replace(/\/$/, '');
      if (patch.jwksUri !== undefined) Object.assign(changes, { jwks_uri: patch.jwksUri, jwks: null });
      if (patch.jwks !== undefined) Object.assign(changes, { jwks_uri: null, jwks: JSON.stringify(patch.jwks) });
      if (patch.audience !== undefined) changes.audience = patch.audience;
      if (patch.claims !== undefined) changes.claim_rules = JSON.stringify(claims);
      if (patch.keys !== undefined) changes.allowed_keys = JSON.stringify(patch.keys);
      if (patch.images !== undefined) changes.allowed_images = JSON.stringify(patch.images);
      if (patch.tokenTtl !== undefined) changes.token_ttl = patch.tokenTtl;
      await this.dal.update(trx, name, changes);
      const action = patch.enabled === false ? 'trustedissuer.disable' : patch.enabled === true ? 'trustedissuer.enable' : 'trustedissuer.update';
      await record({
        actor: actorOf(principal),
        action,
        resource: { kind: 'trusted-issuer', name },
        outcome: 'allow',
        details: { fields: Object.keys(patch).sort(), signerTokensRevoked: true },
        request: meta,
      });
    });
    return this.get(name);
  }

  /** Deleting an issuer revokes the signer tokens it issued: they are checked against its row on every use. */
  async remove(principal: Principal, meta: RequestMeta, name: string) {
    await this.deps.audit.transact(async (trx, record) => {
      const deleted = await this.dal.delete(trx, name);
      if (!deleted) throw new NotFoundError(`trusted issuer ${name}`);
      await record({ actor: actorOf(principal), action: 'trustedissuer.delete', resource: { kind: 'trusted-issuer', name }, outcome: 'allow', details: { signerTokensRevoked: true }, request: meta });
    });
  }

  /**
   * Runs on every use of a signer token, on whichever instance receives it: the database row is
   * the only state, so a delete, disable or change on one instance is seen by all at once.
   */
  async checkSignerToken(token: { issuer: string; generation: string | null }): Promise<void> {
    const row = await this.dal.find(token.issuer);
    if (!row) throw new UnauthenticatedError('the trusted issuer that issued this token was deleted', 'issuer_deleted');
    const issuer = rowToIssuer(row);
    if (!issuer.enabled) throw new UnauthenticatedError('the trusted issuer that issued this token is disabled', 'issuer_disabled');
    if (issuer.tokenGeneration !== token.generation) throw new UnauthenticatedError('the trusted issuer was changed after this token was issued', 'token_revoked');
    if (issuer.unconstrained) throw new UnauthenticatedError('the trusted issuer that issued this token has no subject-identifying claim rule', 'issuer_unconstrained');
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

  private async fail(meta: RequestMeta, kind: 'unauthenticated' | 'forbidden', code: string, detail: string, details: Record<string, unknown>): Promise<never> {
    await this.deps.auth.recordFailure(meta, { kind: 'ci', id: (details.subject as string) ?? undefined }, detail, { grantType: TOKEN_EXCHANGE_GRANT, ...details });
    throw new OAuthError(kind, kind === 'unauthenticated' ? 'invalid_grant' : 'access_denied', code, detail);
  }

  async exchange(params: Record<string, string>, meta: RequestMeta): Promise<TokenResponse> {
    const subjectToken = params.subject_token;
    if (!subjectToken || subjectToken.length > 16_384) throw new OAuthError('invalid_input', 'invalid_request', 'invalid_request', 'subject_token is required');
    if (params.subject_token_type && !ACCEPTED_SUBJECT_TOKEN_TYPES.has(params.subject_token_type)) {
      throw new OAuthError('invalid_input', 'invalid_request', 'invalid_request', 'subject_token_type must be a JWT or ID token type');
    }
    const credential = await this.deps.audit.hmac(subjectToken);
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(subjectToken);
    } catch {
      return this.fail(meta, 'unauthenticated', 'invalid_subject_token', 'subject_token is not a JWT', { credential });
    }
    const iss = typeof unverified.iss === 'string' ? unverified.iss.replace(/\/$/, '') : '';
    const registrations = (await this.dal.forIssuer(iss)).map(rowToIssuer);
    const candidates = registrations.filter((r) => r.enabled);
    if (candidates.length === 0) {
      // to the caller a disabled issuer looks like an unknown one (nothing is verified yet); the audit record says which
      const disabled = registrations.map((r) => r.name);
      return this.fail(meta, 'unauthenticated', 'untrusted_issuer', `issuer ${iss || '(none)'} is not trusted`, { credential, ...(disabled.length ? { disabledRegistrations: disabled } : {}) });
    }

    let lastMismatch = '';
    // a registration without a subject-identifying rule would accept any repository on the
    // platform: it is refused (after the token proved to come from the issuer), never used
    let unconstrained: TrustedIssuer | undefined;
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
      } catch (err) {
        const { code: errCode, claim: errClaim } = (err ?? {}) as { code?: unknown; claim?: unknown };
        const code = String(errCode ?? '');
        const claim = String(errClaim ?? '');
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
      if (issuer.unconstrained) {
        unconstrained ??= issuer;
        continue;
      }
      const subject = `${issuer.name}:${String(payload.sub ?? '')}`.slice(0, 200);
      const scope = { keys: issuer.keys, images: issuer.images };
      const issued = await this.deps.tokens.issueSignerToken(subject, issuer.name, scope, issuer.tokenTtl, issuer.tokenGeneration);
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
    if (unconstrained) {
      return this.fail(
        meta,
        'forbidden',
        'issuer_unconstrained',
        `trusted issuer ${unconstrained.name} has no claim rule that identifies the CI subject (${SUBJECT_CLAIMS.join(', ')}), so it may not be used until an administrator adds one`,
        { credential, issuer: unconstrained.name, subject: String(unverified.sub ?? '') },
      );
    }
    if (!lastMismatch && verifyFailure) return this.fail(meta, 'unauthenticated', verifyFailure.reason, verifyFailure.detail, { credential, issuer: verifyFailure.issuer });
    return this.fail(meta, 'forbidden', 'claims_mismatch', lastMismatch || 'the CI token claims do not match any rule', { credential, subject: String(unverified.sub ?? '') });
  }
}

function pickClaims(payload: JWTPayload, names: string[]): Record<string, unknown> {
  return Object.fromEntries(names.filter((n) => typeof payload[n] === 'string' || typeof payload[n] === 'number').map((n) => [n, payload[n]]));
}

