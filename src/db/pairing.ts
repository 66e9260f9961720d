import type { Knex } from 'knex';
import { announceStatement, preparedRunner, type PgConnection, type PreparedStatement } from './prepared';

interface PipelinedConnection extends PgConnection {
  connection?: { stream?: { cork?(): void; uncork?(): void } };
}

interface Rider {
  statement: PreparedStatement;
  values: unknown[];
  resolve(rows: unknown[]): void;
  reject(err: unknown): void;
  /** Cancels the rider's longest wait (it is being sent). */
  cancel(): void;
}

export interface PairsOptions {
  /**
   * The longest a start waits for a carrier before it goes alone, whatever else happens: longer
   * than a bcrypt computation at any usual cost, so under load it never fires.
   */
  maxWaitMs?: number;
  /** Runs `fn` after `ms` (tests give their own clock); returns a cancel. */
  schedule?: (fn: () => void, ms: number) => () => void;
}

const MAX_WAIT_MS = 2000;
const timer = (fn: () => void, ms: number) => {
  const t = setTimeout(fn, ms);
  t.unref();
  return () => clearTimeout(t);
};

/**
 * Statements that wait to share another statement's round trip: on PostgreSQL, a password login's
 * first statement (its attempt reserved: src/users/repository.ts, beginLogin) may wait, while other
 * logins wait for bcrypt before it anyway, for the next statement that stores a login's session
 * (src/oidc/adapter.ts) and go with it. Both are written to one connection at once, in pipeline
 * mode: two statements, each its own implicit transaction (its own Sync), so the server runs them
 * one after the other, commits each on its own, and the failure of one neither undoes nor stops the
 * other. One wake-up of the server's backend and of the event loop for the two: on cores that
 * bcrypt keeps busy, each round trip a login makes costs it a few points of the bcrypt ceiling
 * (bench/NOTES.md, the login floor).
 *
 * Nothing waits unless asked to (`start` with `wait`). The login service lets a start wait only
 * while work is queued for bcrypt and fewer starts wait than computations run (so each waits for
 * one computation's end at most), and sends waiting starts on their own when that queue empties
 * (all of them), when a login ends without a session or a hash ends (one each:
 * src/users/service.ts); and none waits longer than `maxWaitMs`, whatever happens.
 */
export class StatementPairs {
  private readonly riders: Rider[] = [];
  private readonly maxWaitMs: number;
  private readonly schedule: (fn: () => void, ms: number) => () => void;
  /** One statement alone, on a connection of the pool. */
  private readonly run: <R>(statement: PreparedStatement, values: unknown[]) => Promise<R[]>;

  constructor(
    /** The pool whose connections are in pipeline mode. */
    private readonly pool: Knex,
    /** Where each statement is announced (its 'query' event), as preparedRunner announces its own. */
    private readonly announce: Knex,
    opts: PairsOptions = {},
  ) {
    this.maxWaitMs = opts.maxWaitMs ?? MAX_WAIT_MS;
    this.schedule = opts.schedule ?? timer;
    this.run = preparedRunner(pool, announce)!;
  }

  /** Starts waiting for a carrier. */
  get waiting(): number {
    return this.riders.length;
  }

  /** `statement` at once, alone; or, with `wait`, in the round trip of the next `carry` (or alone at `flush`). */
  start<R>(statement: PreparedStatement, values: unknown[], wait: boolean): Promise<R[]> {
    if (!wait) return this.run<R>(statement, values);
    return new Promise<R[]>((resolve, reject) => {
      const rider: Rider = { statement, values, resolve: resolve as (rows: unknown[]) => void, reject, cancel: () => undefined };
      // Never longer than maxWaitMs: a path that neither carries nor sends it cannot hold a login.
      rider.cancel = this.schedule(() => {
        const i = this.riders.indexOf(rider);
        if (i < 0) return;
        this.riders.splice(i, 1);
        this.alone(rider);
      }, this.maxWaitMs);
      this.riders.push(rider);
    });
  }

  /**
   * `statement`, with the longest-waiting start (if any) written behind it on the same connection
   * in one write. Its own rows or error are returned; the rider's go to its caller, whatever
   * happened to this one.
   */
  async carry<R>(statement: PreparedStatement, values: unknown[]): Promise<R[]> {
    const rider = this.riders.shift();
    if (!rider) return this.run<R>(statement, values);
    rider.cancel();
    let connection: PipelinedConnection;
    try {
      connection = (await this.pool.client.acquireConnection()) as PipelinedConnection;
    } catch (err) {
      this.alone(rider);
      throw err;
    }
    let own: Promise<{ rows: unknown[] }>;
    let theirs: Promise<{ rows: unknown[] }>;
    try {
      announceStatement(this.announce, statement, values);
      announceStatement(this.announce, rider.statement, rider.values);
      const stream = connection.connection?.stream;
      stream?.cork?.();
      try {
        own = connection.query({ name: statement.name, text: statement.text, values });
        theirs = connection.query({ name: rider.statement.name, text: rider.statement.text, values: rider.values });
      } finally {
        stream?.uncork?.();
      }
    } catch (err) {
      // Nothing was sent (node-postgres reports a query's own errors through its promise): a
      // 'query' listener failed, say.
      await this.pool.client.releaseConnection(connection);
      this.alone(rider);
      throw err;
    }
    theirs.then((r) => rider.resolve(r.rows), rider.reject);
    // The connection goes back once both are answered; this caller waits for its own answer only.
    void Promise.allSettled([own, theirs]).then(() => this.pool.client.releaseConnection(connection)).catch(() => undefined);
    return (await own).rows as R[];
  }

  /** Every waiting start, each alone, at once. */
  flush(): void {
    for (const rider of this.riders.splice(0)) this.alone(rider);
  }

  /** The longest-waiting start alone, at once (a login ended without a session to carry it). */
  flushOne(): void {
    const rider = this.riders.shift();
    if (rider) this.alone(rider);
  }

  private alone(rider: Rider): void {
    rider.cancel();
    this.run(rider.statement, rider.values).then(rider.resolve, rider.reject);
  }
}

const pairs = new WeakMap<Knex, StatementPairs>();

/** Gives the pool `main` (PostgreSQL) its pairs, on `pipelined`, a pool of connections in pipeline mode. */
export function registerPairs(main: Knex, pipelined: Knex, opts?: PairsOptions): StatementPairs {
  const p = new StatementPairs(pipelined, main, opts);
  pairs.set(main, p);
  return p;
}

/** The pairs of `knex`'s pool, if it has them; never inside a transaction (its statements are its own). */
export function pairsOf(knex: Knex): StatementPairs | undefined {
  return knex.isTransaction ? undefined : pairs.get(knex);
}
