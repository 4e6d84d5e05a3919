// Issue 28: Vault's renew-self mints a new token (a JWT's expiry cannot move), so revoking the
// token it came from must also end every token renewed from it. Each renewed access token
// carries its chain id (the jti of the chain's first token) in its `kw.c` claim; this table maps
// the jti of every renewed token to its chain, so that revoking a renewed token by its jti finds
// the chain. Revocation puts the chain id into revoked_tokens as well, and verification checks
// the token's jti and chain id there in one statement. Root tokens have no row: their chain id
// is their own jti.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  await knex.schema.createTable('token_chains', (t) => {
    t.string('jti', 64).primary();
    t.string('chain_id', 64).notNullable();
    // when the token expires: after that the row serves nothing (kept for pruning)
    t.bigInteger('expires_at').notNullable();
  });
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  await knex.schema.dropTableIfExists('token_chains');
}
