import crypto, { type KeyObject } from 'node:crypto';
import { exportJWK, type JWK } from 'jose';
import { open, seal } from '../crypto/envelope.js';
import type { KeyProvider } from '../crypto/key-provider.js';
import type { Queryable, Transaction } from '../db/database.js';
import type { JwtKeysDal } from './jwt-keys-dal.js';
import type { Clock } from '../core/clock.js';

export const JWT_ALG = 'ES256';

interface CachedKey {
  kid: string;
  publicKey: KeyObject;
  publishUntil: number | null;
}

function jwtKeyAad(kid: string): string {
  return `keywarden:jwt-key:v1:${kid}`;
}

/**
 * The broker's JWT signing keys, private halves sealed with the root key in the database so
 * every instance signs and verifies with the same set. Rotation: the newest key signs; retired
 * keys stay published (and verify) until every token they could have signed has expired.
 */
export class JwtKeyService {
  private signing: { kid: string; privateKey: KeyObject; loadedAt: number } | null = null;
  private readonly publicKeys = new Map<string, CachedKey>();

  constructor(
    private readonly deps: {
      dal: JwtKeysDal;
      keyProvider: KeyProvider;
      clock: Clock;
      /** Longest lifetime of anything signed: retired keys stay published this long. */
      maxTokenTtlSeconds: number;
      /** How long an instance may keep signing with a key another instance retired. */
      signingKeyCacheMs?: number;
    },
  ) {}

  private async createKey(trx?: Queryable): Promise<string> {
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = await exportJWK(publicKey);
    const kid = crypto
      .createHash('sha256')
      .update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }))
      .digest('base64url')
      .slice(0, 32);
    const sealed = await seal(this.deps.keyProvider, privateKey.export({ format: 'der', type: 'pkcs8' }), jwtKeyAad(kid));
    await this.deps.dal.insert({
      kid,
      alg: JWT_ALG,
      public_jwk: JSON.stringify({ ...jwk, kid, alg: JWT_ALG, use: 'sig' }),
      iv: sealed.iv,
      private_ciphertext: sealed.ciphertext,
      wrapped_key: sealed.wrappedKey,
      root_key_version: sealed.rootKeyVersion,
      created_at: this.deps.clock(),
    }, trx);
    return kid;
  }

  async signingKey(): Promise<{ kid: string; privateKey: KeyObject }> {
    const now = this.deps.clock();
    if (this.signing && now - this.signing.loadedAt < (this.deps.signingKeyCacheMs ?? 10_000)) return this.signing;
    let row = await this.deps.dal.newestActive();
    if (!row) {
      await this.createKey();
      row = await this.deps.dal.newestActive();
      if (!row) throw new Error('no JWT signing key after creating one');
    }
    const der = await open(
      this.deps.keyProvider,
      { iv: row.iv, ciphertext: row.private_ciphertext, wrappedKey: row.wrapped_key, rootKeyVersion: row.root_key_version },
      jwtKeyAad(row.kid),
    );
    this.signing = { kid: row.kid, privateKey: crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }), loadedAt: now };
    return this.signing;
  }

  /** The verification key for `kid`, if it is still published. */
  async publicKey(kid: string): Promise<KeyObject | undefined> {
    const now = this.deps.clock();
    let cached = this.publicKeys.get(kid);
    if (!cached || (cached.publishUntil !== null && cached.publishUntil <= now)) {
      // retirement is decided in the database; re-read so a rotation on another instance counts
      const row = await this.deps.dal.find(kid);
      if (!row) return undefined;
      cached = {
        kid,
        publicKey: crypto.createPublicKey({ key: JSON.parse(row.public_jwk), format: 'jwk' }),
        publishUntil: row.publish_until ?? null,
      };
      this.publicKeys.set(kid, cached);
    }
    if (cached.publishUntil !== null && cached.publishUntil <= now) return undefined;
    return cached.publicKey;
  }

  /**
   * Published verification keys. `includeRetired` also returns keys past their publication
   * window, for checking old audit checkpoints (never for accepting tokens).
   */
  async jwks(options: { includeRetired?: boolean } = {}): Promise<{ keys: JWK[] }> {
    const now = this.deps.clock();
    await this.signingKey();
    const rows = await this.deps.dal.list(options.includeRetired ? undefined : now);
    return { keys: rows.map((r) => JSON.parse(r.public_jwk) as JWK) };
  }

  /** Pass the caller's transaction to commit the rotation together with its audit event. */
  async rotate(outer?: Transaction): Promise<{ kid: string; retired: string[] }> {
    const now = this.deps.clock();
    return this.deps.dal.inTransaction(outer, async (trx) => {
      const retired = await this.deps.dal.retireActive(trx, now, now + this.deps.maxTokenTtlSeconds * 1000 + 60_000);
      const kid = await this.createKey(trx);
      this.signing = null;
      return { kid, retired };
    });
  }
}
