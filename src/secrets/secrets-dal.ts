import type { Knex } from 'knex';
import type { Database, Queryable, Transaction } from '../db/database.js';
import { rowToSecret, rowToVersion, type SecretRecord, type SecretRow, type SecretVersionRecord, type SecretVersionRow } from './secrets-types.js';

export { rowToSecret, rowToVersion, type SecretRow, type SecretVersionRow };
import type { Clock } from '../core/clock.js';

export type NewSecretRow = Omit<SecretRow, 'id' | 'deleted_at' | 'row_mac'>;

/** The columns a write may change (never id or name). */
export type SecretRowChanges = Partial<Omit<SecretRow, 'id' | 'name' | 'created_by' | 'created_at'>>;

export type NewSecretVersionRow = Omit<SecretVersionRow, 'id'>;

/** The columns row-integrity.ts binds on a secrets row. */
export type SecretBoundColumns = Pick<SecretRow, 'id' | 'name' | 'current_version' | 'latest_version' | 'deleted_at'>;
export type VersionBoundColumns = Pick<SecretVersionRow, 'id' | 'secret_id' | 'version' | 'checksum' | 'size'>;

export interface SecretListFilter {
  label?: { key: string; value?: string };
  group?: string;
  expiringBefore?: number;
  after?: string;
  limit: number;
}

export type SecretWithVersionRow = SecretRow & Pick<SecretVersionRow, 'checksum' | 'size'>;

/** Secret ids from `from` to `to`, both included (no `to`: every id from `from` on): one page of the integrity scan. */
export interface IdRange {
  from: number;
  to?: number;
}

/** Restricts `column` to `ids`. */
function inRange(q: Knex.QueryBuilder, column: string, ids: IdRange): void {
  q.where(column, '>=', ids.from);
  if (ids.to !== undefined) q.andWhere(column, '<=', ids.to);
}

/** The secrets, secret_versions and secret_labels tables. */
export class SecretsDal {
  constructor(private readonly db: Database) {}

  /** Which database: a caller that pages through a table sizes its pages by it. */
  get dialect(): Database['dialect'] {
    return this.db.dialect;
  }

  private q(trx?: Queryable): Queryable {
    return trx ?? this.db.reader;
  }

  async findLive(name: string, trx?: Queryable): Promise<SecretRecord | undefined> {
    const row = await this.q(trx)<SecretRow>('secrets').where({ name }).whereNull('deleted_at').first();
    return row ? rowToSecret(row) : undefined;
  }

  /** id and name of the named live secrets (those that exist). */
  async liveIdsByName(names: string[], trx?: Queryable): Promise<Array<{ id: number; name: string }>> {
    if (names.length === 0) return [];
    return this.q(trx)<SecretRow>('secrets').whereIn('name', names).whereNull('deleted_at').select('id', 'name');
  }

  /**
   * The live secret, its row locked until `trx` ends (PostgreSQL; SQLite has one writer). Every
   * write to a secret takes this lock first (src/db/lock-order.md), so writers of one secret
   * queue here and each sees the row the previous one committed.
   *
   * FOR NO KEY UPDATE, not FOR UPDATE: the foreign keys of rows that name the secret
   * (secret_reads, secret_versions, access_grants) take FOR KEY SHARE on it, which FOR UPDATE
   * would block, making every client read that marks secret_reads wait for the version write.
   * FOR NO KEY UPDATE still excludes other writers, and the key (id) never changes.
   */
  async lockLive(trx: Transaction, name: string): Promise<SecretRecord | undefined> {
    const q = trx<SecretRow>('secrets').where({ name }).whereNull('deleted_at');
    const row = this.db.dialect === 'postgres' ? await q.forNoKeyUpdate().first() : await q.first();
    return row ? rowToSecret(row) : undefined;
  }

  /** The most recently deleted secret of that name, its row locked (restore: Vault's undelete). */
  async lockNewestDeleted(trx: Transaction, name: string): Promise<(SecretRecord & { deletedAt: number }) | undefined> {
    const q = trx<SecretRow>('secrets').where({ name }).whereNotNull('deleted_at').orderBy('deleted_at', 'desc').orderBy('id', 'desc');
    const row = this.db.dialect === 'postgres' ? await q.forNoKeyUpdate().first() : await q.first();
    return row ? { ...rowToSecret(row), deletedAt: row.deleted_at! } : undefined;
  }

  async insertSecret(trx: Transaction, values: NewSecretRow): Promise<number> {
    const [row] = await trx<SecretRow>('secrets').insert(values).returning('id');
    return typeof row === 'object' ? row.id : row;
  }

  async updateSecret(trx: Transaction, id: number, changes: SecretRowChanges): Promise<void> {
    await trx<SecretRow>('secrets').where({ id }).update(changes);
  }

  async replaceLabels(trx: Transaction, secretId: number, labels: Record<string, string>): Promise<void> {
    await trx('secret_labels').where({ secret_id: secretId }).delete();
    const rows = Object.entries(labels).map(([key, value]) => ({ secret_id: secretId, key, value }));
    if (rows.length) await trx('secret_labels').insert(rows);
  }

  async insertVersion(trx: Transaction, values: NewSecretVersionRow): Promise<void> {
    await trx<SecretVersionRow>('secret_versions').insert(values);
  }

  async getVersion(secretId: number, version: number, trx?: Queryable): Promise<SecretVersionRecord | undefined> {
    const row = await this.q(trx)<SecretVersionRow>('secret_versions').where({ secret_id: secretId, version }).first();
    return row ? rowToVersion(row) : undefined;
  }

  async listVersions(secretId: number): Promise<SecretVersionRecord[]> {
    const rows: SecretVersionRow[] = await this.db.reader<SecretVersionRow>('secret_versions').where({ secret_id: secretId }).orderBy('version', 'desc');
    return rows.map(rowToVersion);
  }

  async list(filter: SecretListFilter): Promise<Array<SecretRecord & { checksum: string; size: number }>> {
    const q = this.db
      .reader('secrets as s')
      .join('secret_versions as v', function () {
        this.on('v.secret_id', '=', 's.id').andOn('v.version', '=', 's.current_version');
      })
      .whereNull('s.deleted_at')
      .select('s.*', 'v.checksum', 'v.size')
      .orderBy('s.name')
      .limit(filter.limit);
    if (filter.after !== undefined) q.where('s.name', '>', filter.after);
    if (filter.expiringBefore !== undefined) q.whereNotNull('s.expiry').where('s.expiry', '<', filter.expiringBefore);
    if (filter.label) {
      const { key, value } = filter.label;
      q.whereExists(function () {
        this.select(1).from('secret_labels as l').whereRaw('l.secret_id = s.id').where('l.key', key);
        if (value !== undefined) this.where('l.value', value);
      });
    }
    if (filter.group) {
      const group = filter.group;
      q.whereExists(function () {
        this.select(1)
          .from('access_grants as g')
          .join('groups as gr', 'gr.id', 'g.group_id')
          .whereRaw('g.secret_id = s.id')
          .where('gr.name', group);
      });
    }
    const rows: SecretWithVersionRow[] = await q;
    return rows.map((row) => ({ ...rowToSecret(row), checksum: row.checksum, size: row.size }));
  }

  /** Names of the live secrets, sorted (reports). */
  async liveNames(): Promise<string[]> {
    const rows: Array<Pick<SecretRow, 'name'>> = await this.db.reader<SecretRow>('secrets').whereNull('deleted_at').orderBy('name').select('name');
    return rows.map((r) => r.name);
  }

  /** Live secrets whose expiry is before `before`, soonest first (reports). */
  async expiringBefore(before: number): Promise<Array<Pick<SecretRow, 'name' | 'expiry' | 'current_version' | 'updated_at'>>> {
    return this.db
      .reader<SecretRow>('secrets')
      .whereNull('deleted_at')
      .whereNotNull('expiry')
      .where('expiry', '<', before)
      .orderBy('expiry')
      .select('name', 'expiry', 'current_version', 'updated_at');
  }

  // ---- row integrity (row-integrity.ts): the backfills after migrations 007 and 011, and the background scan

  /**
   * Runs `fn` once, in a transaction holding row `stateId` of row_integrity_state (1: the tables
   * migration 007 bound, 2: those of migration 011): `fn` returns how many rows it sealed, and
   * the state row records that the backfill ran. 0 when it already had.
   */
  async backfillOnce(clock: Clock, stateId: 1 | 2, fn: (trx: Transaction) => Promise<number>): Promise<number> {
    return this.db.transaction(async (trx) => {
      const q = trx<{ id: number; backfilled_at: number | null }>('row_integrity_state').where({ id: stateId });
      const state = this.db.dialect === 'postgres' ? await q.forUpdate().first() : await q.first();
      if (!state || state.backfilled_at !== null) return 0;
      const rows = await fn(trx);
      await trx('row_integrity_state').where({ id: stateId }).update({ backfilled_at: clock(), backfilled_rows: rows });
      return rows;
    });
  }

  /** The highest stored version of the secret (a replayed older secrets row lags behind it). */
  async newestVersion(secretId: number, trx?: Queryable): Promise<number | undefined> {
    const row = (await this.q(trx)('secret_versions').where({ secret_id: secretId }).max('version as newest').first()) as { newest: number | string | null } | undefined;
    return row?.newest == null ? undefined : Number(row.newest);
  }

  async secretsWithoutMac(trx: Transaction): Promise<SecretBoundColumns[]> {
    return trx<SecretRow>('secrets').whereNull('row_mac').select('id', 'name', 'current_version', 'latest_version', 'deleted_at');
  }

  async versionsWithoutMac(trx: Transaction): Promise<VersionBoundColumns[]> {
    return trx<SecretVersionRow>('secret_versions').whereNull('row_mac').select('id', 'secret_id', 'version', 'checksum', 'size');
  }

  async setVersionMac(trx: Transaction, id: number, rowMac: string): Promise<void> {
    await trx<SecretVersionRow>('secret_versions').where({ id }).update({ row_mac: rowMac });
  }

  async secretPage(afterId: number, limit: number): Promise<Array<SecretBoundColumns & Pick<SecretRow, 'row_mac'>>> {
    return this.db.reader<SecretRow>('secrets').where('id', '>', afterId).orderBy('id').limit(limit).select('id', 'name', 'current_version', 'latest_version', 'deleted_at', 'row_mac');
  }

  async versionPage(afterId: number, limit: number): Promise<Array<VersionBoundColumns & Pick<SecretVersionRow, 'row_mac'>>> {
    return this.db.reader<SecretVersionRow>('secret_versions').where('id', '>', afterId).orderBy('id').limit(limit).select('id', 'secret_id', 'version', 'checksum', 'size', 'row_mac');
  }

  /** Secrets whose latest_version is not their highest stored version (a replayed older row). */
  async secretsBehindNewestVersion(ids?: IdRange): Promise<Array<Pick<SecretRow, 'id' | 'name'>>> {
    const db = this.db.reader;
    const newest = db('secret_versions').groupBy('secret_id').select('secret_id').max('version as newest');
    if (ids) inRange(newest, 'secret_id', ids);
    const q = db('secrets as s').join(newest.as('n'), 'n.secret_id', 's.id').whereRaw('n.newest <> s.latest_version');
    if (ids) inRange(q, 's.id', ids);
    return q.select('s.id', 's.name');
  }

  /** Live secrets whose current version does not exist. */
  async secretsWithoutCurrentVersion(ids?: IdRange): Promise<Array<Pick<SecretRow, 'id' | 'name'>>> {
    const q = this.db
      .reader('secrets as s')
      .leftJoin('secret_versions as v', function () {
        this.on('v.secret_id', '=', 's.id').andOn('v.version', '=', 's.current_version');
      })
      .whereNull('s.deleted_at')
      .whereNull('v.id');
    if (ids) inRange(q, 's.id', ids);
    return q.select('s.id', 's.name');
  }
}
