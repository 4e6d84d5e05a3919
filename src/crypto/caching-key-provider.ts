import crypto from 'node:crypto';
import type { KeyProvider, WrappedKey } from './key-provider.js';
import type { Clock } from '../core/clock.js';

/**
 * Remembers unwrapped data keys for a short time, so a remote provider (Vault) is not called on
 * every secret read. Wrapped keys are immutable, so the cache needs no cross-instance
 * invalidation.
 */
export class CachingKeyProvider implements KeyProvider {
  private readonly cache = new Map<string, { key: Buffer; until: number }>();

  constructor(
    private readonly inner: KeyProvider,
    private readonly ttlMs = 5 * 60_000,
    private readonly maxEntries = 10_000,
    private readonly clock: Clock = Date.now,
  ) {}

  get kind() {
    return this.inner.kind;
  }

  wrap(dataKey: Buffer): Promise<WrappedKey> {
    return this.inner.wrap(dataKey);
  }

  async unwrap(wrapped: Buffer, keyVersion: string): Promise<Buffer> {
    const id = crypto.createHash('sha256').update(keyVersion).update('\0').update(wrapped).digest('base64');
    const now = this.clock();
    const hit = this.cache.get(id);
    if (hit && hit.until > now) return hit.key;
    const key = await this.inner.unwrap(wrapped, keyVersion);
    if (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(id, { key, until: now + this.ttlMs });
    return key;
  }

  currentVersion(): Promise<string> {
    return this.inner.currentVersion();
  }

  rotate(): Promise<string> {
    return this.inner.rotate();
  }

  check(): Promise<void> {
    return this.inner.check();
  }
}
