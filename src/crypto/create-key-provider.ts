import type { Database } from '../db/database.js';
import type { KeyProviderConfig } from '../config.js';
import { RootKeyUnavailableError, type KeyProvider } from './key-provider.js';
import { LocalKeyProvider } from './local-key-provider.js';
import { SealedKeysDal } from './sealed-keys-dal.js';
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
