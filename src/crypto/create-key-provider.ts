import type { Knex } from 'knex';
import type { KeyProviderConfig } from '../config.js';
import { RootKeyUnavailableError, type KeyProvider } from './key-provider.js';
import { LocalKeyProvider } from './local-key-provider.js';
import { WRAPPED_KEY_TABLES } from './root-key-rotation.js';
import { VaultTransitKeyProvider } from './vault-transit-key-provider.js';
import { CachingKeyProvider } from './caching-key-provider.js';

/**
 * The provider for a configuration, without looking at the database. A missing local key file
 * is created here, so this is only for tools and tests; the broker and its CLI commands use
 * `openKeyProvider`, which creates a key only for an empty database.
 */
export function createKeyProvider(config: KeyProviderConfig): KeyProvider {
  if (config.kind === 'vault-transit') {
    return new CachingKeyProvider(
      new VaultTransitKeyProvider({
        address: config.address,
        token: config.token,
        mount: config.mount,
        keyName: config.keyName,
      }),
    );
  }
  return config.keyFromEnv ? LocalKeyProvider.fromEnv(config.keyFromEnv) : LocalKeyProvider.openFile(config.keyFile);
}

/**
 * Tables whose rows only make sense with the root key that sealed them: the wrapped data keys
 * themselves, plus secrets and audit events (the audit chain is keyed by a wrapped system key).
 * A database with a row in any of them is not empty.
 */
const ROOT_KEY_DEPENDENT_TABLES = [...WRAPPED_KEY_TABLES.map((t) => t.table), 'secrets', 'audit_events'];

/** Rows per table that depend on the root key; empty for a new (or not yet migrated) database. */
export async function rootKeyDependents(db: Knex): Promise<Record<string, number>> {
  const found: Record<string, number> = {};
  for (const table of ROOT_KEY_DEPENDENT_TABLES) {
    if (!(await db.schema.hasTable(table))) continue;
    const row = await db(table).count({ n: '*' }).first();
    const n = Number(row?.n ?? 0);
    if (n > 0) found[table] = n;
  }
  return found;
}

/** Root key versions that wrapped keys in the database refer to, with their row counts. */
async function referencedVersions(db: Knex): Promise<Map<string, Record<string, number>>> {
  const versions = new Map<string, Record<string, number>>();
  for (const { table } of WRAPPED_KEY_TABLES) {
    if (!(await db.schema.hasTable(table))) continue;
    const rows: Array<{ root_key_version: string; n: number | string }> = await db(table)
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

const describeCounts = (counts: Record<string, number>) =>
  Object.entries(counts)
    .map(([table, n]) => `${table}: ${n}`)
    .join(', ');

/**
 * Opens the configured key provider for the database `db`, before anything is written to it.
 * A local key file is created only when the database holds nothing sealed by a root key (first
 * start). When the file is missing but the database is not empty, or the key lacks a version the
 * database refers to, this throws RootKeyUnavailableError and writes nothing: a new key could
 * open none of the existing data, and would be mistaken for the real one afterwards.
 */
export async function openKeyProvider(config: KeyProviderConfig, db: Knex): Promise<KeyProvider> {
  if (config.kind === 'vault-transit') return createKeyProvider(config);
  let provider: LocalKeyProvider;
  if (config.keyFromEnv) {
    provider = LocalKeyProvider.fromEnv(config.keyFromEnv);
  } else {
    const existing = LocalKeyProvider.openExistingFile(config.keyFile);
    if (!existing) {
      const dependents = await rootKeyDependents(db);
      if (Object.keys(dependents).length > 0) {
        throw new RootKeyUnavailableError(
          `the root key file ${config.keyFile} is missing, but the database holds data sealed by a root key ` +
            `(${describeCounts(dependents)}). A new key cannot open that data, so none was created and nothing was written. ` +
            `Restore the key file from your backup to ${config.keyFile} (mode 0600), point KEYWARDEN_ROOT_KEY_FILE at it, ` +
            `or put the key in KEYWARDEN_ROOT_KEY.`,
        );
      }
      return LocalKeyProvider.createFile(config.keyFile);
    }
    provider = existing;
  }
  const held = new Set(provider.versions());
  const missing = [...(await referencedVersions(db)).entries()].filter(([version]) => !held.has(version));
  if (missing.length > 0) {
    const list = missing.map(([version, counts]) => `version ${version} (${describeCounts(counts)})`).join('; ');
    throw new RootKeyUnavailableError(
      `the root key in ${provider.source} lacks ${missing.length === 1 ? 'a version' : 'versions'} the database refers to: ${list}. ` +
        `It holds ${[...held].sort().join(', ')}. This is usually a key backup older than the last rotate-root-key: ` +
        `restore a backup of the key that includes ${missing.length === 1 ? 'that version' : 'those versions'}. Nothing was written.`,
    );
  }
  return provider;
}
