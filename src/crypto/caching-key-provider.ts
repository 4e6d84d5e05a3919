import crypto from 'node:crypto';
import type { KeyProvider, WrappedKey } from './key-provider.js';
import type { Clock } from '../core/clock.js';
import { noTelemetry, secondsSince, type Telemetry } from '../core/telemetry.js';

/**
 * Passes every call to the provider it wraps. The decorators below extend it and override only
 * the calls they change, so a method added to KeyProvider is forwarded in one place.
 */
class ForwardingKeyProvider implements KeyProvider {
  constructor(protected inner: KeyProvider) {}

  get kind() {
    return this.inner.kind;
  }

  wrap(dataKey: Buffer): Promise<WrappedKey> {
    return this.inner.wrap(dataKey);
  }

  unwrap(wrapped: Buffer, keyVersion: string): Promise<Buffer> {
    return this.inner.unwrap(wrapped, keyVersion);
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

/**
 * Remembers unwrapped data keys for a short time, so a remote provider (Vault) is not called on
 * every secret read. Wrapped keys are immutable, so the cache needs no cross-instance
 * invalidation.
 */
export class CachingKeyProvider extends ForwardingKeyProvider {
  private readonly cache = new Map<string, { key: Buffer; until: number }>();
  private telemetry: Telemetry = noTelemetry;

  constructor(
    inner: KeyProvider,
    private readonly ttlMs = 5 * 60_000,
    private readonly maxEntries = 10_000,
    private readonly clock: Clock = Date.now,
  ) {
    super(inner);
  }

  /** Reports cache hits and misses, and measures the provider's own calls behind the cache. */
  instrument(telemetry: Telemetry): void {
    this.telemetry = telemetry;
    if (!(this.inner instanceof MeasuredKeyProvider)) this.inner = new MeasuredKeyProvider(this.inner, telemetry);
  }

  override async unwrap(wrapped: Buffer, keyVersion: string): Promise<Buffer> {
    const id = crypto.createHash('sha256').update(keyVersion).update('\0').update(wrapped).digest('base64');
    const now = this.clock();
    const hit = this.cache.get(id);
    if (hit && hit.until > now) {
      this.telemetry.rootKeyCacheLookup(true);
      return hit.key;
    }
    this.telemetry.rootKeyCacheLookup(false);
    const key = await this.inner.unwrap(wrapped, keyVersion);
    if (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(id, { key, until: now + this.ttlMs });
    return key;
  }
}

/**
 * Measures every wrap and unwrap of the provider it wraps (duration, and failures) for the
 * root key metrics; what it forwards is unchanged. Labels are the provider kind and the
 * operation only, never a key version or name.
 */
export class MeasuredKeyProvider extends ForwardingKeyProvider {
  constructor(
    inner: KeyProvider,
    private readonly telemetry: Telemetry,
  ) {
    super(inner);
  }

  override wrap(dataKey: Buffer): Promise<WrappedKey> {
    return this.measure('wrap', () => this.inner.wrap(dataKey));
  }

  override unwrap(wrapped: Buffer, keyVersion: string): Promise<Buffer> {
    return this.measure('unwrap', () => this.inner.unwrap(wrapped, keyVersion));
  }

  private async measure<T>(op: 'wrap' | 'unwrap', call: () => Promise<T>): Promise<T> {
    const started = performance.now();
    let failed = true;
    try {
      const result = await call();
      failed = false;
      return result;
    } finally {
      this.telemetry.rootKeyOperation(this.inner.kind, op, secondsSince(started), failed);
    }
  }
}

/**
 * The provider with its calls measured: a caching provider measures behind its cache (and
 * counts hits), any other is wrapped. Returns the provider to use from then on.
 */
export function instrumentKeyProvider(provider: KeyProvider, telemetry: Telemetry): KeyProvider {
  if (provider instanceof MeasuredKeyProvider) return provider;
  if (provider instanceof CachingKeyProvider) {
    provider.instrument(telemetry);
    return provider;
  }
  return new MeasuredKeyProvider(provider, telemetry);
}
