import { z } from 'zod';
import type { AccessService, GroupChanges, GroupRow } from '../access/access-service.js';
import type { AuditService } from '../audit/audit-service.js';
import { ConflictError, InvalidInputError, NotFoundError, PreconditionFailedError } from '../core/errors.js';
import type { RequestMeta } from '../core/principal.js';
import { descriptionSchema, labelsSchema, nameSchema } from '../core/validation.js';
import type { Queryable } from '../db/database.js';
import type { SecretsService } from '../secrets/secrets-service.js';
import type { ClientsDal } from './clients-dal.js';
import { membershipChangeSchema } from './clients-service.js';
import { actorOf, principalLabel, type Principal } from './identity-types.js';
import { rethrowUniqueAsConflictFn } from './identity-util.js';
import { iso, type Clock } from '../core/clock.js';

/** The audiences a member's tokens may be issued for; null: the group does not restrict them. */
const allowedAudiencesSchema = z.array(z.string().min(1).max(512)).max(50).nullable();

export const createGroupSchema = z
  .object({
    name: nameSchema,
    description: descriptionSchema.optional(),
    labels: labelsSchema.optional(),
    allowedAudiences: allowedAudiencesSchema.optional(),
  })
  .strict();

/** PATCH /v1/groups/{name}: the fields given replace the stored ones (labels as a whole); grants and members stay. */
export const updateGroupSchema = z
  .object({
    description: descriptionSchema.optional(),
    labels: labelsSchema.optional(),
    allowedAudiences: allowedAudiencesSchema.optional(),
  })
  .strict();

/**
 * A group's ETag: its `updated_at` in epoch milliseconds, which every change moves strictly
 * forward (AccessDal.updateGroup), e.g. `"1767225600000"`. Derived from the view's `updatedAt`.
 */
export function groupETag(view: { updatedAt: string | null }): string {
  return `"${Date.parse(view.updatedAt ?? '')}"`;
}

/** `If-Match` for a group: `*` (any current state) or one ETag; undefined when absent. */
export type GroupIfMatch = number | '*' | undefined;

export { membershipChangeSchema };

export class GroupsService {
  constructor(private readonly deps: { access: AccessService; secrets: SecretsService; clients: ClientsDal; audit: AuditService; clock: Clock }) {}

  private present(row: GroupRow) {
    return {
      name: row.name,
      description: row.description,
      labels: JSON.parse(row.labels),
      allowedAudiences: row.allowed_audiences ? JSON.parse(row.allowed_audiences) : null,
      createdBy: row.created_by,
      createdAt: iso(row.created_at),
      updatedAt: iso(row.updated_at),
    };
  }

  async create(principal: Principal, meta: RequestMeta, input: z.infer<typeof createGroupSchema>) {
    const now = this.deps.clock();
    return this.deps.audit
      .transact(async (trx, record) => {
        if (await this.deps.access.findGroup(input.name, trx)) throw new ConflictError(`group ${input.name} already exists`, 'already_exists');
        await this.deps.access.createGroup(trx, {
          name: input.name,
          description: input.description ?? '',
          labels: JSON.stringify(input.labels ?? {}),
          allowed_audiences: input.allowedAudiences ? JSON.stringify(input.allowedAudiences) : null,
          created_by: principalLabel(principal),
          created_at: now,
          updated_at: now,
        });
        await record({ actor: actorOf(principal), action: 'group.create', resource: { kind: 'group', name: input.name }, outcome: 'allow', request: meta });
        return this.get(input.name, trx);
      })
      .catch(rethrowUniqueAsConflictFn(`group ${input.name} already exists`));
  }

  async list(after: string | undefined, limit: number) {
    return (await this.deps.access.listGroups(after, limit)).map((r) => this.present(r));
  }

  /** Pass a write's transaction to describe the state that transaction produced, not a later one. */
  async get(name: string, trx?: Queryable) {
    const row = await this.deps.access.requireGroup(name, trx);
    const secrets = await this.deps.access.secretsOfGroup(row.id, trx);
    const clients = await this.deps.access.clientsOfGroup(row.id, trx);
    return { ...this.present(row), secrets, clients };
  }

  /**
   * Changes description, labels or allowedAudiences. With `ifMatch` (an ETag's number) the write
   * is a compare-and-set in SQL, so of two instances changing the same state only one succeeds
   * and the other answers 412; without it, the fields given win and the others are kept.
   */
  async update(principal: Principal, meta: RequestMeta, name: string, patch: z.infer<typeof updateGroupSchema>, ifMatch: GroupIfMatch = undefined) {
    const now = this.deps.clock();
    return this.deps.audit.transact(async (trx, record) => {
      const row = await this.deps.access.requireGroup(name, trx);
      const current = Number(row.updated_at);
      const expected = typeof ifMatch === 'number' ? ifMatch : undefined;
      if (expected !== undefined && current !== expected) {
        throw new PreconditionFailedError(`group ${name} has changed: its ETag is "${current}", not "${expected}"`);
      }
      const changes: GroupChanges = {};
      if (patch.description !== undefined) changes.description = patch.description;
      if (patch.labels !== undefined) changes.labels = JSON.stringify(patch.labels);
      if (patch.allowedAudiences !== undefined) changes.allowed_audiences = patch.allowedAudiences ? JSON.stringify(patch.allowedAudiences) : null;
      if (!(await this.deps.access.updateGroup(trx, row.id, changes, now, expected))) {
        // between the read above and this write, another transaction (maybe another instance) committed
        if (expected !== undefined) throw new PreconditionFailedError(`group ${name} was changed concurrently; read it again`);
        throw new NotFoundError(`group ${name}`);
      }
      const details: Record<string, unknown> = { fields: Object.keys(patch).sort() };
      if (patch.allowedAudiences !== undefined) {
        details.allowedAudiences = patch.allowedAudiences;
        details.previousAllowedAudiences = row.allowed_audiences ? JSON.parse(row.allowed_audiences) : null;
      }
      await record({ actor: actorOf(principal), action: 'group.update', resource: { kind: 'group', name }, outcome: 'allow', details, request: meta });
      return this.get(name, trx);
    });
  }

  async remove(principal: Principal, meta: RequestMeta, name: string) {
    await this.deps.audit.transact(async (trx, record) => {
      const row = await this.deps.access.requireGroup(name, trx);
      await this.deps.access.deleteGroup(trx, row.id);
      await record({ actor: actorOf(principal), action: 'group.delete', resource: { kind: 'group', name }, outcome: 'allow', request: meta });
    });
  }

  async changeSecrets(principal: Principal, meta: RequestMeta, name: string, change: z.infer<typeof membershipChangeSchema>) {
    const now = this.deps.clock();
    return this.deps.audit.transact(async (trx, record) => {
      const group = await this.deps.access.requireGroup(name, trx);
      const names = [...new Set([...change.add, ...change.remove])];
      const rows = await this.deps.secrets.liveIdsByName(names, trx);
      const missing = names.filter((n) => !rows.some((r) => r.name === n));
      if (missing.length) throw new InvalidInputError(`unknown secrets: ${missing.join(', ')}`);
      const idOf = (n: string) => rows.find((r) => r.name === n)!.id;
      for (const s of new Set(change.add)) {
        // a grant row forged without a MAC is replaced by this one, not kept beside it
        await this.deps.access.grant(trx, group.id, idOf(s), now);
        await record({ actor: actorOf(principal), action: 'grant.add', resource: { kind: 'secret', name: s }, outcome: 'allow', details: { group: name }, request: meta });
      }
      for (const s of new Set(change.remove)) {
        await this.deps.access.revoke(trx, group.id, idOf(s));
        await record({ actor: actorOf(principal), action: 'grant.remove', resource: { kind: 'secret', name: s }, outcome: 'allow', details: { group: name }, request: meta });
      }
      return this.get(name, trx);
    });
  }

  async changeClients(principal: Principal, meta: RequestMeta, name: string, change: z.infer<typeof membershipChangeSchema>) {
    const now = this.deps.clock();
    return this.deps.audit.transact(async (trx, record) => {
      await this.deps.access.requireGroup(name, trx);
      const names = [...new Set([...change.add, ...change.remove])];
      const rows = await this.deps.clients.namesToIds(names, trx);
      const missing = names.filter((n) => !rows.some((r) => r.name === n));
      if (missing.length) throw new InvalidInputError(`unknown clients: ${missing.join(', ')}`);
      const byName = (list: string[]) => [...new Set(list)].map((n) => rows.find((r) => r.name === n)!);
      for (const c of byName(change.add)) await this.deps.access.changeMemberships(trx, record, principal, meta, [c], [name], [], now);
      for (const c of byName(change.remove)) await this.deps.access.changeMemberships(trx, record, principal, meta, [c], [], [name], now);
      return this.get(name, trx);
    });
  }
}
