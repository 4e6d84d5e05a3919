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

/** Exit status of a CLI command refused because the root key is missing or incomplete (EX_NOINPUT). */
export const ROOT_KEY_UNAVAILABLE_EXIT_CODE = 66;

/**
 * The root key the database needs is not there (the key file is missing, or lacks a version
 * that wrapped keys in the database refer to). Never answered by making a new key: a new key
 * cannot open anything sealed by the old one.
 */
export class RootKeyUnavailableError extends KeyProviderError {
  readonly exitCode = ROOT_KEY_UNAVAILABLE_EXIT_CODE;

  constructor(message: string) {
    super(message);
    this.name = 'RootKeyUnavailableError';
  }
}
