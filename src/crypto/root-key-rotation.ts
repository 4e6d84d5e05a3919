import type { Knex } from 'knex';
import { rewrap } from './envelope.js';
import type { KeyProvider } from './key-provider.js';

/** Every table holding data keys wrapped by the root key, and its primary key. */
export const WRAPPED_KEY_TABLES: Array<{ table: string; key: string }> = [
  { table: 'secret_versions', key: 'id' },
  { table: 'jwt_keys', key: 'kid' },
  { table: 'system_keys', key: 'name' },
  { table: 'signing_key_versions', key: 'key_id' },
];

export interface RewrapProgress {
  table: string;
  rewrapped: number;
}

/**
 * Rewraps every data key not yet under `targetVersion`, in small committed batches. Only the
 * wrapped key and its version change, together in one row update, so readers always see a
 * consistent pair and content ciphertext is never touched. Safe to stop and run again.
 */
export async function rewrapAll(
  db: Knex,
  provider: KeyProvider,
  options: { batchSize?: number; onProgress?: (p: RewrapProgress) => void; extraTables?: Array<{ table: string; key: string }> } = {},
): Promise<{ targetVersion: string; rewrapped: Record<string, number> }> {
  const targetVersion = await provider.currentVersion();
  const batchSize = options.batchSize ?? 200;
  const rewrapped: Record<string, number> = {};
  for (const { table, key } of [...WRAPPED_KEY_TABLES, ...(options.extraTables ?? [])]) {
    if (!(await db.schema.hasTable(table))) continue;
    rewrapped[table] = 0;
    for (;;) {
      const rows = await db(table)
        .whereNot('root_key_version', targetVersion)
        .orderBy(key)
        .limit(batchSize)
        .select(key, 'wrapped_key', 'root_key_version');
      if (rows.length === 0) break;
      for (const row of rows) {
        const next = await rewrap(provider, { wrappedKey: row.wrapped_key, rootKeyVersion: row.root_key_version });
        // the version guard makes a concurrent rewrap of the same row harmless
        await db(table)
          .where({ [key]: row[key], root_key_version: row.root_key_version })
          .update({ wrapped_key: next.wrapped, root_key_version: next.keyVersion });
      }
      rewrapped[table] += rows.length;
      options.onProgress?.({ table, rewrapped: rewrapped[table] });
    }
  }
  return { targetVersion, rewrapped };
}
