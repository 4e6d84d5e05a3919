// Release gate trust epoch (issue 27, target 6): each instance keeps decisions, and the policies
// they were made under, in memory; they are usable only while this one number has not moved.
// Triggers move it on every write to a table a decision depends on (trust policies, signing keys
// and their versions, trusted issuers, registry credentials), whoever writes (the broker, an
// operator's SQL), so no code path can forget to. The number is also part of the key of
// release_gate_cache, so a cached row from before a key revocation never answers after it, on
// any instance. Each instance polls it (src/trust/gate/trust-epoch.ts). On PostgreSQL the
// trigger is deferred to commit and bumps once per transaction (the row lock is taken last and
// held for an instant, so writers cannot deadlock on it).
//
// Numbered 013: 012 is taken by the delivery path's cache epoch (a separate number, so that a
// grant change does not drop the gate's decisions and a policy change does not drop tokens).

const WATCHED = ['trust_policies', 'signing_keys', 'signing_key_versions', 'trusted_issuers', 'registry_credentials'];

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  await knex.schema.createTable('gate_trust_epoch', (t) => {
    t.integer('id').primary();
    t.bigInteger('generation').notNullable();
  });
  await knex('gate_trust_epoch').insert({ id: 1, generation: 1 });
  if (knex.client.config.client === 'pg') {
    await knex.raw(`
      CREATE FUNCTION keywarden_bump_gate_trust_epoch() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
      BEGIN
        IF current_setting('keywarden.gate_trust_epoch_bumped', true) IS DISTINCT FROM 'yes' THEN
          PERFORM set_config('keywarden.gate_trust_epoch_bumped', 'yes', true);
          UPDATE gate_trust_epoch SET generation = generation + 1 WHERE id = 1;
        END IF;
        RETURN NULL;
      END $$`);
    for (const table of WATCHED) {
      await knex.raw(`CREATE CONSTRAINT TRIGGER ${table}_gate_trust_epoch AFTER INSERT OR UPDATE OR DELETE ON "${table}" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keywarden_bump_gate_trust_epoch()`);
    }
    return;
  }
  for (const table of WATCHED) {
    for (const event of ['insert', 'update', 'delete']) {
      await knex.raw(`CREATE TRIGGER ${table}_gate_trust_epoch_${event} AFTER ${event.toUpperCase()} ON "${table}" BEGIN UPDATE gate_trust_epoch SET generation = generation + 1 WHERE id = 1; END`);
    }
  }
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  if (knex.client.config.client === 'pg') {
    for (const table of WATCHED) await knex.raw(`DROP TRIGGER IF EXISTS ${table}_gate_trust_epoch ON "${table}"`);
    await knex.raw('DROP FUNCTION IF EXISTS keywarden_bump_gate_trust_epoch()');
  } else {
    for (const table of WATCHED) {
      for (const event of ['insert', 'update', 'delete']) await knex.raw(`DROP TRIGGER IF EXISTS ${table}_gate_trust_epoch_${event}`);
    }
  }
  await knex.schema.dropTable('gate_trust_epoch');
}
