import type { Knex } from 'knex';

/**
 * When a client is disabled, or a tenant, the tokens issued before stop working for good: enabling
 * it again must not bring them back (a client disabled because its secret leaked would otherwise
 * revive the tokens taken with it). `tokens_not_before` holds a second (epoch seconds): that of the
 * latest disabling, or the one before the latest enabling (src/oidc/not-before.ts); a token issued
 * in or before it (`iat` ≤ it) is inactive. 0: never disabled.
 * A column rather than deleting the tokens: token rows are not indexed by client or tenant, and
 * adding such an index would cost every token insert.
 */
export async function up(knex: Knex): Promise<void> {
  for (const table of ['clients', 'tenants']) {
    await knex.schema.alterTable(table, (t) => {
      t.bigInteger('tokens_not_before').notNullable().defaultTo(0);
    });
  }
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ['clients', 'tenants']) await knex.schema.alterTable(table, (t) => t.dropColumn('tokens_not_before'));
}
