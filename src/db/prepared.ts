import type { Knex } from 'knex';

/** One SQL text under one name: PostgreSQL parses and plans it once per connection. */
export interface PreparedStatement {
  readonly name: string;
  readonly text: string;
}

export interface PgConnection {
  query(config: { name: string; text: string; values: unknown[] }): Promise<{ rows: unknown[] }>;
}

/** Announces a statement on `knex`'s 'query' event, as knex announces its own (for debugging and tests). */
export function announceStatement(knex: Knex, statement: PreparedStatement, values: unknown[]): void {
  if (knex.listenerCount('query') > 0) knex.emit('query', { sql: statement.text, bindings: values, name: statement.name });
}

/**
 * Runs a statement of the hot path (token lookups and inserts) on a knex pool's own connection,
 * as a named prepared statement of node-postgres: PostgreSQL skips parsing and planning after a
 * connection's first use, and the process skips knex's query building and binding rewrite:
 * together about a tenth of an introspection's CPU (README, Benchmark).
 *
 * Undefined when the pool is not node-postgres (the embedded database): callers keep their query
 * builder there. Never inside a transaction: the statement runs on a connection of the pool.
 * Like knex's own, each statement is announced on the instance's 'query' event (for debugging
 * and tests), with its name; or on `announceOn`'s (a side pool's statements, announced as its
 * main pool's).
 */
export function preparedRunner(knex: Knex, announceOn: Knex = knex): (<R>(statement: PreparedStatement, values: unknown[]) => Promise<R[]>) | undefined {
  if (knex.isTransaction || knex.client.config.client !== 'pg') return undefined;
  const client = knex.client;
  return async <R>(statement: PreparedStatement, values: unknown[]): Promise<R[]> => {
    announceStatement(announceOn, statement, values);
    const connection = (await client.acquireConnection()) as PgConnection;
    try {
      const result = await connection.query({ name: statement.name, text: statement.text, values });
      return result.rows as R[];
    } finally {
      await client.releaseConnection(connection);
    }
  };
}

/**
 * A statement written once for both databases: on PostgreSQL's pool, a named prepared statement
 * (preparedRunner); in a transaction or on the embedded database, the same text through
 * `knex.raw` (its `$n` placeholders become knex's `?` bindings, so the text has no `?` of its own).
 * For the hot path's multi-table statements, such as a login's counters, where one round trip
 * replaces several on either database.
 */
export function statementRunner(knex: Knex): <R>(statement: PreparedStatement, values: unknown[]) => Promise<R[]> {
  const prepared = preparedRunner(knex);
  if (prepared) return prepared;
  return async <R>(statement: PreparedStatement, values: unknown[]): Promise<R[]> => {
    const bindings: unknown[] = [];
    const sql = statement.text.replace(/\$(\d+)/g, (_, n: string) => {
      bindings.push(values[Number(n) - 1]);
      return '?';
    });
    const result = (await knex.raw(sql, bindings as Knex.RawBinding[])) as { rows: R[] };
    return result.rows;
  };
}
