import type { Database, Transaction } from '../db/database.js';

/** A bootstrap_tokens row: a single-use token, stored as its SHA-256. */
export interface BootstrapTokenRow {
  token_hash: string;
  accessor: string;
  client_id: number;
  created_by: string;
  created_at: number;
  expires_at: number;
  used_at: number | null;
  /** jti of the access token its one exchange issued */
  issued_jti: string | null;
  compromised_at: number | null;
}

export type NewBootstrapTokenRow = Pick<BootstrapTokenRow, 'token_hash' | 'accessor' | 'client_id' | 'created_by' | 'created_at' | 'expires_at'>;

/** A token with the client it is for. */
export interface BootstrapTokenWithClient extends BootstrapTokenRow {
  name: string;
  public_client_id: string;
  enabled: boolean | number;
}

/** The bootstrap_tokens table. */
export class BootstrapTokensDal {
  constructor(private readonly db: Database) {}

  async insert(trx: Transaction, row: NewBootstrapTokenRow): Promise<void> {
    await trx<BootstrapTokenRow>('bootstrap_tokens').insert(row);
  }

  /** Marks an unused, unexpired token used; true for the one caller that won. Atomic on both databases. */
  async claim(tokenHash: string, now: number): Promise<boolean> {
    const claimed = await this.db
      .reader<BootstrapTokenRow>('bootstrap_tokens')
      .where({ token_hash: tokenHash })
      .whereNull('used_at')
      .where('expires_at', '>', now)
      .update({ used_at: now });
    return claimed === 1;
  }

  async findWithClient(tokenHash: string): Promise<BootstrapTokenWithClient | undefined> {
    return this.db
      .reader('bootstrap_tokens as b')
      .join('clients as c', 'c.id', 'b.client_id')
      .where('b.token_hash', tokenHash)
      .select('b.*', 'c.name', 'c.client_id as public_client_id', 'c.enabled')
      .first();
  }

  async find(tokenHash: string): Promise<BootstrapTokenRow | undefined> {
    return this.db.reader<BootstrapTokenRow>('bootstrap_tokens').where({ token_hash: tokenHash }).first();
  }

  async setIssuedJti(tokenHash: string, jti: string): Promise<void> {
    await this.db.reader<BootstrapTokenRow>('bootstrap_tokens').where({ token_hash: tokenHash }).update({ issued_jti: jti });
  }

  async markCompromised(tokenHash: string, now: number): Promise<void> {
    await this.db.reader<BootstrapTokenRow>('bootstrap_tokens').where({ token_hash: tokenHash }).update({ compromised_at: now });
  }

  /** The client's newest 100 tokens. */
  async listForClient(clientId: number): Promise<BootstrapTokenRow[]> {
    return this.db.reader<BootstrapTokenRow>('bootstrap_tokens').where({ client_id: clientId }).orderBy('created_at', 'desc').limit(100);
  }
}
