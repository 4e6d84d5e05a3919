import type { Database, Queryable, Transaction } from '../../db/database.js';

/**
 * A row of trusted_issuers. The JSON columns are parsed defensively by the service: a row edited
 * outside the API must not turn into a 500 or a looser rule.
 */
export interface TrustedIssuerRow {
  name: string;
  issuer: string;
  jwks_uri: string | null;
  /** JSON: a JWK set, when the keys are pinned instead of fetched from jwks_uri. */
  jwks: string | null;
  audience: string;
  /** JSON: claim name -> glob or globs. */
  claim_rules: string;
  /** JSON: signing key names. */
  allowed_keys: string;
  /** JSON: image patterns. */
  allowed_images: string;
  token_ttl: number;
  /** SQLite answers 0/1. */
  enabled: boolean | number;
  /** Changes on every update: signer tokens of an older generation are revoked. */
  token_generation: string | null;
  created_by: string;
  created_at: number;
  updated_at: number;
}

export type TrustedIssuerChanges = Partial<Omit<TrustedIssuerRow, 'name' | 'created_by' | 'created_at'>>;

/** The trusted_issuers table; nothing else queries it. */
export class TrustedIssuerDal {
  constructor(private readonly db: Database) {}

  /** Pass a write's transaction to read what that transaction sees. */
  async find(name: string, executor: Queryable = this.db.reader): Promise<TrustedIssuerRow | undefined> {
    return executor<TrustedIssuerRow>('trusted_issuers').where({ name }).first();
  }

  async list(): Promise<TrustedIssuerRow[]> {
    return this.db.reader<TrustedIssuerRow>('trusted_issuers').orderBy('name');
  }

  /** Every registration of one issuer URL (several may share it: per audience, per repository). */
  async forIssuer(issuer: string): Promise<TrustedIssuerRow[]> {
    return this.db.reader<TrustedIssuerRow>('trusted_issuers').where({ issuer }).orderBy('name');
  }

  async insert(trx: Transaction, row: TrustedIssuerRow): Promise<void> {
    await trx<TrustedIssuerRow>('trusted_issuers').insert(row);
  }

  async update(trx: Transaction, name: string, changes: TrustedIssuerChanges): Promise<void> {
    await trx<TrustedIssuerRow>('trusted_issuers').where({ name }).update(changes);
  }

  /** False when there was no such issuer. */
  async delete(trx: Transaction, name: string): Promise<boolean> {
    return (await trx<TrustedIssuerRow>('trusted_issuers').where({ name }).delete()) > 0;
  }
}
