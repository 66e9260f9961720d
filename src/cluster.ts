import cluster from 'node:cluster';
import type { Config } from './config';
import { createLogger } from './log';
import { openDatabase } from './db/knex';
import { migrateLatest } from './db/migrate';
import type * as ServerModule from './server';

/**
 * The command-line flags of a worker: the primary's own, plus V8 heap sizes unless the operator
 * already chose them (on the command line, or in NODE_OPTIONS where Node allows the flag):
 *
 * - An old-space limit of `limitMb`. Why a limit at all: V8 sizes its heap-growing factor from the
 *   limit. With the default limit on a large machine (about 4 GB) it lets the old space grow to
 *   about four times what is live before it collects, and a worker whose live heap is 30 MB peaks
 *   at 220–250 MB of RSS under load; with a limit under 2 GB the factor drops below two and the
 *   same worker peaks near 150 MB (bench/NOTES.md). The limit is also a ceiling: a worker that
 *   leaks past it dies and is replaced.
 * - Young-generation semi-spaces of at least `minSemiSpaceMb`. V8 shrinks them to 1 MB when
 *   allocation slows (its memory reducer, after a few quiet seconds), and grows them back only
 *   once enough survives its scavenges: a worker then serving a modest rate (logins at bcrypt
 *   cost 10, each in flight for a second or more) scavenged twice as often, copying the logins
 *   in flight each time, and its event loop spent up to about 30 % more CPU per login
 *   (bench/NOTES.md, 2026-12-06 evening). V8 caps the minimum at its maximum semi-space, 16 MB
 *   on Node 20 with 4 GB of memory or more (less on smaller hosts): a busy worker's semi-spaces
 *   reach it anyway, so the peak RSS does not change, while an idle worker keeps them committed
 *   (16-32 MB instead of 1-2).
 */
export function workerExecArgv(
  execArgv: readonly string[],
  nodeOptions: string | undefined,
  heap: { limitMb: number; minSemiSpaceMb: number },
): string[] {
  const given = [...execArgv, ...(nodeOptions ?? '').split(/\s+/)];
  const chose = (flag: RegExp) => given.some((a) => flag.test(a));
  const out = [...execArgv];
  if (heap.limitMb > 0 && !chose(/^--max[-_](old[-_]space|heap)[-_]size(=|$)/)) out.push(`--max-old-space-size=${heap.limitMb}`);
  if (heap.minSemiSpaceMb > 0 && !chose(/^--min[-_]semi[-_]space[-_]size(=|$)/)) out.push(`--min-semi-space-size=${heap.minSemiSpaceMb}`);
  return out;
}

/** A worker's message to the primary once it listens. */
const READY = 'portcullis:worker-ready';

/**
 * What the primary does when a worker exits. While the first workers start, one that dies before
 * it listens (port in use, database unreachable: its error is above) would only fail again:
 * stop the server. Once they all have, the service is up: a worker that dies is replaced, and a
 * replacement that dies before it listens (the database restarting, say) is tried again after a
 * delay that doubles up to 30 s, never taking the healthy workers down with it.
 */
export class WorkerSupervisor {
  private readonly ready = new Set<number>();
  private started = false;
  private failedInARow = 0;

  constructor(private readonly workers: number) {}

  listening(id: number): void {
    this.ready.add(id);
    this.failedInARow = 0;
    if (this.ready.size >= this.workers) this.started = true;
  }

  exited(id: number): { action: 'stop' } | { action: 'replace'; afterMs: number } {
    const wasReady = this.ready.delete(id);
    if (wasReady) return { action: 'replace', afterMs: 0 };
    if (!this.started) return { action: 'stop' };
    this.failedInARow += 1;
    return { action: 'replace', afterMs: Math.min(30_000, 250 * 2 ** (this.failedInARow - 1)) };
  }
}

/**
 * The server's modules (oidc-provider, koa, every route and service), loaded only by a process that
 * serves. A cluster's primary never does: it only migrates and forks. Loaded there, they made its
 * heap about 24 MB, and V8's memory reducer marks an idle heap again about 8 s and 17 s after
 * start. Its concurrent marking took both cores from the workers for about 50 ms, the worst window
 * of a paced run (bench/NOTES.md).
 */
function loadServer(): typeof ServerModule {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require('./server') as typeof ServerModule;
}

/**
 * `serve`: one process, or with WEB_CONCURRENCY > 1 (PostgreSQL only) a primary that migrates
 * once, forks the workers — they share the port — replaces a worker that dies, and on SIGTERM
 * drains them all. Workers keep nothing another needs: all state is in the database.
 */
export async function serve(config: Config): Promise<void> {
  const logger = createLogger(config.logLevel);
  if (cluster.isWorker) {
    await loadServer().startServer(config, { installSignalHandlers: true, seedDemo: false, app: { migrate: false } });
    process.send?.(READY);
    return;
  }
  if (config.webConcurrency <= 1 || !config.databaseUrl) {
    if (config.webConcurrency > 1) logger.warn('WEB_CONCURRENCY ignored: the embedded database serves one process; set DATABASE_URL');
    await loadServer().startServer(config, { installSignalHandlers: true });
    return;
  }
  const db = await openDatabase(config, { poolMax: 1, logger: { warn: (m) => logger.warn(m) } });
  try {
    await migrateLatest(db.knex);
  } finally {
    await db.close();
  }
  let stopping = false;
  const execArgv = workerExecArgv(process.execArgv, process.env.NODE_OPTIONS, {
    limitMb: config.workerHeapLimitMb,
    minSemiSpaceMb: config.workerMinSemiSpaceMb,
  });
  cluster.setupPrimary({ execArgv });
  const supervisor = new WorkerSupervisor(config.webConcurrency);
  const fork = () => {
    const worker = cluster.fork();
    worker.on('message', (msg: unknown) => {
      if (msg === READY) supervisor.listening(worker.id);
    });
  };
  for (let i = 0; i < config.webConcurrency; i += 1) fork();
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    const next = supervisor.exited(worker.id);
    if (next.action === 'stop') {
      logger.error({ pid: worker.process.pid, exitCode: code, signal }, 'a worker failed to start; stopping');
      stop('SIGTERM', 1);
      return;
    }
    logger.error({ pid: worker.process.pid, exitCode: code, signal, restartInMs: next.afterMs }, 'worker died; starting another');
    setTimeout(() => {
      if (!stopping) fork();
    }, next.afterMs);
  });
  logger.info({ workers: config.webConcurrency, execArgv }, 'primary started');
  function stop(signal: NodeJS.Signals, exitCode = 0) {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping workers');
    const workers = Object.values(cluster.workers ?? {}).filter((w) => w && !w.isDead());
    let left = workers.length;
    if (left === 0) process.exit(exitCode);
    for (const w of workers) {
      w?.once('exit', () => {
        left -= 1;
        if (left === 0) process.exit(exitCode);
      });
      w?.process.kill('SIGTERM');
    }
    setTimeout(() => process.exit(1), config.shutdownTimeoutMs + 5000).unref();
  }
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}
