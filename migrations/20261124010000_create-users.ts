import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('users', (t) => {
    t.uuid('id').primary(); // the immutable platform id (member_id)
    t.text('tenant_id').notNullable().references('tenants.id');
    t.text('email');
    t.text('mobile');
    t.text('username');
    t.text('password_hash').notNullable();
    t.text('role').notNullable().defaultTo('root');
    t.text('group_name');
    t.jsonb('profile').notNullable().defaultTo('{}');
    t.timestamp('accepted_terms_at', { useTz: true });
    t.text('terms_version');
    t.text('status').notNullable().defaultTo('active');
    // Brute-force protection: attempts counted before the password is evaluated.
    t.integer('failed_login_count').notNullable().defaultTo(0);
    t.timestamp('locked_until', { useTz: true });
    t.integer('lockout_count').notNullable().defaultTo(0);
    t.integer('version').notNullable().defaultTo(1);
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });
  await knex.raw(`ALTER TABLE users ADD CONSTRAINT users_role_check CHECK (role IN ('root', 'authorised'))`);
  await knex.raw(`ALTER TABLE users ADD CONSTRAINT users_status_check CHECK (status IN ('active', 'locked'))`);
  await knex.raw(`ALTER TABLE users ADD CONSTRAINT users_identifier_check CHECK (email IS NOT NULL OR mobile IS NOT NULL OR username IS NOT NULL)`);
  await knex.raw('CREATE UNIQUE INDEX users_tenant_email_key ON users (tenant_id, email) WHERE email IS NOT NULL');
  await knex.raw('CREATE UNIQUE INDEX users_tenant_mobile_key ON users (tenant_id, mobile) WHERE mobile IS NOT NULL');
  await knex.raw('CREATE UNIQUE INDEX users_tenant_username_key ON users (tenant_id, username) WHERE username IS NOT NULL');

  // Sessions are oidc-provider Grants: list and revoke them by user.
  await knex.schema.alterTable('oidc_payloads', (t) => {
    t.text('account_id');
    t.index(['account_id', 'type']);
  });

  // rate-limiter-flexible's PostgreSQL store (per-IP throttling shared by all processes).
  await knex.schema.createTable('rate_limits', (t) => {
    t.string('key', 255).primary();
    t.integer('points').notNullable().defaultTo(0);
    t.bigInteger('expire');
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('rate_limits');
  await knex.schema.alterTable('oidc_payloads', (t) => {
    t.dropIndex(['account_id', 'type']);
    t.dropColumn('account_id');
  });
  await knex.schema.dropTableIfExists('users');
}
