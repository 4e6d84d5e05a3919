// Cache epoch (issue 27): the delivery path keeps what it read about tokens, grants and secrets
// in memory, and every instance drops all of it when this one number moves. Triggers move it on
// every write to a table those reads depend on, whoever writes (the broker, an operator's SQL, an
// attacker with database access), so no code path can forget to; each instance polls it
// (src/db/cache-epoch.ts). On PostgreSQL the trigger is deferred to commit and bumps once per
// transaction: the row lock is taken last and held for an instant, so writers cannot deadlock on
// it, and a bulk change (a backfill, a root key rotation) is one bump, not one per row. The
// function keeps the search_path it was created under, so a write from a session with another
// search_path (an operator's psql) still finds cache_epoch instead of failing.

const WATCHED = {
  clients: 'INSERT OR UPDATE OR DELETE',
  groups: 'INSERT OR UPDATE OR DELETE',
  memberships: 'INSERT OR UPDATE OR DELETE',
  access_grants: 'INSERT OR UPDATE OR DELETE',
  secrets: 'INSERT OR UPDATE OR DELETE',
  secret_versions: 'INSERT OR UPDATE OR DELETE',
  revoked_tokens: 'INSERT OR UPDATE OR DELETE',
};

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  await knex.schema.createTable('cache_epoch', (t) => {
    t.integer('id').primary();
    t.bigInteger('generation').notNullable();
  });
  await knex('cache_epoch').insert({ id: 1, generation: 1 });
  if (knex.client.config.client === 'pg') {
    await knex.raw(`
      CREATE FUNCTION keywarden_bump_cache_epoch() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
      BEGIN
        IF current_setting('keywarden.cache_epoch_bumped', true) IS DISTINCT FROM 'yes' THEN
          PERFORM set_config('keywarden.cache_epoch_bumped', 'yes', true);
          UPDATE cache_epoch SET generation = generation + 1 WHERE id = 1;
        END IF;
        RETURN NULL;
      END $$`);
    for (const [table, events] of Object.entries(WATCHED)) {
      await knex.raw(`CREATE CONSTRAINT TRIGGER ${table}_cache_epoch AFTER ${events} ON "${table}" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keywarden_bump_cache_epoch()`);
    }
    return;
  }
  for (const [table, events] of Object.entries(WATCHED)) {
    for (const event of events.split(' OR ')) {
      await knex.raw(`CREATE TRIGGER ${table}_cache_epoch_${event.toLowerCase()} AFTER ${event} ON "${table}" BEGIN UPDATE cache_epoch SET generation = generation + 1 WHERE id = 1; END`);
    }
  }
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  if (knex.client.config.client === 'pg') {
    for (const table of Object.keys(WATCHED)) await knex.raw(`DROP TRIGGER IF EXISTS ${table}_cache_epoch ON "${table}"`);
    await knex.raw('DROP FUNCTION IF EXISTS keywarden_bump_cache_epoch()');
  } else {
    for (const [table, events] of Object.entries(WATCHED)) {
      for (const event of events.split(' OR ')) await knex.raw(`DROP TRIGGER IF EXISTS ${table}_cache_epoch_${event.toLowerCase()}`);
    }
  }
  await knex.schema.dropTable('cache_epoch');
}
