// Release gate: the decision cache. One row per (image subject, digest, policy, policy version),
// addressed by a single hashed primary key so the cached path is one primary-key lookup. A
// policy change bumps the policy version (versions are never reused, even after delete and
// re-create), so entries for the old version stop matching; a new, more specific policy changes
// which policy is selected, so those entries stop matching too.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  await knex.schema.createTable('release_gate_cache', (t) => {
    // hex sha256 of subject \n digest \n policy \n policy_version
    t.string('cache_key', 64).primary();
    t.string('subject', 1024).notNullable();
    t.string('digest', 80).notNullable();
    t.string('policy', 128).notNullable();
    t.integer('policy_version').notNullable();
    t.string('decision_id', 40).notNullable();
    t.string('decision', 8).notNullable();
    t.text('checks').notNullable();
    t.bigInteger('valid_until').notNullable();
    t.index(['valid_until']);
  });
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  await knex.schema.dropTableIfExists('release_gate_cache');
}
