/**
 * Graceful shutdown under load: SIGTERM while 20 clients keep asking for tokens, one connection per
 * request, and one more client has sent half a request and stalls. Every request sent before the
 * signal gets its token; readiness fails; new connections are refused; the process exits 0 within
 * SHUTDOWN_TIMEOUT_MS — the stalled connection cannot hold it up longer.
 *
 * The scenario runs once (beforeAll); each property is its own test, so one failing does not hide
 * the others.
 */
import net from 'node:net';
import {
  buildServer,
  cli,
  freshDatabase,
  pgTest,
  repliesAwaited,
  request,
  RequestFailed,
  serverEnv,
  SKIP_REASON,
  sleep,
  startServer,
  tempDir,
  tokenRequest,
  type Build,
  type Creds,
  type ServerProcess,
} from './helpers';

jest.setTimeout(60_000);

const SHUTDOWN_TIMEOUT_MS = 5000;
const EXIT_MARGIN_MS = 2000;
const LOOPS = 20;

interface Outcome {
  startedAt: number;
  /** When the request was completely written to the socket (undefined: never). */
  sentAt?: number;
  doneAt: number;
  status?: number;
  hasToken?: boolean;
  error?: string;
}

interface Scenario {
  sigtermAt: number;
  outcomes: Outcome[];
  readyz: Array<{ at: number; status?: number; error?: string }>;
  exit?: { code: number | null; signal: NodeJS.Signals | null; at: number };
  stalledClosedAt?: number;
  afterExit: string;
}

const tally = (list: Array<{ status?: number; error?: string }>) =>
  Object.entries(list.reduce<Record<string, number>>((acc, o) => ((acc[String(o.status ?? o.error)] = (acc[String(o.status ?? o.error)] ?? 0) + 1), acc), {}))
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ') || 'none';

async function runScenario(srv: ServerProcess, app: Creds): Promise<Scenario> {
  const port = srv.port;
  const outcomes: Outcome[] = [];
  let stopLoops = false;
  let exited = false;
  void srv.exited.then(() => (exited = true));

  const loops = Array.from({ length: LOOPS }, async () => {
    let refusedInARow = 0;
    // Each loop runs until its requests are refused (the listener is gone).
    while (!stopLoops && refusedInARow < 3) {
      const startedAt = Date.now();
      try {
        const r = await tokenRequest(port, app, 15_000);
        outcomes.push({ startedAt, sentAt: r.sentAt, doneAt: r.doneAt, status: r.status, hasToken: typeof r.json.access_token === 'string' });
        refusedInARow = 0;
      } catch (err) {
        const e = err as RequestFailed;
        outcomes.push({ startedAt, sentAt: e.sentAt, doneAt: Date.now(), error: e.code ?? String(err) });
        refusedInARow = e.code === 'ECONNREFUSED' ? refusedInARow + 1 : 0;
        if (e.code === 'ECONNREFUSED') await sleep(20);
      }
    }
  });

  // A client that sent half a request and stalls (headersTimeout is 10 s, beyond the drain).
  const stalled = net.connect(port, '127.0.0.1');
  stalled.on('error', () => undefined);
  let stalledClosedAt: number | undefined;
  stalled.on('close', () => (stalledClosedAt = Date.now()));
  await new Promise<void>((resolve) => stalled.once('connect', () => resolve()));
  stalled.write('POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n');

  let limit: NodeJS.Timeout | undefined;
  try {
    await sleep(2000);
    // SIGTERM while a request sent earlier still awaits its reply, so the drain is put to the test:
    // on a busy machine every loop may be between requests (connecting) at a given instant.
    for (const until = Date.now() + 2000; !repliesAwaited() && Date.now() < until; ) await new Promise((r) => setImmediate(r));
    const sigtermAt = Date.now();
    srv.child.kill('SIGTERM');

    // Readiness after SIGTERM, polled until it has said "not ready" three times (or the process left).
    const readyz: Scenario['readyz'] = [];
    while (!exited && Date.now() - sigtermAt < 3000 && readyz.filter((r) => r.status !== 200).length < 3) {
      const at = Date.now();
      try {
        readyz.push({ at, status: (await request(port, 'GET', '/readyz', { timeoutMs: 5000 })).status });
      } catch (err) {
        readyz.push({ at, error: (err as RequestFailed).code });
      }
    }

    const exit = await Promise.race([
      srv.exited,
      new Promise<undefined>((resolve) => (limit = setTimeout(() => resolve(undefined), SHUTDOWN_TIMEOUT_MS + EXIT_MARGIN_MS + 5000))),
    ]);
    stopLoops = true;
    await Promise.all(loops);
    const afterExit = await request(port, 'GET', '/healthz', { timeoutMs: 2000 }).then(
      (r) => `status ${r.status}`,
      (err: RequestFailed) => err.code,
    );
    return { sigtermAt, outcomes, readyz, exit, stalledClosedAt, afterExit };
  } finally {
    clearTimeout(limit);
    stopLoops = true;
    stalled.destroy();
    await Promise.all(loops);
  }
}

describe(`SIGTERM under load${SKIP_REASON}`, () => {
  let build: Build | undefined;
  let db: Awaited<ReturnType<typeof freshDatabase>> | undefined;
  let data: ReturnType<typeof tempDir> | undefined;
  let server: ServerProcess | undefined;
  let s: Scenario;

  beforeAll(async () => {
    if (pgTest !== test) return;
    build = buildServer();
    db = await freshDatabase(process.env.DATABASE_URL!);
    data = tempDir('portcullis-rel-sigterm-');
    const env = serverEnv(db.url, data.dir, { SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS), SHUTDOWN_GRACE_MS: '1000' });
    await cli(build, env, ['tenant', 'create', 'bank-a']);
    const app = await cli<Creds>(build, env, ['client', 'create', '--tenant', 'bank-a', '--grant', 'client_credentials']);
    server = await startServer(build, env);
    for (let i = 0; i < 5; i += 1) expect((await tokenRequest(server.port, app)).status).toBe(200); // warm

    s = await runScenario(server, app);
    const { sigtermAt, outcomes } = s;
    const before = outcomes.filter((o) => o.sentAt !== undefined && o.sentAt < sigtermAt);
    const inFlight = before.filter((o) => o.doneAt >= sigtermAt);
    const later = outcomes.filter((o) => o.startedAt > sigtermAt);
    const lastOk = Math.max(...outcomes.filter((o) => o.status === 200).map((o) => o.doneAt));
    console.log(
      `[sigterm] ${outcomes.length} token requests; sent before SIGTERM ${before.length} (${tally(before)}); of them in flight at SIGTERM ${inFlight.length} (${tally(inFlight)})\n` +
        `  started after SIGTERM ${later.length}: ${tally(later)}\n` +
        `  readyz after SIGTERM: ${s.readyz.map((r) => `+${r.at - sigtermAt}ms ${r.status ?? r.error}`).join(', ')}\n` +
        `  last 200 at +${lastOk - sigtermAt} ms; stalled connection closed at ${s.stalledClosedAt ? `+${s.stalledClosedAt - sigtermAt} ms` : 'never'}; ` +
        `exit ${s.exit ? `code ${s.exit.code} signal ${s.exit.signal} at +${s.exit.at - sigtermAt} ms` : 'NOT within the limit'}; afterwards: ${s.afterExit}`,
    );
  }, 60_000);

  afterAll(async () => {
    await server?.stop(2000);
    await db?.drop();
    data?.cleanup();
    build?.cleanup();
  }, 30_000);

  pgTest('every request sent before SIGTERM gets its token: zero failed in flight', () => {
    const before = s.outcomes.filter((o) => o.sentAt !== undefined && o.sentAt < s.sigtermAt);
    expect(before.length).toBeGreaterThan(LOOPS);
    expect(before.filter((o) => o.doneAt >= s.sigtermAt).length).toBeGreaterThan(0); // some were in flight
    const failed = before.filter((o) => !(o.status === 200 && o.hasToken)).map((o) => `${o.status ?? o.error} (sent ${s.sigtermAt - o.sentAt!} ms before SIGTERM)`);
    expect(failed).toEqual([]);
  });

  pgTest('after SIGTERM /readyz stops saying ready: 503 or connection refused', () => {
    const firstNotReady = s.readyz.findIndex((r) => r.status !== 200);
    expect(firstNotReady).toBeGreaterThanOrEqual(0);
    expect(s.readyz[firstNotReady]!.at - s.sigtermAt).toBeLessThan(1000);
    const bad = s.readyz.slice(firstNotReady).filter((r) => !(r.status === 503 || r.error === 'ECONNREFUSED'));
    expect(bad.map((r) => `${r.status ?? r.error} at +${r.at - s.sigtermAt} ms`)).toEqual([]);
  });

  pgTest('once the drain has begun new connections are refused, and nothing is answered with an error', () => {
    const later = s.outcomes.filter((o) => o.startedAt > s.sigtermAt);
    // A request sent after SIGTERM gets its token (accepted before the listener closed) or is
    // refused. (A reset is tolerated here only: one that reaches the kernel's accept queue as the
    // listener closes is reset by any server.)
    expect(later.filter((o) => !((o.status === 200 && o.hasToken) || o.error === 'ECONNREFUSED' || o.error === 'ECONNRESET')).map((o) => o.status ?? o.error)).toEqual([]);
    // Every load loop ended on refusals, and after the exit the port refuses too.
    expect(later.filter((o) => o.error === 'ECONNREFUSED').length).toBeGreaterThanOrEqual(LOOPS);
    expect(s.afterExit).toBe('ECONNREFUSED');
  });

  pgTest(`the process exits 0 within SHUTDOWN_TIMEOUT_MS (${SHUTDOWN_TIMEOUT_MS} ms) + ${EXIT_MARGIN_MS} ms, a stalled client notwithstanding`, () => {
    expect(s.exit).toBeDefined();
    expect({ code: s.exit!.code, signal: s.exit!.signal }).toEqual({ code: 0, signal: null });
    expect(s.exit!.at - s.sigtermAt).toBeLessThan(SHUTDOWN_TIMEOUT_MS + EXIT_MARGIN_MS);
  });
});
