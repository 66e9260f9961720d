import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('tenants', (t) => {
    t.text('id').primary();
    t.text('name').notNullable();
    t.text('mode').notNullable().defaultTo('sandbox');
    t.text('status').notNullable().defaultTo('active');
    t.jsonb('policy').notNullable().defaultTo('{}');
    t.integer('version').notNullable().defaultTo(1);
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(`ALTER TABLE tenants ADD CONSTRAINT tenants_mode_check CHECK (mode IN ('sandbox', 'live'))`);
  await knex.raw(`ALTER TABLE tenants ADD CONSTRAINT tenants_status_check CHECK (status IN ('active', 'disabled'))`);

  await knex.schema.createTable('clients', (t) => {
    t.text('id').primary();
    t.text('name').notNullable().defaultTo('');
    t.text('secret_hash').notNullable();
    // During a secret rotation the previous secret keeps working until it expires.
    t.text('previous_secret_hash');
    t.timestamp('previous_secret_expires_at', { useTz: true });
    t.text('api_key_hash').notNullable().unique();
    t.jsonb('grant_types').notNullable();
    t.text('scope').notNullable().defaultTo('');
    t.text('token_endpoint_auth_method').notNullable().defaultTo('client_secret_basic');
    t.text('token_format').notNullable().defaultTo('opaque');
    t.boolean('introspection').notNullable().defaultTo(false);
    t.boolean('admin').notNullable().defaultTo(false);
    t.boolean('disabled').notNullable().defaultTo(false);
    t.jsonb('metadata').notNullable().defaultTo('{}');
    t.integer('version').notNullable().defaultTo(1);
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(`ALTER TABLE clients ADD CONSTRAINT clients_token_format_check CHECK (token_format IN ('opaque', 'jwt'))`);

  await knex.schema.createTable('client_tenants', (t) => {
    t.text('client_id').notNullable().references('clients.id').onDelete('CASCADE');
    t.text('tenant_id').notNullable().references('tenants.id').onDelete('CASCADE');
    t.primary(['client_id', 'tenant_id']);
    t.index(['tenant_id']);
  });

  // One table for every oidc-provider model (AccessToken, ClientCredentials, Grant, RefreshToken, ...).
  await knex.schema.createTable('oidc_payloads', (t) => {
    t.text('type').notNullable();
    t.text('id').notNullable();
    t.jsonb('payload').notNullable();
    t.text('grant_id');
    t.text('user_code');
    t.text('uid');
    t.timestamp('expires_at', { useTz: true });
    t.timestamp('consumed_at', { useTz: true });
    t.primary(['type', 'id']);
    t.index(['grant_id']);
    t.index(['uid']);
    t.index(['user_code']);
    t.index(['expires_at']);
  });

  await knex.schema.createTable('signing_keys', (t) => {
    t.text('kid').primary();
    t.text('alg').notNullable();
    t.jsonb('public_jwk').notNullable();
    t.text('private_jwk_sealed').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    // Published in /jwks from creation; used for signing from activates_at; dropped after expires_at.
    t.timestamp('activates_at', { useTz: true }).notNullable();
    t.timestamp('retired_at', { useTz: true });
    t.timestamp('expires_at', { useTz: true });
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('signing_keys');
  await knex.schema.dropTableIfExists('oidc_payloads');
  await knex.schema.dropTableIfExists('client_tenants');
  await knex.schema.dropTableIfExists('clients');
  await knex.schema.dropTableIfExists('tenants');
}
