import type { Knex } from 'knex';
import type { PreparedStatement } from './prepared';

interface PipelinedConnection {
  query(config: { name: string; text: string; values: unknown[] }): Promise<{ rows: unknown[] }>;
  connection?: { stream?: { cork?(): void; uncork?(): void } };
}

interface Rider {
  statement: PreparedStatement;
  values: unknown[];
  resolve(rows: unknown[]): void;
  reject(err: unknown): void;
}

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
 * Nothing waits unless asked to (`start` with `wait`), and whoever asks must make sure it is
 * carried or flushed: the login service lets a start wait only while logins are queued for bcrypt,
 * and flushes every waiting start when that queue empties (src/users/service.ts).
 */
export class StatementPairs {
  private readonly riders: Rider[] = [];

  constructor(
    /** The pool whose connections are in pipeline mode. */
    private readonly pool: Knex,
    /** Where each statement is announced (its 'query' event), as preparedRunner announces its own. */
    private readonly announce: Knex,
  ) {}

  /** Starts waiting for a carrier. */
  get waiting(): number {
    return this.riders.length;
  }

  /** `statement` at once, alone; or, with `wait`, in the round trip of the next `carry` (or alone at `flush`). */
  start<R>(statement: PreparedStatement, values: unknown[], wait: boolean): Promise<R[]> {
    if (!wait) return this.run<R>(statement, values);
    return new Promise<R[]>((resolve, reject) => this.riders.push({ statement, values, resolve: resolve as (rows: unknown[]) => void, reject }));
  }

  /**
   * `statement`, with the longest-waiting start (if any) written behind it on the same connection
   * in one write. Its own rows or error are returned; the rider's go to its caller, whatever
   * happened to this one.
   */
  async carry<R>(statement: PreparedStatement, values: unknown[]): Promise<R[]> {
    const rider = this.riders.shift();
    if (!rider) return this.run<R>(statement, values);
    let connection: PipelinedConnection;
    try {
      connection = (await this.pool.client.acquireConnection()) as PipelinedConnection;
    } catch (err) {
      this.alone(rider);
      throw err;
    }
    try {
      this.emit(statement, values);
      this.emit(rider.statement, rider.values);
      const stream = connection.connection?.stream;
      stream?.cork?.();
      let own: Promise<{ rows: unknown[] }>;
      let theirs: Promise<{ rows: unknown[] }>;
      try {
        own = connection.query({ name: statement.name, text: statement.text, values });
        theirs = connection.query({ name: rider.statement.name, text: rider.statement.text, values: rider.values });
      } finally {
        stream?.uncork?.();
      }
      theirs.then((r) => rider.resolve(r.rows), rider.reject);
      const [mine] = await Promise.allSettled([own, theirs]);
      if (mine.status === 'rejected') throw mine.reason;
      return mine.value.rows as R[];
    } finally {
      await this.pool.client.releaseConnection(connection);
    }
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
    this.run(rider.statement, rider.values).then(rider.resolve, rider.reject);
  }

  private async run<R>(statement: PreparedStatement, values: unknown[]): Promise<R[]> {
    this.emit(statement, values);
    const connection = (await this.pool.client.acquireConnection()) as PipelinedConnection;
    try {
      return (await connection.query({ name: statement.name, text: statement.text, values })).rows as R[];
    } finally {
      await this.pool.client.releaseConnection(connection);
    }
  }

  private emit(statement: PreparedStatement, values: unknown[]): void {
    if (this.announce.listenerCount('query') > 0) this.announce.emit('query', { sql: statement.text, bindings: values, name: statement.name });
  }
}

const pairs = new WeakMap<Knex, StatementPairs>();

/** Gives the pool `main` (PostgreSQL) its pairs, on `pipelined`, a pool of connections in pipeline mode. */
export function registerPairs(main: Knex, pipelined: Knex): StatementPairs {
  const p = new StatementPairs(pipelined, main);
  pairs.set(main, p);
  return p;
}

/** The pairs of `knex`'s pool, if it has them; never inside a transaction (its statements are its own). */
export function pairsOf(knex: Knex): StatementPairs | undefined {
  return knex.isTransaction ? undefined : pairs.get(knex);
}
