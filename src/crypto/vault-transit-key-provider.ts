import vaultFactory from 'node-vault';
import { KeyProviderError, type KeyProvider, type WrappedKey } from './key-provider.js';

export interface VaultTransitOptions {
  address: string;
  token: string;
  mount: string;
  keyName: string;
  timeoutMs?: number;
}

const CIPHERTEXT = /^vault:v(\d+):[A-Za-z0-9+/=]+$/;

/**
 * Root key kept in HashiCorp Vault's transit engine: data keys are wrapped and unwrapped by
 * transit encrypt/decrypt, so the root key never reaches the broker.
 */
export class VaultTransitKeyProvider implements KeyProvider {
  readonly kind = 'vault-transit' as const;
  private readonly vault: ReturnType<typeof vaultFactory>;

  constructor(private readonly options: VaultTransitOptions) {
    this.vault = vaultFactory({
      apiVersion: 'v1',
      endpoint: options.address,
      token: options.token,
      // node-vault's HTTP client takes its timeout from rpDefaults; requestOptions.timeout is ignored
      rpDefaults: { timeout: options.timeoutMs ?? 5000 },
    } as any);
  }

  private path(op: string): string {
    return `${this.options.mount}/${op}/${this.options.keyName}`;
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err: any) {
      const status = err?.response?.statusCode;
      throw new KeyProviderError(`vault transit ${what} failed${status ? ` (HTTP ${status})` : ''}: ${err?.message ?? err}`);
    }
  }

  async wrap(dataKey: Buffer): Promise<WrappedKey> {
    const res: any = await this.call('encrypt', () =>
      this.vault.write(this.path('encrypt'), { plaintext: dataKey.toString('base64') }),
    );
    const ciphertext: string | undefined = res?.data?.ciphertext;
    const m = ciphertext ? CIPHERTEXT.exec(ciphertext) : null;
    if (!m) throw new KeyProviderError('vault transit encrypt returned no ciphertext');
    return { wrapped: Buffer.from(ciphertext!, 'utf8'), keyVersion: m[1] };
  }

  async unwrap(wrapped: Buffer, _keyVersion: string): Promise<Buffer> {
    const ciphertext = wrapped.toString('utf8');
    if (!CIPHERTEXT.test(ciphertext)) throw new KeyProviderError('wrapped data key is not a vault transit ciphertext');
    const res: any = await this.call('decrypt', () => this.vault.write(this.path('decrypt'), { ciphertext }));
    const plaintext: string | undefined = res?.data?.plaintext;
    if (!plaintext) throw new KeyProviderError('vault transit decrypt returned no plaintext');
    return Buffer.from(plaintext, 'base64');
  }

  async currentVersion(): Promise<string> {
    const res: any = await this.call('key read', () => this.vault.read(this.path('keys')));
    const latest = res?.data?.latest_version;
    if (typeof latest !== 'number') throw new KeyProviderError('vault transit key has no latest_version');
    return String(latest);
  }

  async rotate(): Promise<string> {
    await this.call('rotate', () => this.vault.write(`${this.path('keys')}/rotate`, {}));
    return this.currentVersion();
  }

  async check(): Promise<void> {
    await this.currentVersion();
  }
}
