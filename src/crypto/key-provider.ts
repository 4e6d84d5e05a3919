/** A data key wrapped by the root key, and which root key version wrapped it. */
export interface WrappedKey {
  wrapped: Buffer;
  keyVersion: string;
}

/**
 * The root of the envelope: wraps and unwraps per-version data keys. The root key itself never
 * leaves the provider (a local file, or Vault's transit engine).
 */
export interface KeyProvider {
  readonly kind: 'local' | 'vault-transit';
  wrap(dataKey: Buffer): Promise<WrappedKey>;
  unwrap(wrapped: Buffer, keyVersion: string): Promise<Buffer>;
  currentVersion(): Promise<string>;
  /** Adds a new root key version and makes it current; returns it. */
  rotate(): Promise<string>;
  /** Throws when the provider cannot serve (used by /readyz). */
  check(): Promise<void>;
}

export class KeyProviderError extends Error {
  /** True when retrying cannot help: the wrapped key itself failed to authenticate. */
  readonly integrity: boolean;

  constructor(message: string, options?: { cause?: unknown; integrity?: boolean }) {
    super(message, options);
    this.name = 'KeyProviderError';
    this.integrity = options?.integrity ?? false;
  }
}
