import type { Database, Queryable, Transaction } from '../../db/database.js';

/** A row of trust_policies: the current version of each policy. */
export interface PolicyRow {
  name: string;
  version: number;
  document: string;
  updated_by: string;
  created_at: number;
  updated_at: number;
}

/** A row of trust_policy_versions: every change, never reused (a delete has no document). */
export interface PolicyVersionRow {
  name: string;
  version: number;
  document: string | null;
  change: 'create' | 'update' | 'delete';
  changed_by: string;
  changed_at: number;
}

/** The trust_policies and trust_policy_versions tables; nothing else queries them. */
export class PolicyDal {
  constructor(private readonly db: Database) {}

  /** Pass a write's transaction to read what that transaction sees. */
  async find(name: string, executor: Queryable = this.db.reader): Promise<PolicyRow | undefined> {
    return executor<PolicyRow>('trust_policies').where({ name }).first();
  }

  async list(opts: { after?: string; limit: number }): Promise<PolicyRow[]> {
    const q = this.db.reader<PolicyRow>('trust_policies').orderBy('name').limit(opts.limit);
    if (opts.after !== undefined) q.where('name', '>', opts.after);
    return q;
  }

  async all(): Promise<Pick<PolicyRow, 'name' | 'version' | 'document'>[]> {
    return this.db.reader<PolicyRow>('trust_policies').select('name', 'version', 'document');
  }

  /** The highest version ever recorded for `name` (deleted policies included); 0 when none. */
  async latestVersion(trx: Transaction, name: string): Promise<number> {
    const row = (await trx<PolicyVersionRow>('trust_policy_versions').where({ name }).max({ v: 'version' }).first()) as { v: number | string | null } | undefined;
    return Number(row?.v ?? 0);
  }

  async insert(trx: Transaction, row: PolicyRow): Promise<void> {
    await trx<PolicyRow>('trust_policies').insert(row);
  }

  /** Updates the policy if it is still at `fromVersion`; false when it changed meanwhile. */
  async update(trx: Transaction, name: string, fromVersion: number, changes: Pick<PolicyRow, 'version' | 'document' | 'updated_by' | 'updated_at'>): Promise<boolean> {
    const updated = await trx<PolicyRow>('trust_policies').where({ name, version: fromVersion }).update(changes);
    return updated === 1;
  }

  async delete(trx: Transaction, name: string): Promise<void> {
    await trx<PolicyRow>('trust_policies').where({ name }).delete();
  }

  /** Every recorded change of `name` (deleted policies included), newest first; empty when none. */
  async versions(name: string): Promise<PolicyVersionRow[]> {
    return this.db.reader<PolicyVersionRow>('trust_policy_versions').where({ name }).orderBy('version', 'desc');
  }

  async recordVersion(trx: Transaction, row: PolicyVersionRow): Promise<void> {
    await trx<PolicyVersionRow>('trust_policy_versions').insert(row);
  }
}
