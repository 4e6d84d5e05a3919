import type { Knex } from 'knex';
import { z } from 'zod';
import type { AuditService } from '../audit/audit-service.js';
import { problems } from '../http/problem.js';
import type { RequestMeta } from '../http/request-context.js';
import { descriptionSchema, labelsSchema, nameSchema } from '../http/validation.js';
import type { RowIntegrity } from '../secrets/row-integrity.js';
import { applyMembershipChange, membershipChangeSchema } from './clients-service.js';
import { actorOf, principalLabel, type Principal } from './identity-types.js';
import { iso, rethrowUniqueAsConflictFn } from './identity-util.js';

export const createGroupSchema = z
  .object({
    name: nameSchema,
    description: descriptionSchema.optional(),
    labels: labelsSchema.optional(),
    allowedAudiences: z.array(z.string().min(1).max(512)).max(50).nullable().optional(),
  })
  .strict();

export { membershipChangeSchema };

export class GroupsService {
  constructor(private readonly deps: { db: Knex; audit: AuditService; clock: () => number; rowIntegrity: RowIntegrity }) {}

  private present(row: any) {
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

  private async requireRow(name: string, trx: Knex = this.deps.db) {
    const row = await trx('groups').where({ name }).first();
    if (!row) throw problems.notFound(`group ${name}`);
    return row;
  }

  async create(principal: Principal, meta: RequestMeta, input: z.infer<typeof createGroupSchema>) {
    const now = this.deps.clock();
    return this.deps.audit
      .transact(async (trx, record) => {
        if (await trx('groups').where({ name: input.name }).first()) throw problems.conflict(`group ${input.name} already exists`, 'already_exists');
        await trx('groups').insert({
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
    const q = this.deps.db('groups').orderBy('name').limit(limit);
    if (after !== undefined) q.where('name', '>', after);
    return (await q).map((r: any) => this.present(r));
  }

  /** Pass a write's transaction to describe the state that transaction produced, not a later one. */
  async get(name: string, trx: Knex = this.deps.db) {
    const row = await this.requireRow(name, trx);
    const secrets = await trx('access_grants as g')
      .join('secrets as s', 's.id', 'g.secret_id')
      .where('g.group_id', row.id)
      .whereNull('s.deleted_at')
      .orderBy('s.name')
      .select('s.name');
    const clients = await trx('memberships as m').join('clients as c', 'c.id', 'm.client_id').where('m.group_id', row.id).orderBy('c.name').select('c.name');
    return { ...this.present(row), secrets: secrets.map((r: any) => r.name), clients: clients.map((r: any) => r.name) };
  }

  async remove(principal: Principal, meta: RequestMeta, name: string) {
    await this.deps.audit.transact(async (trx, record) => {
      const row = await this.requireRow(name, trx);
      await trx('access_grants').where({ group_id: row.id }).delete();
      await trx('memberships').where({ group_id: row.id }).delete();
      await trx('groups').where({ id: row.id }).delete();
      await record({ actor: actorOf(principal), action: 'group.delete', resource: { kind: 'group', name }, outcome: 'allow', request: meta });
    });
  }

  async changeSecrets(principal: Principal, meta: RequestMeta, name: string, change: z.infer<typeof membershipChangeSchema>) {
    const now = this.deps.clock();
    return this.deps.audit.transact(async (trx, record) => {
      const group = await this.requireRow(name, trx);
      const names = [...new Set([...change.add, ...change.remove])];
      const rows = names.length ? await trx('secrets').whereIn('name', names).whereNull('deleted_at').select('id', 'name') : [];
      const missing = names.filter((n) => !rows.some((r: any) => r.name === n));
      if (missing.length) throw problems.badRequest(`unknown secrets: ${missing.join(', ')}`);
      const idOf = (n: string) => rows.find((r: any) => r.name === n)!.id;
      for (const s of new Set(change.add)) {
        // a grant row forged without a MAC is replaced by this one, not kept beside it
        const rowMac = this.deps.rowIntegrity.grantMac({ groupId: group.id, secretId: idOf(s) });
        await trx('access_grants').insert({ group_id: group.id, secret_id: idOf(s), created_at: now, row_mac: rowMac }).onConflict(['group_id', 'secret_id']).merge({ row_mac: rowMac });
        await record({ actor: actorOf(principal), action: 'grant.add', resource: { kind: 'secret', name: s }, outcome: 'allow', details: { group: name }, request: meta });
      }
      for (const s of new Set(change.remove)) {
        await trx('access_grants').where({ group_id: group.id, secret_id: idOf(s) }).delete();
        await record({ actor: actorOf(principal), action: 'grant.remove', resource: { kind: 'secret', name: s }, outcome: 'allow', details: { group: name }, request: meta });
      }
      return this.get(name, trx);
    });
  }

  async changeClients(principal: Principal, meta: RequestMeta, name: string, change: z.infer<typeof membershipChangeSchema>) {
    const now = this.deps.clock();
    return this.deps.audit.transact(async (trx, record) => {
      await this.requireRow(name, trx);
      const names = [...new Set([...change.add, ...change.remove])];
      const rows = names.length ? await trx('clients').whereIn('name', names).select('id', 'name') : [];
      const missing = names.filter((n) => !rows.some((r: any) => r.name === n));
      if (missing.length) throw problems.badRequest(`unknown clients: ${missing.join(', ')}`);
      const byName = (list: string[]) => [...new Set(list)].map((n) => rows.find((r: any) => r.name === n)!);
      for (const c of byName(change.add)) await applyMembershipChange(trx, record, principal, meta, [c], [name], [], now);
      for (const c of byName(change.remove)) await applyMembershipChange(trx, record, principal, meta, [c], [], [name], now);
      return this.get(name, trx);
    });
  }
}
