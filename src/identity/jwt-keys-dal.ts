import type { Database, Queryable, Transaction } from '../db/database.js';

/** A jwt_keys row: the public JWK in clear, the private key sealed with the root key. */
export interface JwtKeyRow {
  kid: string;
  alg: string;
  /** JSON (JWK) */
  public_jwk: string;
  iv: Buffer;
  private_ciphertext: Buffer;
  wrapped_key: Buffer;
  root_key_version: string;
  created_at: number;
  retired_at: number | null;
  publish_until: number | null;
}

export type NewJwtKeyRow = Omit<JwtKeyRow, 'retired_at' | 'publish_until'>;

/** The jwt_keys table. */
export class JwtKeysDal {
  constructor(private readonly db: Database) {}

  /** Runs `fn` in a transaction of its own, or in `outer` when given. */
  inTransaction<T>(outer: Transaction | undefined, fn: (trx: Transaction) => Promise<T>): Promise<T> {
    return outer ? fn(outer) : this.db.transaction(fn);
  }

  async insert(row: NewJwtKeyRow, trx?: Queryable): Promise<void> {
    await (trx ?? this.db.reader)<JwtKeyRow>('jwt_keys').insert(row);
  }

  /** The newest key not retired (the signing key). */
  async newestActive(): Promise<JwtKeyRow | undefined> {
    return this.db.reader<JwtKeyRow>('jwt_keys').whereNull('retired_at').orderBy('created_at', 'desc').orderBy('kid').first();
  }

  async find(kid: string): Promise<JwtKeyRow | undefined> {
    return this.db.reader<JwtKeyRow>('jwt_keys').where({ kid }).first();
  }

  /** Newest first; without `publishedAt`, retired keys past their publication window too. */
  async list(publishedAt?: number): Promise<JwtKeyRow[]> {
    const q = this.db.reader<JwtKeyRow>('jwt_keys').orderBy('created_at', 'desc');
    if (publishedAt !== undefined) q.where((w) => w.whereNull('publish_until').orWhere('publish_until', '>', publishedAt));
    return q;
  }

  /** Retires every active key; returns their kids. */
  async retireActive(trx: Transaction, retiredAt: number, publishUntil: number): Promise<string[]> {
    const active: Array<Pick<JwtKeyRow, 'kid'>> = await trx<JwtKeyRow>('jwt_keys').whereNull('retired_at').select('kid');
    await trx<JwtKeyRow>('jwt_keys').whereNull('retired_at').update({ retired_at: retiredAt, publish_until: publishUntil });
    return active.map((r) => r.kid);
  }
}
