import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import knexFactory, { type Knex } from 'knex';
import type { Config } from '../config';
import { registerPairs } from './pairing';
import { setBatchGather } from './batch';

export type Db = Knex;
export interface Database {
  knex: Knex;
  /**
   * PostgreSQL only: a small pool of its own for rate-limit counters. They are counted from inside
   * request transactions; on the main pool, N such requests holding N connections and each waiting
   * for one more would starve it.
   */
  counters?: Knex;
  /**
   * PostgreSQL only: a small pool whose sessions commit asynchronously (synchronous_commit=off),
   * for access-token inserts alone. A token issued in the last few hundred milliseconds before a
   * database crash may be lost — it then introspects inactive, which fails safe. Revocations,
   * consumptions, grants and refresh tokens never use it.
   */
  asyncCommit?: Knex;
  /**
   * PostgreSQL only: a small pool of connections in pipeline mode, for a password login's
   * statements (src/db/pairing.ts): under load, a login's first statement goes in the round trip
   * of another login's last.
   */
  logins?: Knex;
  kind: 'postgres' | 'embedded';
  close(): Promise<void>;
}

export class EmbeddedDatabaseBusyError extends Error {}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The embedded database is one PGlite instance in DATA_DIR: only one process may open it.
 * A lock file with the owner's pid makes a second opener (the CLI beside a running server)
 * fail with a clear message instead of corrupting the data.
 */
function lockDataDir(dir: string): () => void {
  mkdirSync(dir, { recursive: true, mode: 0o700 }); // an existing DATA_DIR keeps its mode
  const lock = path.join(dir, 'portcullis.lock');
  for (let attempt = 0; attempt < 2; attempt += 1) {
    try {
      writeFileSync(lock, String(process.pid), { flag: 'wx' });
      return () => {
        try {
          if (readFileSync(lock, 'utf8') === String(process.pid)) rmSync(lock);
        } catch {
          /* already gone */
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(readFileSync(lock, 'utf8'));
      if (owner && owner !== process.pid && processAlive(owner)) {
        throw new EmbeddedDatabaseBusyError(
          `the embedded database in ${dir} is in use by process ${owner} (a running Portcullis server?). ` +
            'Stop it first, or set DATABASE_URL to use PostgreSQL, which many processes can share.',
        );
      }
      rmSync(lock, { force: true }); // stale lock of a dead process
    }
  }
  throw new EmbeddedDatabaseBusyError(`could not lock ${dir}`);
}

export interface DbOptions {
  /** Embedded only: keep the database in memory (tests). */
  inMemory?: boolean;
  poolMax?: number;
  /** Where knex's own warnings go (one line each); stderr without one. */
  logger?: { warn(msg: string): void };
}

/**
 * knex's own warnings (a connection it could not open, say) as one line each — its default prints
 * the error's stack — and, when the caller has one, through its logger.
 */
function knexLog(logger?: DbOptions['logger']): Knex.Config['log'] {
  const line = (m: unknown) => (m instanceof Error ? m.message : String(m)).split('\n')[0]!;
  const warn = (m: unknown) => (logger ? logger.warn(line(m)) : process.stderr.write(`knex: ${line(m)}\n`));
  return { warn, error: warn, deprecate: () => undefined, debug: () => undefined };
}

export async function openDatabase(config: Config, opts: DbOptions = {}): Promise<Database> {
  if (config.databaseUrl) {
    const log = knexLog(opts.logger);
    // Few connections per process (DB_POOL_MAX, default 4): statements of concurrent requests share
    // one (src/db/batch.ts), bcrypt and webhooks never hold one, so a larger pool only adds
    // PostgreSQL backends competing for the same cores. 20 + 8 + 4 per worker, against 4 + 2 + 2,
    // gave lower maxima and worse tails at 70 % of them on two cores (bench/NOTES.md).
    const max = opts.poolMax ?? config.dbPoolMax;
    const side = Math.max(1, Math.ceil(max / 2));
    const knex = knexFactory({
      client: 'pg',
      connection: { connectionString: config.databaseUrl, application_name: 'portcullis' },
      pool: { min: 0, max, idleTimeoutMillis: 30000 },
      acquireConnectionTimeout: 10000,
      log,
    });
    const counters = knexFactory({
      client: 'pg',
      connection: { connectionString: config.databaseUrl, application_name: 'portcullis-counters' },
      pool: { min: 0, max: side, idleTimeoutMillis: 30000 },
      acquireConnectionTimeout: 10000,
      log,
    });
    const asyncCommit = knexFactory({
      client: 'pg',
      connection: { connectionString: config.databaseUrl, application_name: 'portcullis-tokens', options: '-c synchronous_commit=off' },
      pool: { min: 0, max: side, idleTimeoutMillis: 30000 },
      acquireConnectionTimeout: 10000,
      log,
    });
    const logins = knexFactory({
      client: 'pg',
      // node-postgres's pipeline mode: statements written without waiting for the ones before.
      connection: { connectionString: config.databaseUrl, application_name: 'portcullis-logins', pipeline: true } as Knex.PgConnectionConfig,
      pool: { min: 0, max: side, idleTimeoutMillis: 30000 },
      acquireConnectionTimeout: 10000,
      log,
    });
    registerPairs(knex, logins);
    for (const pool of [knex, asyncCommit]) setBatchGather(pool, config.batchWaitMs);
    return {
      knex,
      counters,
      asyncCommit,
      logins,
      kind: 'postgres',
      close: async () => {
        await Promise.all([knex.destroy(), counters.destroy(), asyncCommit.destroy(), logins.destroy()]);
      },
    };
  }
  // knex-pglite is loaded lazily: a PostgreSQL deployment never needs the WASM build.
  const { default: ClientPgLite } = await import('knex-pglite');
  const { PGlite } = await import('@electric-sql/pglite');
  let unlock = () => {};
  let pglite: InstanceType<typeof PGlite> | undefined;
  try {
    let pgdata: string | undefined;
    if (!opts.inMemory) {
      const dir = path.resolve(config.dataDir);
      unlock = lockDataDir(dir);
      pgdata = path.join(dir, 'pgdata');
      // The database's files (secret hashes, sealed keys, the dev outbox's codes) are the owner's
      // alone, as PostgreSQL requires of its data directory: PGlite writes them 0666 under the
      // umask, so the directory keeps everyone else out. An older, open one is closed too.
      mkdirSync(pgdata, { recursive: true, mode: 0o700 });
      chmodSync(pgdata, 0o700);
    }
    // PostgreSQL's default shared_buffers (128 MB) sits in the WebAssembly memory, which never gives
    // pages back: at 32 MB a server's peak RSS under load was about 130 MB lower (README, Configuration).
    const db = new PGlite({
      ...(pgdata ? { dataDir: pgdata } : {}),
      startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${config.embeddedSharedBuffersMb}MB`],
    });
    pglite = db;
    const knex = knexFactory({
      client: ClientPgLite as unknown as typeof knexFactory.Client,
      dialect: 'postgres',
      // knex-pglite takes a ready instance this way; knex's own types know only connection settings.
      connection: { pglite: db } as unknown as Knex.StaticConnectionConfig,
    });
    setBatchGather(knex, config.batchWaitMs);
    return {
      knex,
      kind: 'embedded',
      async close() {
        try {
          await knex.destroy(); // closes the instance if a query ever opened it
          if (!db.closed) await db.close();
        } finally {
          unlock(); // only once the database is shut: another process may open DATA_DIR then
        }
      },
    };
  } catch (err) {
    await pglite?.close().catch(() => undefined);
    unlock();
    throw err;
  }
}
