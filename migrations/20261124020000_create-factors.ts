import type { Knex } from 'knex';

export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable('factors', (t) => {
    t.uuid('id').primary();
    t.text('tenant_id').notNullable().references('tenants.id');
    t.uuid('user_id').notNullable().references('users.id').onDelete('CASCADE');
    t.text('type').notNullable(); // OTP | PUSH
    t.text('channel').notNullable(); // SMS | AUTHY | BIOMETRIC
    t.text('status').notNullable(); // PENDING_VERIFICATION | ACTIVE
    t.jsonb('public_jwk'); // PUSH: the device's P-256 key
    t.text('device_name');
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('activated_at', { useTz: true });
    t.unique(['tenant_id', 'user_id', 'channel']);
  });

  await knex.schema.createTable('challenges', (t) => {
    t.uuid('id').primary();
    t.text('tenant_id').notNullable().references('tenants.id');
    t.uuid('user_id').notNullable().references('users.id').onDelete('CASCADE');
    t.uuid('factor_id').references('factors.id').onDelete('CASCADE');
    t.text('purpose').notNullable(); // enrolment | stepup
    t.text('channel').notNullable();
    t.text('session_id'); // the login session (grant) the challenge is bound to
    t.text('code_hash'); // OTP: HMAC of challenge id and code
    t.text('nonce'); // PUSH
    t.jsonb('authorization_details');
    t.text('binding_hash'); // SHA-256 of the canonical authorization_details
    t.text('status').notNullable(); // PENDING | APPROVED | DENIED | CONSUMED | CANCELLED
    t.timestamp('created_at', { useTz: true }).notNullable();
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.timestamp('answered_at', { useTz: true });
    t.timestamp('consumed_at', { useTz: true });
    t.jsonb('result'); // push step-up: the token reply, handed out once
    t.index(['tenant_id', 'user_id', 'purpose', 'channel', 'status']);
  });

  // Consecutive factor failures per user, across challenges (a new challenge does not reset them).
  await knex.schema.alterTable('users', (t) => {
    t.integer('factor_failures').notNullable().defaultTo(0);
    t.timestamp('factor_blocked_until', { useTz: true });
  });

  await knex.schema.createTable('idempotency_records', (t) => {
    t.text('tenant_id').notNullable();
    t.text('caller').notNullable(); // user id or client id
    t.text('ref').notNullable();
    t.text('request_hash').notNullable();
    t.text('state').notNullable(); // in_flight | done
    t.integer('response_status');
    t.jsonb('response_body');
    t.timestamp('locked_at', { useTz: true }).notNullable();
    t.timestamp('expires_at', { useTz: true }).notNullable();
    t.primary(['tenant_id', 'caller', 'ref']);
    t.index(['expires_at']);
  });

  // The `log` senders' outbox: what would have been sent, for development and tests.
  await knex.schema.createTable('outbox', (t) => {
    t.bigIncrements('id').primary();
    t.text('kind').notNullable(); // sms | push
    t.text('tenant_id');
    t.text('recipient');
    t.jsonb('payload').notNullable();
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
  });

  await knex.schema.createTable('audit_log', (t) => {
    t.bigIncrements('id').primary();
    t.timestamp('at', { useTz: true }).notNullable().defaultTo(knex.fn.now());
    t.text('tenant_id');
    t.text('actor'); // client id, user id, or "system"
    t.text('type').notNullable();
    t.text('target');
    t.jsonb('details').notNullable().defaultTo('{}');
    t.index(['tenant_id', 'at']);
    t.index(['type', 'at']);
  });
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTableIfExists('audit_log');
  await knex.schema.dropTableIfExists('outbox');
  await knex.schema.dropTableIfExists('idempotency_records');
  await knex.schema.alterTable('users', (t) => {
    t.dropColumn('factor_failures');
    t.dropColumn('factor_blocked_until');
  });
  await knex.schema.dropTableIfExists('challenges');
  await knex.schema.dropTableIfExists('factors');
}
