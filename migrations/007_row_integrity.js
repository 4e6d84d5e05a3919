// Row integrity: a MAC over the security-relevant columns of secrets (which version is current,
// deleted or not), access grants and secret versions (checksum, size), so that a direct database
// edit (a silent rollback, a forged grant, an edited checksum) fails closed on the next read and
// shows in the broker's background verification. The key lives with the broker (derived from a
// system key), so the MACs of rows that exist now are written by the broker on its next start
// (src/secrets/row-integrity.ts); row_integrity_state records that this one-time backfill ran,
// after which a missing MAC counts as tampering.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  for (const table of ['secrets', 'access_grants', 'secret_versions']) {
    await knex.schema.alterTable(table, (t) => {
      t.string('row_mac', 64).nullable();
    });
  }
  await knex.schema.createTable('row_integrity_state', (t) => {
    t.integer('id').primary();
    t.bigInteger('backfilled_at').nullable();
    t.integer('backfilled_rows').nullable();
  });
  await knex('row_integrity_state').insert({ id: 1, backfilled_at: null, backfilled_rows: null });
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  await knex.schema.dropTableIfExists('row_integrity_state');
  for (const table of ['secret_versions', 'access_grants', 'secrets']) {
    await knex.schema.alterTable(table, (t) => {
      t.dropColumn('row_mac');
    });
  }
}
