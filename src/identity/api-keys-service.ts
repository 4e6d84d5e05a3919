import crypto from 'node:crypto';
import type { Knex } from 'knex';
import { z } from 'zod';
import type { AuditService } from '../audit/audit-service.js';
import { sha256Hex, randomToken } from '../crypto/hashing.js';
import { problems } from '../http/problem.js';
import type { RequestMeta } from '../http/request-context.js';
import { iso } from '../secrets/secrets-types.js';
import { isUniqueViolation } from './identity-util.js';
import { actorOf, principalLabel, OPERATOR_ROLES, type OperatorRole, type Principal, type SignerScope } from './identity-types.js';

export const createApiKeySchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._@-]{1,128}$/, 'must match ^[A-Za-z0-9._@-]{1,128}$'),
    role: z.enum(OPERATOR_ROLES),
    ttlSeconds: z.number().int().min(60).max(10 * 365 * 86400).optional(),
    scope: z
      .object({
        keys: z.array(z.string().regex(/^[A-Za-z0-9._-]{1,128}$/)).max(100),
        images: z.array(z.string().min(1).max(512)).max(100),
      })
      .strict()
      .optional(),
  })
  .strict()
  .refine((v) => v.role === 'signer' || v.scope === undefined, 'scope applies to signer keys only');

export const BOOTSTRAP_ADMIN_KEY_ID = 'bootstrap-admin';

function rowToApiKey(row: any) {
  return {
    id: row.id,
    name: row.name,
    role: row.role as OperatorRole,
    scope: row.scope ? (JSON.parse(row.scope) as SignerScope) : undefined,
    createdBy: row.created_by,
    createdAt: iso(row.created_at),
    expiresAt: iso(row.expires_at),
    revokedAt: iso(row.revoked_at),
  };
}

/** Operator API keys: `kw_` + 32 random bytes, stored as SHA-256 (they are high-entropy). */
export class ApiKeysService {
  constructor(private readonly deps: { db: Knex; audit: AuditService; clock: () => number }) {}

  async authenticate(presented: string): Promise<Principal> {
    const row = await this.deps.db('api_keys').where({ key_hash: sha256Hex(presented) }).first();
    const now = this.deps.clock();
    if (!row) throw problems.unauthenticated('the API key is not valid', 'invalid_api_key');
    if (row.revoked_at !== null) throw problems.unauthenticated('the API key was revoked', 'api_key_revoked');
    if (row.expires_at !== null && row.expires_at <= now) throw problems.unauthenticated('the API key has expired', 'api_key_expired');
    return {
      kind: 'operator',
      role: row.role,
      id: row.id,
      name: row.name,
      scope: row.scope ? JSON.parse(row.scope) : undefined,
      via: 'api-key',
    };
  }

  async create(principal: Principal, meta: RequestMeta, input: z.infer<typeof createApiKeySchema>) {
    const id = crypto.randomBytes(9).toString('base64url');
    const key = randomToken('kw_');
    const now = this.deps.clock();
    await this.deps.audit.transact(async (trx, record) => {
      await trx('api_keys').insert({
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
    const row = await this.deps.db('api_keys').where({ id }).first();
    return { ...rowToApiKey(row), key };
  }

  async list() {
    return (await this.deps.db('api_keys').orderBy('created_at')).map(rowToApiKey);
  }

  async revoke(principal: Principal, meta: RequestMeta, id: string) {
    await this.deps.audit.transact(async (trx, record) => {
      const row = await trx('api_keys').where({ id }).first();
      if (!row) throw problems.notFound(`API key ${id}`);
      if (row.revoked_at === null) await trx('api_keys').where({ id }).update({ revoked_at: this.deps.clock() });
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
   * First start: create the admin key (random, or KEYWARDEN_BOOTSTRAP_ADMIN_KEY) and return it
   * to be printed once. Returns undefined when any key exists already. The fixed id makes two
   * instances starting together create only one.
   */
  async bootstrapAdmin(presetKey?: string): Promise<string | undefined> {
    const existing = await this.deps.db('api_keys').count<{ n: number }[]>('* as n').first();
    if (Number(existing?.n) > 0) return undefined;
    const key = presetKey ?? randomToken('kw_');
    const now = this.deps.clock();
    try {
      await this.deps.audit.transact(async (trx, record) => {
        await trx('api_keys').insert({
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
    } catch (err: any) {
      if (isUniqueViolation(err)) return undefined;
      throw err;
    }
    return key;
  }
}
