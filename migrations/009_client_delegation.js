// Issue 13: what a client may do beyond reading its own secrets, granted by an admin (deny by
// default). The Docker plugin authenticates as a client and needs two things an ordinary
// workload never has:
// - acts_for: a JSON array of client names it may read secrets for (one level: it reads what
//   those clients are granted, never what they in turn could act for);
// - release_gate: it may ask the release gate for decisions (docker run, service create).

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  await knex.schema.alterTable('clients', (t) => {
    t.text('acts_for').notNullable().defaultTo('[]');
    t.boolean('release_gate').notNullable().defaultTo(false);
  });
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  await knex.schema.alterTable('clients', (t) => {
    t.dropColumn('acts_for');
    t.dropColumn('release_gate');
  });
}
