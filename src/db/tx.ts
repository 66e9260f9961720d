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
  /**
   * `fn` in a savepoint of the open transaction (in a transaction of its own when none is open):
   * an error in it (a unique violation, say) undoes its writes alone and leaves the outer
   * transaction usable, so the caller can still answer and record the refusal.
   */
  savepoint<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Runs `fn` once the current outermost transaction has ended, committed or rolled back, before
   * `transaction()` returns or throws; at once when none is open. For what must follow the
   * commit: evicting a cache entry, reloading keys. An error of `fn` is reported to `onDoneError`
   * and never replaces the transaction's own outcome.
   */
  whenDone(fn: () => Promise<void> | void): Promise<void>;
  /** Runs `fn` outside any current transaction (its writes commit on their own). */
  outside<T>(fn: () => Promise<T>): Promise<T>;
  readonly inTransaction: boolean;
}

/**
 * `asyncCommit`: where access-token inserts go when no transaction is open (see Database). Inside
 * a transaction they stay in it.
 */
export function createTxContext(knex: Knex, asyncCommit?: Knex, onDoneError: (err: unknown) => void = () => undefined): TxContext {
  const als = new AsyncLocalStorage<Knex.Transaction | undefined>();
  // What runs when each outermost transaction ends; its savepoints share their outer list. Once
  // it has ended (`closed`), a late registration runs at once instead of being lost.
  type Done = { fns: Array<() => Promise<void> | void>; closed: boolean };
  const ends = new WeakMap<Knex.Transaction, Done>();
  const run = async (f: () => Promise<void> | void) => {
    try {
      await f();
    } catch (err) {
      onDoneError(err);
    }
  };
  async function transaction<T>(fn: () => Promise<T>): Promise<T> {
    if (als.getStore()) return fn();
    const done: Done = { fns: [], closed: false };
    try {
      return await knex.transaction((trx) => {
        ends.set(trx, done);
        return als.run(trx, fn);
      });
    } finally {
      for (const f of done.fns) await run(f);
      done.closed = true;
    }
  }
  return {
    db: () => als.getStore() ?? knex,
    asyncCommitDb: () => als.getStore() ?? asyncCommit ?? knex,
    transaction,
    savepoint(fn) {
      const outer = als.getStore();
      if (!outer) return transaction(fn);
      return outer.transaction((sp) => {
        const done = ends.get(outer);
        if (done) ends.set(sp, done);
        return als.run(sp, fn);
      });
    },
    async whenDone(fn) {
      const trx = als.getStore();
      const done = trx && ends.get(trx);
      if (done && !done.closed) done.fns.push(fn);
      else await run(fn);
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
  /** TxContext.whenDone: what must wait for the current transaction to end. */
  whenDone?(fn: () => Promise<void> | void): Promise<void>;
  /** For access-token inserts only: the current transaction, else an asynchronously committing pool (PostgreSQL) or db(). */
  asyncCommitDb?(): Knex;
}

/** A DbSource that is always the given knex (tests, CLI, start-up). */
export function fixedDb(knex: Knex): DbSource {
  return { db: () => knex };
}
