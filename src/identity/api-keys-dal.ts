import type { Database, Queryable, Transaction } from '../db/database.js';
import type { OperatorRole } from './identity-types.js';

/** An api_keys row; the key itself is stored only as its SHA-256. */
export interface ApiKeyRow {
  id: string;
  name: string;
  role: OperatorRole;
  key_hash: string;
  /** JSON (SignerScope), signer keys only */
  scope: string | null;
  created_by: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
}

export type NewApiKeyRow = Omit<ApiKeyRow, 'revoked_at' | 'scope' | 'expires_at'> & Partial<Pick<ApiKeyRow, 'scope' | 'expires_at'>>;

/** The api_keys table. */
export class ApiKeysDal {
  constructor(private readonly db: Database) {}

  async findByHash(keyHash: string): Promise<ApiKeyRow | undefined> {
    return this.db.reader<ApiKeyRow>('api_keys').where({ key_hash: keyHash }).first();
  }

  async find(id: string, trx?: Queryable): Promise<ApiKeyRow | undefined> {
    return (trx ?? this.db.reader)<ApiKeyRow>('api_keys').where({ id }).first();
  }

  async list(): Promise<ApiKeyRow[]> {
    return this.db.reader<ApiKeyRow>('api_keys').orderBy('created_at');
  }

  async count(): Promise<number> {
    const row: { n: number | string } | undefined = await this.db.reader('api_keys').count<{ n: number | string }[]>('* as n').first();
    return Number(row?.n ?? 0);
  }

  async insert(trx: Transaction, row: NewApiKeyRow): Promise<void> {
    await trx<ApiKeyRow>('api_keys').insert(row);
  }

  async setRevoked(trx: Transaction, id: string, revokedAt: number): Promise<void> {
    await trx<ApiKeyRow>('api_keys').where({ id }).update({ revoked_at: revokedAt });
  }
}
