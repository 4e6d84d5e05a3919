import type { Database, Queryable } from '../db/database.js';

/** What TokenService.authenticate reads on every use of a client's access token. */
export interface ClientTokenState {
  enabled: boolean | number;
  name: string;
  secret_rotated_at: number | string;
  /** rows in revoked_tokens for the token's jti (0 or 1) */
  revoked: number | string;
}

export interface RevokedTokenRow {
  jti: string;
  expires_at: number;
  revoked_at: number;
  revoked_by: string;
}

/** Revocation state read on every use: one indexed statement (prepared, on SQLite's fast path). */
const CLIENT_TOKEN_STATE_SQL = `
  SELECT c.enabled, c.name, c.secret_rotated_at,
         (SELECT COUNT(*) FROM revoked_tokens r WHERE r.jti = ?) AS revoked
    FROM clients c
   WHERE c.id = ?`;

/** revoked_tokens, and the client columns a token's validity depends on. */
export class TokensDal {
  constructor(private readonly db: Database) {}

  clientTokenState(jti: string, clientId: number): Promise<ClientTokenState | undefined> {
    return this.db.readOne<ClientTokenState>(CLIENT_TOKEN_STATE_SQL, [jti, clientId]);
  }

  async isRevoked(jti: string): Promise<boolean> {
    return (await this.db.reader<RevokedTokenRow>('revoked_tokens').where({ jti }).first()) !== undefined;
  }

  /** Idempotent; pass `trx` to commit with an audit event. */
  async revoke(row: RevokedTokenRow, trx?: Queryable): Promise<void> {
    await (trx ?? this.db.reader)<RevokedTokenRow>('revoked_tokens').insert(row).onConflict('jti').ignore();
  }
}
