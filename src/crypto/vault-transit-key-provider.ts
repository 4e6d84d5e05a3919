import vaultFactory from 'node-vault';
import { KeyProviderError, type KeyProvider, type WrappedKey } from './key-provider.js';

export interface VaultTransitOptions {
  address: string;
  token: string;
  mount: string;
  keyName: string;
  timeoutMs?: number;
}

type VaultOptions = NonNullable<Parameters<typeof vaultFactory>[0]>;

/** The part of a Vault API response read here: its `data` object (fields checked where used). */
interface VaultResponse {
  data?: Record<string, unknown>;
}

/** What node-vault rejects with: an Error, with the HTTP response when Vault answered. */
interface VaultCallError {
  message?: unknown;
  response?: { statusCode?: unknown };
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
    // node-vault's typings lack rpDefaults, which it does read
    const vaultOptions: VaultOptions & { rpDefaults: { timeout: number } } = {
      apiVersion: 'v1',
      endpoint: options.address,
      token: options.token,
      // node-vault's HTTP client takes its timeout from rpDefaults; requestOptions.timeout is ignored
      rpDefaults: { timeout: options.timeoutMs ?? 5000 },
    };
    this.vault = vaultFactory(vaultOptions);
  }

  private path(op: string): string {
    return `${this.options.mount}/${op}/${this.options.keyName}`;
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (caught: unknown) {
      const err = caught as VaultCallError | null | undefined;
      const status = err?.response?.statusCode;
      throw new KeyProviderError(`vault transit ${what} failed${status ? ` (HTTP ${status})` : ''}: ${err?.message ?? err}`);
    }
  }

  async wrap(dataKey: Buffer): Promise<WrappedKey> {
    const res: VaultResponse | undefined = await this.call('encrypt', () =>
      this.vault.write(this.path('encrypt'), { plaintext: dataKey.toString('base64') }),
    );
    const ciphertext = res?.data?.ciphertext as string | undefined;
    const m = ciphertext ? CIPHERTEXT.exec(ciphertext) : null;
    if (!m) throw new KeyProviderError('vault transit encrypt returned no ciphertext');
    return { wrapped: Buffer.from(ciphertext!, 'utf8'), keyVersion: m[1] };
  }

  async unwrap(wrapped: Buffer, _keyVersion: string): Promise<Buffer> {
    const ciphertext = wrapped.toString('utf8');
    if (!CIPHERTEXT.test(ciphertext)) throw new KeyProviderError('wrapped data key is not a vault transit ciphertext');
    const res: VaultResponse | undefined = await this.call('decrypt', () => this.vault.write(this.path('decrypt'), { ciphertext }));
    const plaintext = res?.data?.plaintext as string | undefined;
    if (!plaintext) throw new KeyProviderError('vault transit decrypt returned no plaintext');
    return Buffer.from(plaintext, 'base64');
  }

  async currentVersion(): Promise<string> {
    const res: VaultResponse | undefined = await this.call('key read', () => this.vault.read(this.path('keys')));
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
