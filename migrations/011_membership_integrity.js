// Row integrity, continued (issue 28, finding 8): memberships (client ↔ group) and delegations
// (a client's acts_for and release_gate, migration 009) decide access as grants do, so they get
// a MAC too: memberships.row_mac over (client, group), clients.delegation_mac over (client id,
// name, acts_for, release_gate). As in 007 the key lives with the broker, so the MACs of rows
// that exist now are written on the broker's next start (src/secrets/row-integrity-scanner.ts);
// row 2 of row_integrity_state records that this one-time backfill ran, after which a missing
// MAC counts as tampering.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  await knex.schema.alterTable('memberships', (t) => {
    t.string('row_mac', 64).nullable();
  });
  await knex.schema.alterTable('clients', (t) => {
    t.string('delegation_mac', 64).nullable();
  });
  await knex('row_integrity_state').insert({ id: 2, backfilled_at: null, backfilled_rows: null });
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  await knex('row_integrity_state').where({ id: 2 }).delete();
  await knex.schema.alterTable('clients', (t) => {
    t.dropColumn('delegation_mac');
  });
  await knex.schema.alterTable('memberships', (t) => {
    t.dropColumn('row_mac');
  });
}
