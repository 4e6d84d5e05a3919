// The audit log becomes a Merkle tree (RFC 6962 / RFC 9162), like Certificate Transparency.
//
// Before: every audited write locked the single audit_head row to chain its event to the previous
// one, so every instance queued on one lock. Now an event is only inserted (its number comes from
// an autoincrement, which locks no row) with leaf_index NULL: that is the queue. A sequencer,
// one at a time across instances, gives queued events consecutive leaf indexes, stores the
// completed perfect subtrees in audit_tree_nodes and signs a tree head (audit_tree_heads).
//
// Events chained before this migration keep their seq, prev_hash and hash, and are queued in seq
// order, so they become the first leaves of the tree in their current order (the sequencer
// takes the queue by seq). Their leaf covers prev_hash and hash too, so the old chain stays
// readable and bound. audit_checkpoints (JWS checkpoints of the chain) is kept, read-only, for
// exports and audits made before the change.

const EVENT_COLUMNS = [
  'seq', 'ts', 'actor_kind', 'actor_id', 'actor_name', 'action', 'resource_kind', 'resource_name',
  'outcome', 'reason', 'request_id', 'source_ip', 'user_agent', 'details', 'prev_hash', 'hash',
];

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  const pg = knex.client.config.client === 'pg';
  // the chained rows move aside while audit_events is rebuilt: on SQLite seq must become an
  // autoincrement, which needs a new table, and doing the same on both keeps one schema
  await knex.raw('CREATE TABLE audit_events_chained AS SELECT * FROM audit_events');
  await knex.schema.dropTable('audit_events');
  await knex.schema.createTable('audit_events', (t) => {
    // the event number: assigned at commit, increasing, gaps where a transaction rolled back
    t.bigIncrements('seq');
    // the position in the Merkle tree; NULL while the event waits for the sequencer
    t.bigInteger('leaf_index').nullable().unique();
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
    // only events chained before this migration have these
    t.string('prev_hash', 64).nullable();
    t.string('hash', 64).nullable();
    t.index(['ts']);
    t.index(['actor_name', 'ts']);
    t.index(['action', 'ts']);
    t.index(['resource_kind', 'resource_name', 'ts']);
  });
  // the queue: the sequencer reads the oldest unsequenced events without scanning the log
  await knex.raw('CREATE INDEX audit_events_queued ON audit_events (seq) WHERE leaf_index IS NULL');
  const cols = EVENT_COLUMNS.join(', ');
  await knex.raw(`INSERT INTO audit_events (${cols}) SELECT ${cols} FROM audit_events_chained ORDER BY seq`);
  await knex.schema.dropTable('audit_events_chained');
  if (pg) {
    await knex.raw("SELECT setval(pg_get_serial_sequence('audit_events', 'seq'), GREATEST((SELECT COALESCE(MAX(seq), 0) FROM audit_events), 1), (SELECT COUNT(*) > 0 FROM audit_events))");
  }
  await knex.schema.dropTable('audit_head');

  // Complete (perfect) subtrees only: level L, index i covers leaves [i*2^L, (i+1)*2^L); level 0
  // holds the leaf hashes. A proof needs O(log n) of them.
  await knex.schema.createTable('audit_tree_nodes', (t) => {
    t.smallint('level').notNullable();
    t.bigInteger('idx').notNullable();
    t.string('hash', 64).notNullable();
    t.primary(['level', 'idx']);
  });

  // Signed tree heads: a C2SP tlog-checkpoint, signed as a C2SP signed note with the log key.
  // Several heads may share a size (re-signed on the checkpoint cadence while nothing changed).
  await knex.schema.createTable('audit_tree_heads', (t) => {
    t.bigIncrements('id');
    t.bigInteger('tree_size').notNullable();
    t.string('root_hash', 64).notNullable();
    t.bigInteger('created_at').notNullable();
    t.text('note').notNullable();
    t.string('key_id', 8).notNullable();
    t.index(['tree_size']);
  });
}

/** @param {import('knex').Knex} knex */
export async function down() {
  // events recorded since carry no chain link, and a chain cannot be forged for them afterwards
  throw new Error('008_transparency_log cannot be rolled back: restore the pre-upgrade backup instead');
}
