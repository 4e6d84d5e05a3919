import type { Database, Queryable, Transaction } from '../../db/database.js';

export type SigningAlgorithm = 'ecdsa-p256' | 'ed25519';
export type SigningKeyStatus = 'active' | 'disabled';

/** A row of signing_keys. */
export interface SigningKeyRow {
  name: string;
  algorithm: SigningAlgorithm;
  current_version: number;
  status: SigningKeyStatus;
  created_by: string;
  created_at: number;
  updated_at: number;
}

/** A row of signing_key_versions: one key pair, its private half sealed with the root key. */
export interface SigningKeyVersionRow {
  name: string;
  version: number;
  key_id: string;
  public_pem: string;
  iv: Buffer;
  private_ciphertext: Buffer;
  wrapped_key: Buffer;
  root_key_version: string;
  created_at: number;
}

export type PublicKeyVersionRow = Pick<SigningKeyVersionRow, 'version' | 'key_id' | 'public_pem' | 'created_at'>;

/**
 * The signing_keys and signing_key_versions tables. Nothing else queries them, except root-key
 * rotation (src/crypto/root-key-rotation.ts), which rewraps the sealed columns of every table.
 */
export class SigningKeyDal {
  constructor(private readonly db: Database) {}

  /** Pass a write's transaction to read what that transaction sees. */
  async find(name: string, executor: Queryable = this.db.reader): Promise<SigningKeyRow | undefined> {
    return executor<SigningKeyRow>('signing_keys').where({ name }).first();
  }

  async names(): Promise<string[]> {
    return (await this.db.reader<SigningKeyRow>('signing_keys').orderBy('name').select('name')).map((r) => r.name);
  }

  /** Every version's public half, newest first unless asked otherwise. */
  async publicVersions(name: string, order: 'asc' | 'desc' = 'desc'): Promise<PublicKeyVersionRow[]> {
    return this.db.reader<SigningKeyVersionRow>('signing_key_versions').where({ name }).orderBy('version', order).select('version', 'key_id', 'public_pem', 'created_at');
  }

  async findVersion(name: string, version: number): Promise<SigningKeyVersionRow | undefined> {
    return this.db.reader<SigningKeyVersionRow>('signing_key_versions').where({ name, version }).first();
  }

  async insert(trx: Transaction, row: SigningKeyRow): Promise<void> {
    await trx<SigningKeyRow>('signing_keys').insert(row);
  }

  async insertVersion(trx: Transaction, row: SigningKeyVersionRow): Promise<void> {
    await trx<SigningKeyVersionRow>('signing_key_versions').insert(row);
  }

  async update(trx: Transaction, name: string, changes: Partial<Pick<SigningKeyRow, 'current_version' | 'status' | 'updated_at'>>): Promise<void> {
    await trx<SigningKeyRow>('signing_keys').where({ name }).update(changes);
  }
}
