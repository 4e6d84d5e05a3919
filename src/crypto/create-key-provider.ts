import path from 'node:path';
import type { Database } from '../db/database.js';
import type { KeyProviderConfig } from '../config.js';
import { KeyProviderError, RootKeyUnavailableError, type KeyProvider } from './key-provider.js';
import { LocalKeyProvider } from './local-key-provider.js';
import { SealedKeysDal } from './sealed-keys-dal.js';
import { SystemKeysDal } from './system-keys-dal.js';
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

const describeCounts = (counts: Record<string, number>) =>
  Object.entries(counts)
    .map(([table, n]) => `${table}: ${n}`)
    .join(', ');

/**
 * What an operator reads when the key file is gone but the database needs it: the expected file
 * (absolute), that no key is ever generated for a database that is not empty, and how to restore
 * the backup.
 */
export function missingKeyFileMessage(keyFile: string, dependents: Record<string, number>): string {
  const file = path.resolve(keyFile);
  return (
    `the root key file ${file} is missing, but the database holds data sealed by a root key (${describeCounts(dependents)}). ` +
    `Keywarden never generates a new root key for a database that is not empty: a new key could open none of this data, ` +
    `so none was created and nothing was written. ` +
    `To restore the key file from your backup, copy the backed-up root-key.json to ${file} ` +
    `(chmod 600, owned by the user the broker runs as), or set KEYWARDEN_ROOT_KEY_FILE to the path of the backed-up file; ` +
    `a key kept in an environment variable goes in KEYWARDEN_ROOT_KEY. Then run the command again.`
  );
}

/**
 * Opens the configured key provider for the database `db`, before anything is written to it.
 * A local key file is created only when the database holds nothing sealed by a root key (first
 * start). When the file is missing but the database is not empty, or the key lacks a version the
 * database refers to, this throws RootKeyUnavailableError and writes nothing: a new key could
 * open none of the existing data, and would be mistaken for the real one afterwards.
 */
export async function openKeyProvider(config: KeyProviderConfig, db: Database): Promise<KeyProvider> {
  if (config.kind === 'vault-transit') return createKeyProvider(config);
  const sealedKeys = new SealedKeysDal(db);
  let provider: LocalKeyProvider;
  if (config.keyFromEnv) {
    provider = LocalKeyProvider.fromEnv(config.keyFromEnv);
  } else {
    const existing = LocalKeyProvider.openExistingFile(config.keyFile);
    if (!existing) {
      const dependents = await sealedKeys.rootKeyDependents();
      if (Object.keys(dependents).length > 0) {
        throw new RootKeyUnavailableError(missingKeyFileMessage(config.keyFile, dependents));
      }
      return LocalKeyProvider.createFile(config.keyFile);
    }
    provider = existing;
  }
  const held = new Set(provider.versions());
  const missing = [...(await sealedKeys.referencedVersions()).entries()].filter(([version]) => !held.has(version));
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

/**
 * For commands that recover an existing broker (`keywarden break-glass`): the key provider for
 * `db`, only when the database already holds data sealed by a root key, and only when the key
 * opens it. Never creates a key. Undefined when the database holds nothing sealed (not an
 * initialized Keywarden database: a wrong KEYWARDEN_DATABASE_URL or data dir); throws
 * RootKeyUnavailableError when the key is missing, lacks a version, or is another key.
 */
export async function openKeyProviderForRecovery(config: KeyProviderConfig, db: Database): Promise<KeyProvider | undefined> {
  const dependents = await new SealedKeysDal(db).rootKeyDependents();
  if (Object.keys(dependents).length === 0) return undefined;
  // the database is not empty, so this never creates a key
  const provider = await openKeyProvider(config, db);
  if (dependents.system_keys) {
    const row = await new SystemKeysDal(db).find('checksum');
    if (row) {
      try {
        await provider.unwrap(row.wrapped_key, row.root_key_version);
      } catch (err) {
        if (!(err instanceof KeyProviderError) || !err.integrity) throw err;
        const source = config.kind === 'local' ? (config.keyFromEnv ? 'KEYWARDEN_ROOT_KEY' : path.resolve(config.keyFile)) : `Vault transit key ${config.keyName}`;
        throw new RootKeyUnavailableError(
          `the root key in ${source} does not open the data keys in this database: it is another key than the one that sealed them. ` +
            `Nothing was written. Restore the backed-up root key of this database (root-key.json) and try again.`,
        );
      }
    }
  }
  return provider;
}
