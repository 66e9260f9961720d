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
  /**
   * `fn` all or nothing: in a transaction of its own, or in a savepoint of the one open (a
   * request's, for an idempotency-ref). An error in it undoes its writes alone and leaves an outer
   * transaction usable, so the caller can still answer and record the refusal: nested or not, the
   * same writes are kept.
   */
  transaction<T>(fn: () => Promise<T>): Promise<T>;
  /** The same as `transaction`, named where the savepoint is the point. */
  savepoint<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * Runs `fn` once the outermost transaction has committed, outside it, before `transaction()`
   * returns — and `transaction()` throws what `fn` throws (the first of several). For work that
   * must not hold a connection or its locks, such as a call to another service, and that decides
   * the request's answer. Nothing runs if the transaction, or the savepoint `fn` was registered
   * in, rolls back. At once when no transaction is open.
   */
  afterCommit(fn: () => Promise<void>): Promise<void>;
  /** Whether the open transaction has work waiting for its commit (`afterCommit`). */
  hasAfterCommit(): boolean;
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
  // What runs after each transaction or savepoint commits: a savepoint's joins its parent's when it
  // is released, and is dropped when it rolls back.
  type Committed = { fns: Array<() => Promise<void>>; closed: boolean };
  const commits = new WeakMap<Knex.Transaction, Committed>();
  const run = async (f: () => Promise<void> | void) => {
    try {
      await f();
    } catch (err) {
      onDoneError(err);
    }
  };
  async function transaction<T>(fn: () => Promise<T>): Promise<T> {
    const outer = als.getStore();
    if (outer) {
      const committed: Committed = { fns: [], closed: false };
      const result = await outer.transaction((sp) => {
        const done = ends.get(outer);
        if (done) ends.set(sp, done);
        commits.set(sp, committed);
        return als.run(sp, fn);
      });
      committed.closed = true;
      const parent = commits.get(outer);
      if (parent && !parent.closed) parent.fns.push(...committed.fns);
      else for (const f of committed.fns) await als.run(undefined, f); // the outer one already ended (a straggling branch)
      return result;
    }
    const done: Done = { fns: [], closed: false };
    const committed: Committed = { fns: [], closed: false };
    let result: T;
    try {
      result = await knex.transaction((trx) => {
        ends.set(trx, done);
        commits.set(trx, committed);
        return als.run(trx, fn);
      });
    } finally {
      committed.closed = true;
      for (const f of done.fns) await run(f);
      done.closed = true;
    }
    let failed: { err: unknown } | undefined;
    for (const f of committed.fns) {
      try {
        await f();
      } catch (err) {
        failed ??= { err };
      }
    }
    if (failed) throw failed.err;
    return result;
  }
  return {
    db: () => als.getStore() ?? knex,
    asyncCommitDb: () => als.getStore() ?? asyncCommit ?? knex,
    transaction,
    savepoint: transaction,
    async afterCommit(fn) {
      const trx = als.getStore();
      const committed = trx && commits.get(trx);
      if (committed && !committed.closed) committed.fns.push(fn);
      else await als.run(undefined, fn);
    },
    hasAfterCommit() {
      const trx = als.getStore();
      const committed = trx && commits.get(trx);
      return !!committed && !committed.closed && committed.fns.length > 0;
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
