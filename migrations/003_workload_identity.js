// Workload identity: single-use bootstrap tokens and the shared failure counters behind the
// token endpoint's rate limit (kept in the database so every instance enforces one limit).

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  await knex.schema.createTable('bootstrap_tokens', (t) => {
    t.string('token_hash', 64).primary();
    t.string('accessor', 32).notNullable().unique();
    t.integer('client_id').notNullable().references('id').inTable('clients').onDelete('CASCADE');
    t.string('created_by', 200).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('expires_at').notNullable();
    t.bigInteger('used_at').nullable();
    t.string('issued_jti', 64).nullable();
    t.bigInteger('compromised_at').nullable();
    t.index(['client_id']);
  });

  await knex.schema.createTable('auth_failures', (t) => {
    t.string('bucket', 200).primary();
    t.bigInteger('window_start').notNullable();
    t.integer('failures').notNullable();
  });
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  await knex.schema.dropTableIfExists('auth_failures');
  await knex.schema.dropTableIfExists('bootstrap_tokens');
}
