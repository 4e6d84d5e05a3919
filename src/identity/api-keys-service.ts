import crypto from 'node:crypto';
import { z } from 'zod';
import type { AuditService } from '../audit/audit-service.js';
import { sha256Hex, randomToken, randomIdentifier } from '../crypto/hashing.js';
import { InvalidInputError, NotFoundError, UnauthenticatedError } from '../core/errors.js';
import type { RequestMeta } from '../core/principal.js';
import { iso, type Clock } from '../core/clock.js';
import { isUniqueViolation } from './identity-util.js';
import type { ApiKeyRow, ApiKeysDal } from './api-keys-dal.js';
import { actorOf, principalLabel, OPERATOR_ROLES, type Principal, type SignerScope } from './identity-types.js';
import type { FailureRateLimiter } from './rate-limiter.js';

/** An API key's name (not unique; the id is). */
export const API_KEY_NAME = /^[A-Za-z0-9._@-]{1,128}$/;
/** Bounds of an API key's lifetime in seconds. */
export const API_KEY_TTL_SECONDS = { min: 60, max: 10 * 365 * 86400 } as const;

export const createApiKeySchema = z
  .object({
    name: z.string().regex(API_KEY_NAME, 'must match ^[A-Za-z0-9._@-]{1,128}$'),
    role: z.enum(OPERATOR_ROLES),
    ttlSeconds: z.number().int().min(API_KEY_TTL_SECONDS.min).max(API_KEY_TTL_SECONDS.max).optional(),
    scope: z
      .object({
        keys: z.array(z.string().regex(/^[A-Za-z0-9._-]{1,128}$/)).max(100),
        images: z.array(z.string().min(1).max(512)).max(100),
      })
      .strict()
      .optional(),
  })
  .strict()
  .refine((v) => v.role === 'signer' || v.scope === undefined, 'scope applies to signer keys only')
  // Refinements do not reach JSON Schema; the description carries them to openapi.yaml.
  .describe('`scope` applies to signer keys only.');

export const BOOTSTRAP_ADMIN_KEY_ID = 'bootstrap-admin';

/**
 * The rate-limit bucket kind of failed API keys, one bucket per source address
 * (KEYWARDEN_AUTH_MAX_API_KEY_FAILURES_PER_ADDRESS per KEYWARDEN_AUTH_FAILURE_WINDOW).
 */
export const API_KEY_FAILURE_BUCKET = 'api-key';

/** The audit action of a break-glass admin key (`keywarden break-glass`). */
export const BREAK_GLASS_ACTION = 'apikey.break-glass';

/** Who ran `keywarden break-glass` on the broker host, and why: recorded with the key. */
export interface BreakGlassOperator {
  /** The effective user's account name (`uid-N` when it has none). */
  osUser: string;
  /** The real user id, and its account name. */
  uid: number | null;
  user: string | null;
  /** The effective user id (differs from uid under a setuid program). */
  euid: number | null;
  /**
   * The audit login uid (/proc/self/loginuid): who logged in, kept by the kernel across sudo and
   * su; null when unset (4294967295) or unknown. With its account name.
   */
  loginUid: number | null;
  loginUser: string | null;
  /** SUDO_USER as the environment had it: the runner can set it to anything, so only a claim. */
  claimedSudoUser: string | null;
  host: string;
  pid: number;
  reason: string;
}

function rowToApiKey(row: ApiKeyRow) {
  return {
    id: row.id,
    name: row.name,
    role: row.role,
    scope: row.scope ? (JSON.parse(row.scope) as SignerScope) : undefined,
    createdBy: row.created_by,
    createdAt: iso(row.created_at),
    expiresAt: iso(row.expires_at),
    revokedAt: iso(row.revoked_at),
  };
}

/** Operator API keys: `kw_` + 32 random bytes, stored as SHA-256 (they are high-entropy). */
export class ApiKeysService {
  constructor(
    private readonly deps: {
      dal: ApiKeysDal;
      audit: AuditService;
      clock: Clock;
      /** Counts failed keys per source address (see authenticate). */
      rateLimiter?: FailureRateLimiter;
      /**
       * The names among a signer scope's `keys` that are not signing keys (the composition root
       * binds it to SigningKeysService.unknownNames); such a scope is refused at create.
       */
      unknownSigningKeys?: (names: readonly string[]) => Promise<string[]>;
    },
  ) {}

  /**
   * The operator of a presented key. With `from` (where the request came from), failures count
   * per source address, in one bucket for every route, the Vault API and the console login: once
   * the address is over its limit, every key from it is refused with 429 until the window ends,
   * the right one included, so that keys cannot be guessed through any of them.
   */
  async authenticate(presented: string, from?: Pick<RequestMeta, 'sourceIp'>): Promise<Principal> {
    if (!from || !this.deps.rateLimiter) return this.verify(presented);
    const buckets = [{ kind: API_KEY_FAILURE_BUCKET, key: from.sourceIp ?? 'unknown' }];
    await this.deps.rateLimiter.check(buckets);
    try {
      return await this.verify(presented);
    } catch (err) {
      if (err instanceof UnauthenticatedError) await this.deps.rateLimiter.recordFailure(buckets);
      throw err;
    }
  }

  private async verify(presented: string): Promise<Principal> {
    const row = await this.deps.dal.findByHash(sha256Hex(presented));
    const now = this.deps.clock();
    if (!row) throw new UnauthenticatedError('the API key is not valid', 'invalid_api_key');
    if (row.revoked_at !== null) throw new UnauthenticatedError('the API key was revoked', 'api_key_revoked');
    if (row.expires_at !== null && row.expires_at <= now) throw new UnauthenticatedError('the API key has expired', 'api_key_expired');
    return {
      kind: 'operator',
      role: row.role,
      id: row.id,
      name: row.name,
      scope: row.scope ? (JSON.parse(row.scope) as SignerScope) : undefined,
      via: 'api-key',
    };
  }

  /**
   * The operator of a key known by id, if the key is still active (not revoked, not expired):
   * what a console session (issued for that key) re-checks on every request.
   */
  async activeById(id: string): Promise<Principal> {
    const row = await this.deps.dal.find(id);
    if (!row) throw new UnauthenticatedError('the API key of this session no longer exists', 'session_expired');
    if (row.revoked_at !== null) throw new UnauthenticatedError('the API key of this session was revoked', 'session_expired');
    if (row.expires_at !== null && row.expires_at <= this.deps.clock()) throw new UnauthenticatedError('the API key of this session has expired', 'session_expired');
    return { kind: 'operator', role: row.role, id: row.id, name: row.name, via: 'api-key' };
  }

  async create(principal: Principal, meta: RequestMeta, input: z.infer<typeof createApiKeySchema>) {
    const scopeKeys = input.scope?.keys ?? [];
    const unknown = scopeKeys.length && this.deps.unknownSigningKeys ? await this.deps.unknownSigningKeys(scopeKeys) : [];
    if (unknown.length) {
      throw new InvalidInputError(`scope references unknown signing key${unknown.length === 1 ? '' : 's'} ${unknown.map((n) => JSON.stringify(n)).join(', ')}; create the signing key first`, {
        code: 'unknown_reference',
        title: 'Unknown reference',
        errors: unknown.map((n) => ({ path: `scope.keys.${scopeKeys.indexOf(n)}`, message: `unknown signing key ${JSON.stringify(n)}` })),
      });
    }
    const id = randomIdentifier(9);
    const key = randomToken('kw_');
    const now = this.deps.clock();
    await this.deps.audit.transact(async (trx, record) => {
      await this.deps.dal.insert(trx, {
        id,
        name: input.name,
        role: input.role,
        key_hash: sha256Hex(key),
        scope: input.scope ? JSON.stringify(input.scope) : null,
        created_by: principalLabel(principal),
        created_at: now,
        expires_at: input.ttlSeconds ? now + input.ttlSeconds * 1000 : null,
      });
      await record({
        actor: actorOf(principal),
        action: 'apikey.create',
        resource: { kind: 'api-key', name: id },
        outcome: 'allow',
        details: { role: input.role, name: input.name },
        request: meta,
      });
    });
    const row = await this.deps.dal.find(id);
    if (!row) throw new Error(`API key ${id} is missing after its creation committed`);
    return { ...rowToApiKey(row), key };
  }

  async list() {
    return (await this.deps.dal.list()).map(rowToApiKey);
  }

  async revoke(principal: Principal, meta: RequestMeta, id: string) {
    await this.deps.audit.transact(async (trx, record) => {
      const row = await this.deps.dal.find(id, trx);
      if (!row) throw new NotFoundError(`API key ${id}`);
      if (row.revoked_at === null) await this.deps.dal.setRevoked(trx, id, this.deps.clock());
      await record({
        actor: actorOf(principal),
        action: 'apikey.revoke',
        resource: { kind: 'api-key', name: id },
        outcome: 'allow',
        details: { role: row.role, name: row.name },
        request: meta,
      });
    });
  }

  /**
   * Break-glass: a new admin key issued locally on the broker host (no API key needed), for when
   * every admin key is lost or revoked. The key and its audit event, naming the OS user, host,
   * pid and reason, commit in one transaction; the key is returned to be shown once.
   */
  async breakGlass(input: { name: string; ttlSeconds?: number; operator: BreakGlassOperator }) {
    const { operator } = input;
    if (!API_KEY_NAME.test(input.name)) throw new InvalidInputError('name must match ^[A-Za-z0-9._@-]{1,128}$');
    if (input.ttlSeconds !== undefined && !(Number.isInteger(input.ttlSeconds) && input.ttlSeconds >= API_KEY_TTL_SECONDS.min && input.ttlSeconds <= API_KEY_TTL_SECONDS.max)) {
      throw new InvalidInputError(`the lifetime must be between ${API_KEY_TTL_SECONDS.min} seconds and ten years`);
    }
    if (!operator.reason.trim()) throw new InvalidInputError('a reason is required');
    const id = randomIdentifier(9);
    const key = randomToken('kw_');
    const now = this.deps.clock();
    const expiresAt = input.ttlSeconds ? now + input.ttlSeconds * 1000 : null;
    const who = `${operator.osUser}@${operator.host}`;
    await this.deps.audit.transact(async (trx, record) => {
      await this.deps.dal.insert(trx, {
        id,
        name: input.name,
        role: 'admin',
        key_hash: sha256Hex(key),
        created_by: `break-glass:${who}`.slice(0, 200),
        created_at: now,
        expires_at: expiresAt,
      });
      await record({
        actor: { kind: 'system', id: who.slice(0, 128), name: 'keywarden break-glass' },
        action: BREAK_GLASS_ACTION,
        resource: { kind: 'api-key', name: id },
        outcome: 'allow',
        reason: operator.reason,
        details: {
          role: 'admin',
          name: input.name,
          expiresAt: iso(expiresAt),
          osUser: operator.osUser,
          uid: operator.uid,
          user: operator.user,
          euid: operator.euid,
          loginUid: operator.loginUid,
          loginUser: operator.loginUser,
          claimedSudoUser: operator.claimedSudoUser,
          host: operator.host,
          pid: operator.pid,
          reason: operator.reason,
        },
      });
    });
    const row = await this.deps.dal.find(id);
    if (!row) throw new Error(`API key ${id} is missing after its creation committed`);
    return { ...rowToApiKey(row), key };
  }

  /**
   * First start: create the admin key (random, or KEYWARDEN_BOOTSTRAP_ADMIN_KEY) and return it
   * to be printed once. Returns undefined when any key exists already. The fixed id makes two
   * instances starting together create only one.
   */
  async bootstrapAdmin(presetKey?: string): Promise<string | undefined> {
    if ((await this.deps.dal.count()) > 0) return undefined;
    const key = presetKey ?? randomToken('kw_');
    const now = this.deps.clock();
    try {
      await this.deps.audit.transact(async (trx, record) => {
        await this.deps.dal.insert(trx, {
          id: BOOTSTRAP_ADMIN_KEY_ID,
          name: 'bootstrap-admin',
          role: 'admin',
          key_hash: sha256Hex(key),
          created_by: 'system',
          created_at: now,
        });
        await record({
          actor: { kind: 'system', name: 'keywarden' },
          action: 'apikey.create',
          resource: { kind: 'api-key', name: BOOTSTRAP_ADMIN_KEY_ID },
          outcome: 'allow',
          details: { role: 'admin', name: 'bootstrap-admin', bootstrap: true },
        });
      });
    } catch (err) {
      if (isUniqueViolation(err)) return undefined;
      throw err;
    }
    return key;
  }
}
