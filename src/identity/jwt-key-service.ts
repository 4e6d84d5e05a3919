import crypto, { type KeyObject } from 'node:crypto';
import type { Knex } from 'knex';
import { exportJWK, type JWK } from 'jose';
import { open, seal } from '../crypto/envelope.js';
import type { KeyProvider } from '../crypto/key-provider.js';

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
      db: Knex;
      keyProvider: KeyProvider;
      clock: () => number;
      /** Longest lifetime of anything signed: retired keys stay published this long. */
      maxTokenTtlSeconds: number;
      /** How long an instance may keep signing with a key another instance retired. */
      signingKeyCacheMs?: number;
    },
  ) {}

  private async createKey(trx: Knex): Promise<string> {
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = await exportJWK(publicKey);
    const kid = crypto
      .createHash('sha256')
      .update(JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y }))
      .digest('base64url')
      .slice(0, 32);
    const sealed = await seal(this.deps.keyProvider, privateKey.export({ format: 'der', type: 'pkcs8' }), jwtKeyAad(kid));
    await trx('jwt_keys').insert({
      kid,
      alg: JWT_ALG,
      public_jwk: JSON.stringify({ ...jwk, kid, alg: JWT_ALG, use: 'sig' }),
      iv: sealed.iv,
      private_ciphertext: sealed.ciphertext,
      wrapped_key: sealed.wrappedKey,
      root_key_version: sealed.rootKeyVersion,
      created_at: this.deps.clock(),
    });
    return kid;
  }

  async signingKey(): Promise<{ kid: string; privateKey: KeyObject }> {
    const now = this.deps.clock();
    if (this.signing && now - this.signing.loadedAt < (this.deps.signingKeyCacheMs ?? 10_000)) return this.signing;
    let row = await this.deps.db('jwt_keys').whereNull('retired_at').orderBy('created_at', 'desc').orderBy('kid').first();
    if (!row) {
      await this.createKey(this.deps.db);
      row = await this.deps.db('jwt_keys').whereNull('retired_at').orderBy('created_at', 'desc').orderBy('kid').first();
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
      const row = await this.deps.db('jwt_keys').where({ kid }).first();
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
    const q = this.deps.db('jwt_keys').orderBy('created_at', 'desc');
    if (!options.includeRetired) q.where((w) => w.whereNull('publish_until').orWhere('publish_until', '>', now));
    const rows = await q;
    return { keys: rows.map((r: any) => JSON.parse(r.public_jwk)) };
  }

  /** Pass the caller's transaction to commit the rotation together with its audit event. */
  async rotate(outer?: Knex.Transaction): Promise<{ kid: string; retired: string[] }> {
    const now = this.deps.clock();
    const run = (fn: (trx: Knex.Transaction) => Promise<{ kid: string; retired: string[] }>) => (outer ? fn(outer) : this.deps.db.transaction(fn));
    return run(async (trx) => {
      const active = await trx('jwt_keys').whereNull('retired_at').select('kid');
      await trx('jwt_keys')
        .whereNull('retired_at')
        .update({ retired_at: now, publish_until: now + this.deps.maxTokenTtlSeconds * 1000 + 60_000 });
      const kid = await this.createKey(trx);
      this.signing = null;
      return { kid, retired: active.map((r: any) => r.kid) };
    });
  }
}
