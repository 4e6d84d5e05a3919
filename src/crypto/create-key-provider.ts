import type { KeyProviderConfig } from '../config.js';
import type { KeyProvider } from './key-provider.js';
import { LocalKeyProvider } from './local-key-provider.js';
import { VaultTransitKeyProvider } from './vault-transit-key-provider.js';
import { CachingKeyProvider } from './caching-key-provider.js';

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
