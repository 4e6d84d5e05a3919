// Core Keywhiz model: secrets (versioned, envelope-encrypted), groups, clients, memberships,
// access grants, operator API keys, and the broker's own keys. Timestamps are epoch milliseconds.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  await knex.schema.createTable('system_keys', (t) => {
    t.string('name', 64).primary();
    t.binary('wrapped_key').notNullable();
    t.string('root_key_version', 128).notNullable();
    t.bigInteger('created_at').notNullable();
  });

  await knex.schema.createTable('secrets', (t) => {
    t.increments('id').primary();
    t.string('name', 128).notNullable();
    t.text('description').notNullable().defaultTo('');
    t.string('type', 64).notNullable().defaultTo('opaque');
    t.text('labels').notNullable().defaultTo('{}');
    t.text('metadata').notNullable().defaultTo('{}');
    t.bigInteger('expiry').nullable();
    t.integer('current_version').notNullable();
    t.integer('latest_version').notNullable();
    t.string('created_by', 200).notNullable();
    t.bigInteger('created_at').notNullable();
    t.string('updated_by', 200).notNullable();
    t.bigInteger('updated_at').notNullable();
    t.bigInteger('deleted_at').nullable();
  });
  // A deleted secret keeps its row (and history) but frees the name for reuse.
  await knex.raw('CREATE UNIQUE INDEX secrets_live_name ON secrets (name) WHERE deleted_at IS NULL');
  await knex.raw('CREATE INDEX secrets_live_expiry ON secrets (expiry) WHERE deleted_at IS NULL');

  // Labels are also kept one row per pair so label filters use an index instead of scanning JSON.
  await knex.schema.createTable('secret_labels', (t) => {
    t.integer('secret_id').notNullable().references('id').inTable('secrets').onDelete('CASCADE');
    t.string('key', 63).notNullable();
    t.string('value', 256).notNullable();
    t.primary(['secret_id', 'key']);
    t.index(['key', 'value']);
  });

  await knex.schema.createTable('secret_versions', (t) => {
    t.increments('id').primary();
    t.integer('secret_id').notNullable().references('id').inTable('secrets').onDelete('CASCADE');
    t.integer('version').notNullable();
    t.binary('iv').notNullable();
    t.binary('ciphertext').notNullable();
    t.binary('wrapped_key').notNullable();
    t.string('root_key_version', 128).notNullable();
    t.string('checksum', 64).notNullable();
    t.integer('size').notNullable();
    t.string('created_by', 200).notNullable();
    t.bigInteger('created_at').notNullable();
    t.unique(['secret_id', 'version']);
    t.index(['root_key_version']);
  });

  await knex.schema.createTable('groups', (t) => {
    t.increments('id').primary();
    t.string('name', 128).notNullable().unique();
    t.text('description').notNullable().defaultTo('');
    t.text('labels').notNullable().defaultTo('{}');
    t.text('allowed_audiences').nullable();
    t.string('created_by', 200).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
  });

  await knex.schema.createTable('clients', (t) => {
    t.increments('id').primary();
    t.string('name', 128).notNullable().unique();
    t.string('client_id', 64).notNullable().unique();
    t.string('secret_hash', 128).notNullable();
    t.text('description').notNullable().defaultTo('');
    t.text('labels').notNullable().defaultTo('{}');
    t.boolean('enabled').notNullable().defaultTo(true);
    t.string('cert_identity', 512).nullable().unique();
    t.text('allowed_audiences').nullable();
    t.string('created_by', 200).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
    t.bigInteger('secret_rotated_at').notNullable();
  });

  await knex.schema.createTable('memberships', (t) => {
    t.integer('group_id').notNullable().references('id').inTable('groups').onDelete('CASCADE');
    t.integer('client_id').notNullable().references('id').inTable('clients').onDelete('CASCADE');
    t.bigInteger('created_at').notNullable();
    t.primary(['client_id', 'group_id']);
    t.index(['group_id']);
  });

  await knex.schema.createTable('access_grants', (t) => {
    t.integer('group_id').notNullable().references('id').inTable('groups').onDelete('CASCADE');
    t.integer('secret_id').notNullable().references('id').inTable('secrets').onDelete('CASCADE');
    t.bigInteger('created_at').notNullable();
    t.primary(['group_id', 'secret_id']);
    t.index(['secret_id']);
  });

  await knex.schema.createTable('api_keys', (t) => {
    t.string('id', 32).primary();
    t.string('name', 128).notNullable();
    t.string('role', 16).notNullable();
    t.string('key_hash', 128).notNullable().unique();
    t.text('scope').nullable();
    t.string('created_by', 200).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('expires_at').nullable();
    t.bigInteger('revoked_at').nullable();
  });

  await knex.schema.createTable('jwt_keys', (t) => {
    t.string('kid', 64).primary();
    t.string('alg', 16).notNullable();
    t.text('public_jwk').notNullable();
    t.binary('iv').notNullable();
    t.binary('private_ciphertext').notNullable();
    t.binary('wrapped_key').notNullable();
    t.string('root_key_version', 128).notNullable();
    t.bigInteger('created_at').notNullable();
    // retired keys no longer sign but stay published until every token they signed has expired
    t.bigInteger('retired_at').nullable();
    t.bigInteger('publish_until').nullable();
  });

  await knex.schema.createTable('revoked_tokens', (t) => {
    t.string('jti', 64).primary();
    t.bigInteger('expires_at').notNullable();
    t.bigInteger('revoked_at').notNullable();
    t.string('revoked_by', 200).notNullable();
  });
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  for (const table of [
    'revoked_tokens',
    'jwt_keys',
    'api_keys',
    'access_grants',
    'memberships',
    'clients',
    'groups',
    'secret_versions',
    'secret_labels',
    'secrets',
    'system_keys',
  ]) {
    await knex.schema.dropTableIfExists(table);
  }
}
