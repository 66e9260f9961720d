import { AsyncLocalStorage } from 'node:async_hooks';
import type { Knex } from 'knex';

/**
 * A request-scoped transaction without passing it around: repositories ask `db()` and get the
 * transaction of the current async context, or the pool. This is what lets an idempotency record
 * commit together with the effect it records. Every repository on a request path must use
 * `db()` — the embedded database has one connection, so a query that bypassed the open
 * transaction would wait for it forever.
 */
export interface TxContext {
  db(): Knex;
  asyncCommitDb(): Knex;
  transaction<T>(fn: () => Promise<T>): Promise<T>;
  /** Runs `fn` outside any current transaction (its writes commit on their own). */
  outside<T>(fn: () => Promise<T>): Promise<T>;
  readonly inTransaction: boolean;
}

/**
 * `asyncCommit`: where access-token inserts go when no transaction is open (see Database). Inside
 * a transaction they stay in it.
 */
export function createTxContext(knex: Knex, asyncCommit?: Knex): TxContext {
  const als = new AsyncLocalStorage<Knex.Transaction | undefined>();
  return {
    db: () => als.getStore() ?? knex,
    asyncCommitDb: () => als.getStore() ?? asyncCommit ?? knex,
    async transaction(fn) {
      if (als.getStore()) return fn();
      return knex.transaction((trx) => als.run(trx, fn));
    },
    outside(fn) {
      return als.run(undefined, fn);
    },
    get inTransaction() {
      return !!als.getStore();
    },
  };
}

/** Where a repository gets its connection: the current transaction or the pool. */
export interface DbSource {
  db(): Knex;
  /** For access-token inserts only: the current transaction, else an asynchronously committing pool (PostgreSQL) or db(). */
  asyncCommitDb?(): Knex;
}

/** A DbSource that is always the given knex (tests, CLI, start-up). */
export function fixedDb(knex: Knex): DbSource {
  return { db: () => knex };
}
