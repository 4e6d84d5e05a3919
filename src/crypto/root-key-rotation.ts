import type { Database } from '../db/database.js';
import { rewrap } from './envelope.js';
import type { KeyProvider } from './key-provider.js';
import { SealedKeysDal, WRAPPED_KEY_TABLES, type WrappedKeyTable } from './sealed-keys-dal.js';

export { WRAPPED_KEY_TABLES };

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
  db: Database,
  provider: KeyProvider,
  options: { batchSize?: number; onProgress?: (p: RewrapProgress) => void; extraTables?: WrappedKeyTable[] } = {},
): Promise<{ targetVersion: string; rewrapped: Record<string, number> }> {
  const dal = new SealedKeysDal(db);
  const targetVersion = await provider.currentVersion();
  const batchSize = options.batchSize ?? 200;
  const rewrapped: Record<string, number> = {};
  for (const target of [...WRAPPED_KEY_TABLES, ...(options.extraTables ?? [])]) {
    if (!(await dal.exists(target))) continue;
    const { table } = target;
    rewrapped[table] = 0;
    for (;;) {
      const rows = await dal.notUnderVersion(target, targetVersion, batchSize);
      if (rows.length === 0) break;
      for (const row of rows) {
        const next = await rewrap(provider, { wrappedKey: row.wrapped_key, rootKeyVersion: row.root_key_version });
        await dal.replaceWrappedKey(target, row, next);
      }
      rewrapped[table] += rows.length;
      options.onProgress?.({ table, rewrapped: rewrapped[table] });
    }
  }
  return { targetVersion, rewrapped };
}
