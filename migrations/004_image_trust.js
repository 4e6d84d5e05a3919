// Image trust: broker-held signing keys (sealed like secrets), trusted CI OIDC issuers, the
// signatures the broker made, registry credentials, trust policies and release decisions.

/** @param {import('knex').Knex} knex */
export async function up(knex) {
  await knex.schema.createTable('signing_keys', (t) => {
    t.string('name', 128).primary();
    t.string('algorithm', 16).notNullable();
    t.integer('current_version').notNullable();
    t.string('status', 16).notNullable();
    t.string('created_by', 200).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
  });

  await knex.schema.createTable('signing_key_versions', (t) => {
    t.string('name', 128).notNullable().references('name').inTable('signing_keys').onDelete('CASCADE');
    t.integer('version').notNullable();
    t.string('key_id', 64).notNullable().unique();
    t.text('public_pem').notNullable();
    t.binary('iv').notNullable();
    t.binary('private_ciphertext').notNullable();
    t.binary('wrapped_key').notNullable();
    t.string('root_key_version', 128).notNullable();
    t.bigInteger('created_at').notNullable();
    t.primary(['name', 'version']);
  });

  await knex.schema.createTable('trusted_issuers', (t) => {
    t.string('name', 128).primary();
    t.string('issuer', 512).notNullable();
    t.string('jwks_uri', 1024).nullable();
    t.text('jwks').nullable();
    t.string('audience', 512).notNullable();
    t.text('claim_rules').notNullable();
    t.text('allowed_keys').notNullable();
    t.text('allowed_images').notNullable();
    t.integer('token_ttl').notNullable();
    t.string('created_by', 200).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
    t.index(['issuer']);
  });

  await knex.schema.createTable('image_signatures', (t) => {
    t.increments('id').primary();
    t.string('image', 1024).notNullable();
    t.string('repository', 512).notNullable();
    t.string('digest', 80).notNullable();
    t.string('key_name', 128).notNullable();
    t.integer('key_version').notNullable();
    t.string('key_id', 64).notNullable();
    t.text('signature').notNullable();
    t.text('payload').notNullable();
    t.text('bundle').notNullable();
    t.string('signature_ref', 1200).notNullable();
    t.string('bundle_ref', 1200).nullable();
    t.string('signed_by', 200).notNullable();
    t.bigInteger('created_at').notNullable();
    t.index(['repository', 'digest']);
  });

  await knex.schema.createTable('registry_credentials', (t) => {
    t.string('registry', 255).primary();
    t.string('secret_name', 128).notNullable();
    t.bigInteger('created_at').notNullable();
  });

  await knex.schema.createTable('trust_policies', (t) => {
    t.string('name', 128).primary();
    t.integer('version').notNullable();
    t.text('document').notNullable();
    t.string('updated_by', 200).notNullable();
    t.bigInteger('created_at').notNullable();
    t.bigInteger('updated_at').notNullable();
  });

  await knex.schema.createTable('trust_policy_versions', (t) => {
    t.string('name', 128).notNullable();
    t.integer('version').notNullable();
    t.text('document').nullable();
    t.string('change', 16).notNullable();
    t.string('changed_by', 200).notNullable();
    t.bigInteger('changed_at').notNullable();
    t.primary(['name', 'version']);
  });

  await knex.schema.createTable('release_decisions', (t) => {
    t.string('id', 40).primary();
    t.string('image', 1024).notNullable();
    t.string('digest', 80).nullable();
    t.string('policy', 128).nullable();
    t.integer('policy_version').nullable();
    t.string('decision', 8).notNullable();
    t.text('checks').notNullable();
    t.boolean('cached').notNullable();
    t.string('cached_from', 40).nullable();
    t.bigInteger('valid_until').nullable();
    t.string('decided_by', 200).notNullable();
    t.bigInteger('decided_at').notNullable();
    t.index(['decided_at']);
    t.index(['digest', 'policy', 'policy_version']);
  });
}

/** @param {import('knex').Knex} knex */
export async function down(knex) {
  for (const table of [
    'release_decisions',
    'trust_policy_versions',
    'trust_policies',
    'registry_credentials',
    'image_signatures',
    'trusted_issuers',
    'signing_key_versions',
    'signing_keys',
  ]) {
    await knex.schema.dropTableIfExists(table);
  }
}
