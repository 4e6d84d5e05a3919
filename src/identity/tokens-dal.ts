import type { Database, Queryable } from '../db/database.js';

/** What TokenService.authenticate reads on every use of a client's access token. */
export interface ClientTokenState {
  enabled: boolean | number;
  name: string;
  secret_rotated_at: number | string;
  /** rows in revoked_tokens for the token's jti or its renewal chain (0, 1 or 2) */
  revoked: number | string;
}

export interface RevokedTokenRow {
  jti: string;
  expires_at: number;
  revoked_at: number;
  revoked_by: string;
}

/**
 * Revocation state read on every use: one indexed statement (prepared, on SQLite's fast path).
 * A token is revoked when its own jti or its renewal chain's id is in revoked_tokens.
 */
const CLIENT_TOKEN_STATE_SQL = `
  SELECT e.generation AS epoch_generation, c.enabled, c.name, c.secret_rotated_at,
         (SELECT COUNT(*) FROM revoked_tokens r WHERE r.jti IN (?, ?)) AS revoked
    FROM cache_epoch e LEFT JOIN clients c ON c.id = ?
   WHERE e.id = 1`;

/** A token_chains row: a renewed token's jti and the chain it belongs to (migration 010). */
export interface TokenChainRow {
  jti: string;
  /** The jti of the chain's first token. */
  chain_id: string;
  expires_at: number;
}

/** revoked_tokens, token_chains, and the client columns a token's validity depends on. */
export class TokensDal {
  constructor(private readonly db: Database) {}

  /** `chainId`: the token's renewal chain (its own jti for a token that was not renewed). */
  /**
   * The state (undefined: no such client) and the cache epoch's generation it was read at, in one
   * statement: the token cache files it under that generation (src/db/cache-epoch.ts).
   */
  async clientTokenState(jti: string, chainId: string, clientId: number): Promise<{ state: ClientTokenState | undefined; epochGeneration: number }> {
    const row = await this.db.readOne<Omit<ClientTokenState, 'name'> & { name: string | null; epoch_generation: number | string }>(CLIENT_TOKEN_STATE_SQL, [jti, chainId, clientId]);
    if (!row) throw new Error('cache_epoch has no generation row');
    const { epoch_generation, ...state } = row;
    return { state: state.name === null ? undefined : (state as ClientTokenState), epochGeneration: Number(epoch_generation) };
  }

  /** Records that `row.jti` was renewed into the chain `row.chain_id`, before the token is handed out. */
  async recordRenewal(row: TokenChainRow): Promise<void> {
    await this.db.reader<TokenChainRow>('token_chains').insert(row).onConflict('jti').ignore();
  }

  /** The chain a renewed token belongs to; undefined for a token that was never renewed (or unknown). */
  async chainOf(jti: string, trx?: Queryable): Promise<string | undefined> {
    const row = await (trx ?? this.db.reader)<TokenChainRow>('token_chains').where({ jti }).first();
    return row?.chain_id;
  }

  async isRevoked(jti: string): Promise<boolean> {
    return (await this.db.reader<RevokedTokenRow>('revoked_tokens').where({ jti }).first()) !== undefined;
  }

  /** Idempotent (one row per jti or chain id); pass `trx` to commit with an audit event. */
  async revoke(rows: RevokedTokenRow[], trx?: Queryable): Promise<void> {
    if (rows.length === 0) return;
    await (trx ?? this.db.reader)<RevokedTokenRow>('revoked_tokens').insert(rows).onConflict('jti').ignore();
  }
}
