import type { Database } from '../db/database.js';

/** A table holding data keys wrapped by the root key, and its primary key column. */
export interface WrappedKeyTable {
  table: string;
  key: string;
}

/** Every table holding data keys wrapped by the root key, and its primary key. */
export const WRAPPED_KEY_TABLES: WrappedKeyTable[] = [
  { table: 'secret_versions', key: 'id' },
  { table: 'jwt_keys', key: 'kid' },
  { table: 'system_keys', key: 'name' },
  { table: 'signing_key_versions', key: 'key_id' },
];

/**
 * Tables whose rows only make sense with the root key that sealed them: the wrapped data keys
 * themselves, plus secrets and audit events (the audit chain is keyed by a wrapped system key).
 * A database with a row in any of them is not empty.
 */
const ROOT_KEY_DEPENDENT_TABLES = [...WRAPPED_KEY_TABLES.map((t) => t.table), 'secrets', 'audit_events'];

/** A wrapped data key as root key rotation sees it: the row's primary key, the key and its root key version. */
export interface WrappedKeyRow {
  id: string | number;
  wrapped_key: Buffer;
  root_key_version: string;
}

/**
 * The root key's view across the sealed tables: only their `wrapped_key` and `root_key_version`
 * columns, for the missing-key check at start-up and for root key rotation. Every other column
 * of these tables belongs to the repository of its own domain. Runs before migrations too, so
 * each table may not exist yet.
 */
export class SealedKeysDal {
  constructor(private readonly db: Database) {}

  private hasTable(table: string): Promise<boolean> {
    return this.db.reader.schema.hasTable(table);
  }

  /** Rows per table that depend on the root key; empty for a new (or not yet migrated) database. */
  async rootKeyDependents(): Promise<Record<string, number>> {
    const found: Record<string, number> = {};
    for (const table of ROOT_KEY_DEPENDENT_TABLES) {
      if (!(await this.hasTable(table))) continue;
      const row: { n?: number | string } | undefined = await this.db.reader(table).count({ n: '*' }).first();
      const n = Number(row?.n ?? 0);
      if (n > 0) found[table] = n;
    }
    return found;
  }

  /** Root key versions that wrapped keys refer to, with their row counts per table. */
  async referencedVersions(): Promise<Map<string, Record<string, number>>> {
    const versions = new Map<string, Record<string, number>>();
    for (const { table } of WRAPPED_KEY_TABLES) {
      if (!(await this.hasTable(table))) continue;
      const rows: Array<{ root_key_version: string; n: number | string }> = await this.db
        .reader(table)
        .select('root_key_version')
        .count({ n: '*' })
        .groupBy('root_key_version');
      for (const row of rows) {
        const counts = versions.get(String(row.root_key_version)) ?? {};
        counts[table] = Number(row.n);
        versions.set(String(row.root_key_version), counts);
      }
    }
    return versions;
  }

  async exists({ table }: WrappedKeyTable): Promise<boolean> {
    return this.hasTable(table);
  }

  /** Up to `limit` wrapped keys of `target` not under `version`, in primary key order. */
  async notUnderVersion(target: WrappedKeyTable, version: string, limit: number): Promise<WrappedKeyRow[]> {
    return this.db
      .reader(target.table)
      .whereNot('root_key_version', version)
      .orderBy(target.key)
      .limit(limit)
      .select({ id: target.key }, 'wrapped_key', 'root_key_version');
  }

  /**
   * Replaces one row's wrapped key and its version together, only while the row is still under
   * `row.root_key_version`: that guard makes a concurrent rewrap of the same row harmless.
   */
  async replaceWrappedKey(target: WrappedKeyTable, row: WrappedKeyRow, next: { wrapped: Buffer; keyVersion: string }): Promise<void> {
    await this.db
      .reader(target.table)
      .where({ [target.key]: row.id, root_key_version: row.root_key_version })
      .update({ wrapped_key: next.wrapped, root_key_version: next.keyVersion });
  }
}
