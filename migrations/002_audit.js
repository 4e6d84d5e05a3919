// Tamper-evident audit log. audit_head is the single row every writer locks, so that the
// sequence and previous hash are allocated in order even with several broker instances.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  await knex.schema.createTable('audit_events', (t) => {
    t.bigInteger('seq').primary();
    t.bigInteger('ts').notNullable();
    t.string('actor_kind', 16).notNullable();
    t.string('actor_id', 128).nullable();
    t.string('actor_name', 200).nullable();
    t.string('action', 64).notNullable();
    t.string('resource_kind', 32).nullable();
    t.string('resource_name', 512).nullable();
    t.string('outcome', 8).notNullable();
    t.text('reason').nullable();
    t.string('request_id', 64).nullable();
    t.string('source_ip', 64).nullable();
    t.string('user_agent', 256).nullable();
    t.text('details').notNullable().defaultTo('{}');
    t.string('prev_hash', 64).notNullable();
    t.string('hash', 64).notNullable();
    t.index(['ts']);
    t.index(['actor_name', 'ts']);
    t.index(['action', 'ts']);
    t.index(['resource_kind', 'resource_name', 'ts']);
  });

  await knex.schema.createTable('audit_head', (t) => {
    t.integer('id').primary();
    t.bigInteger('seq').notNullable();
    t.string('hash', 64).notNullable();
  });
  await knex('audit_head').insert({ id: 1, seq: 0, hash: '0'.repeat(64) });

  await knex.schema.createTable('audit_checkpoints', (t) => {
    t.increments('id').primary();
    t.bigInteger('seq').notNullable();
    t.string('head_hash', 64).notNullable();
    t.bigInteger('created_at').notNullable();
    t.text('jws').notNullable();
    t.string('kid', 64).notNullable();
    t.string('reason', 32).notNullable();
    t.index(['seq']);
  });

  // Last read of a secret by a client, kept beside the log so reports need no scan of it.
  await knex.schema.createTable('secret_reads', (t) => {
    t.integer('client_id').notNullable().references('id').inTable('clients').onDelete('CASCADE');
    t.integer('secret_id').notNullable().references('id').inTable('secrets').onDelete('CASCADE');
    t.bigInteger('last_read_at').notNullable();
    t.integer('last_version').notNullable();
    t.primary(['client_id', 'secret_id']);
  });
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  await knex.schema.dropTableIfExists('secret_reads');
  await knex.schema.dropTableIfExists('audit_checkpoints');
  await knex.schema.dropTableIfExists('audit_head');
  await knex.schema.dropTableIfExists('audit_events');
}
