// Trusted issuers can be disabled, and every signer token names the configuration generation of
// the issuer that minted it: deleting, disabling or changing the issuer gives it a new generation
// (or no row at all), so its earlier tokens stop authenticating on every instance at once.
// Existing rows keep a NULL generation; tokens minted before this migration carry none either,
// and match them until the issuer is next changed. Claim rules are not rewritten here: whether a
// registration constrains its subjects is evaluated whenever it is read or used.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  await knex.schema.alterTable('trusted_issuers', (t) => {
    t.boolean('enabled').notNullable().defaultTo(true);
    t.string('token_generation', 64).nullable();
  });
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  await knex.schema.alterTable('trusted_issuers', (t) => {
    t.dropColumn('token_generation');
    t.dropColumn('enabled');
  });
}
