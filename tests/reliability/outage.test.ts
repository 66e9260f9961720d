/**
 * A database outage under load: the server runs against a PostgreSQL cluster of this test's own,
 * which is stopped (`pg_ctl stop -m immediate`, a crash) and started again while requests keep
 * coming. During the outage every OAuth answer must fail closed and say so — 503, Retry-After,
 * `temporarily_unavailable` — never a token, never `active: true`, never a pretended revocation;
 * afterwards the same process must recover on its own, lose nothing, and hold no more
 * connections than its pools allow.
 */
import { randomBytes } from 'node:crypto';
import { Client as PgClient } from 'pg';
import {
  buildServer,
  cli,
  countServerConnections,
  havePgBinaries,
  introspect,
  issueToken,
  passwordLogin,
  pgTest,
  PgCluster,
  request,
  RequestFailed,
  revoke,
  serverEnv,
  SKIP_REASON,
  sleep,
  startServer,
  tempDir,
  tokenRequest,
  type Build,
  type Creds,
  type Reply,
  type ServerProcess,
} from './helpers';

jest.setTimeout(60_000);

const POOL_MAX = 20; // src/db/knex.ts: main pool
const COUNTERS_MAX = 4; // src/db/knex.ts: counters pool
const TOKENS_MAX = 8; // src/db/knex.ts: asynchronously committing pool for access-token inserts
const LISTENER = 1; // src/cache/lookups.ts: the change listener's connection
const LOOPS = 4;

type Op = 'token' | 'token-jwt' | 'introspect' | 'introspect-jwt' | 'revoke' | 'readyz';
const OPS: Op[] = ['token', 'token-jwt', 'introspect', 'introspect-jwt', 'revoke', 'readyz'];

interface Outcome {
  op: Op;
  startedAt: number;
  doneAt: number;
  status?: number;
  retryAfter?: string;
  json?: Record<string, unknown>;
  error?: string;
}

const runIf = pgTest === test && havePgBinaries ? test : test.skip;
const reason = SKIP_REASON || (havePgBinaries ? '' : ' [skipped: no PostgreSQL 15 server binaries]');

describe(`database outage under load${reason}`, () => {
  let build: Build | undefined;
  let cluster: PgCluster | undefined;
  let data: ReturnType<typeof tempDir> | undefined;
  let server: ServerProcess | undefined;
  let app: Creds; // opaque tokens
  let jwtApp: Creds; // RFC 9068 JWT access tokens
  let rs: Creds; // resource server: may introspect
  let loginApp: Creds & { api_key: string }; // the password grant, for the user below; registers users
  const USER = { username: 'olivia', password: 'an outage-proof passphrase' };

  beforeAll(async () => {
    if (runIf !== test) return;
    build = buildServer();
    cluster = await PgCluster.create();
    cluster.start();
    data = tempDir('portcullis-rel-outage-');
    const env = serverEnv(cluster.url, data.dir);
    await cli(build, env, ['tenant', 'create', 'bank-a']);
    app = await cli(build, env, ['client', 'create', '--tenant', 'bank-a', '--grant', 'client_credentials']);
    jwtApp = await cli(build, env, ['client', 'create', '--tenant', 'bank-a', '--grant', 'client_credentials', '--token-format', 'jwt']);
    rs = await cli(build, env, ['client', 'create', '--tenant', 'bank-a', '--introspection']);
    loginApp = await cli(build, env, ['client', 'create', '--tenant', 'bank-a', '--grant', 'password']);
    await cli(build, env, ['user', 'create', '--tenant', 'bank-a', '--username', USER.username, '--password', USER.password]);
    server = await startServer(build, env);
  }, 90_000);

  afterAll(async () => {
    const t0 = Date.now();
    await server?.stop(5000);
    console.log(`[outage] server stop took ${Date.now() - t0} ms: ${JSON.stringify(await server?.exited)}`);
    cluster?.destroy();
    data?.cleanup();
    build?.cleanup();
  }, 60_000);

  runIf('stop the database under load: 503 + Retry-After, nothing pretended; start it: recovers in place, nothing lost, no leaked connections', async () => {
    const srv = server!;
    const port = srv.port;

    // Issued before the outage: must still be active after it.
    const survivor = await issueToken(port, app);
    const jwtSurvivor = await issueToken(port, jwtApp);
    expect((await introspect(port, rs, survivor)).json.active).toBe(true);
    expect((await introspect(port, rs, jwtSurvivor)).json.active).toBe(true);
    // Tokens the load revokes, one per revocation request.
    const toRevoke: string[] = [];
    for (let i = 0; i < 40; i += 1) toRevoke.push(await issueToken(port, app));
    const revoked: string[] = []; // revocations answered 200

    const outcomes: Outcome[] = [];
    const perform = async (op: Op): Promise<Outcome> => {
      const startedAt = Date.now();
      let token: string | undefined;
      try {
        let r: Reply;
        switch (op) {
          case 'token':
            r = await tokenRequest(port, app, 15_000);
            break;
          case 'token-jwt':
            r = await tokenRequest(port, jwtApp, 15_000);
            break;
          case 'introspect':
            r = await introspect(port, rs, survivor, 15_000);
            break;
          case 'introspect-jwt':
            r = await introspect(port, rs, jwtSurvivor, 15_000);
            break;
          case 'revoke':
            // When used up: a token that was never issued. (Not a variant of the survivor's string: a
            // 43-character token ends in any given letter one time in 64, and then the "unknown"
            // token would be the survivor itself, revoked by this very load.)
            token = toRevoke.shift() ?? `never-issued-${randomBytes(24).toString('base64url')}`;
            r = await revoke(port, app, token, 15_000);
            if (r.status === 200) revoked.push(token);
            else toRevoke.push(token);
            break;
          case 'readyz':
            r = await request(port, 'GET', '/readyz', { timeoutMs: 15_000 });
            break;
        }
        return { op, startedAt, doneAt: Date.now(), status: r.status, retryAfter: r.headers['retry-after'] as string | undefined, json: r.json };
      } catch (err) {
        if (token) toRevoke.push(token);
        return { op, startedAt, doneAt: Date.now(), error: err instanceof RequestFailed ? err.code : String(err) };
      }
    };

    let stop = false;
    const loops = Array.from({ length: LOOPS }, async (_, i) => {
      for (let n = i; !stop; n += 1) {
        outcomes.push(await perform(OPS[n % OPS.length]!));
        await sleep(5);
      }
    });

    try {
      await sleep(1500); // the database is up
      const beforeStop = Date.now();
      cluster!.stopImmediate();
      const stoppedAt = Date.now();
      await sleep(3000); // the database is down
      // Besides the load, one of each, answered while the database is certainly down.
      const probes = await Promise.all(OPS.map((op) => perform(op)));
      const restartAt = Date.now();
      cluster!.start();
      const startedAt = Date.now();

      // Recovery: each kind of request succeeds again, without restarting the server.
      const recovered: Partial<Record<Op, number>> = {};
      const succeeded = (o: Outcome) =>
        o.status === 200 && (o.op === 'token' || o.op === 'token-jwt' ? typeof o.json?.access_token === 'string' : o.op.startsWith('introspect') ? o.json?.active === true : true);
      const deadline = startedAt + 10_000;
      while (Date.now() < deadline && OPS.some((op) => recovered[op] === undefined)) {
        for (const o of outcomes) {
          if (o.startedAt >= startedAt && succeeded(o) && recovered[o.op] === undefined) recovered[o.op] = o.doneAt - startedAt;
        }
        await sleep(50);
      }
      await sleep(500);
      stop = true;
      await Promise.all(loops);

      const during = outcomes.filter((o) => o.startedAt >= stoppedAt && o.doneAt <= restartAt).concat(probes);
      const spanning = outcomes.filter((o) => o.startedAt < stoppedAt && o.doneAt > beforeStop);
      const after = outcomes.filter((o) => o.doneAt > restartAt);
      const count = (list: Outcome[], op: Op) => list.filter((o) => o.op === op).length;
      const summary = (list: Outcome[]) =>
        Object.entries(
          list.reduce<Record<string, number>>((acc, o) => {
            const k = `${o.op} ${o.status ?? o.error}${o.json?.error ? ` ${String(o.json.error)}` : ''}${o.json?.active !== undefined ? ` active=${String(o.json.active)}` : ''}`;
            acc[k] = (acc[k] ?? 0) + 1;
            return acc;
          }, {}),
        )
          .map(([k, v]) => `${k}: ${v}`)
          .join(', ');
      const durations = during.map((o) => o.doneAt - o.startedAt).sort((a, b) => a - b);
      console.log(
        `[outage] ${outcomes.length} requests; pg stop took ${stoppedAt - beforeStop} ms, pg start ${startedAt - restartAt} ms\n` +
          `  during the outage (${during.length}): ${summary(during)}\n` +
          `  answer time during the outage: median ${durations[Math.floor(durations.length / 2)]} ms, max ${durations[durations.length - 1]} ms\n` +
          `  spanning the stop (${spanning.length}): ${summary(spanning)}\n` +
          `  after the restart began (${after.length}): ${summary(after)}\n` +
          `  recovery after pg_ctl start returned (ms): ${JSON.stringify(recovered)}\n` +
          `  server log lines at level error or above: ${srv.output().split('\n').filter((l) => /"level":(50|60)/.test(l)).length}`,
      );

      // The server process lived through it.
      expect(srv.child.exitCode).toBeNull();
      expect(srv.child.signalCode).toBeNull();

      // At no time a 500 or a dropped connection: before, during, across and after the outage, every
      // answer is a real one (200) or an honest 503.
      const odd = outcomes.concat(probes).filter((o) => o.error !== undefined || (o.status !== 200 && o.status !== 503));
      expect(odd.map((o) => ({ op: o.op, status: o.status, error: o.error, body: o.json, at: o.startedAt - stoppedAt }))).toEqual([]);

      // Never anything pretended, whenever the request was made.
      const lies = outcomes.concat(probes).filter(
        (o) =>
          o.doneAt <= restartAt &&
          o.startedAt >= stoppedAt &&
          ((o.op.startsWith('token') && (o.status === 200 || o.json?.access_token !== undefined)) ||
            (o.op.startsWith('introspect') && (o.status === 200 || o.json?.active === true)) ||
            (o.op === 'revoke' && o.status === 200)),
      );
      expect(lies).toEqual([]);

      // Every OAuth request answered during the outage: 503, Retry-After, temporarily_unavailable.
      for (const op of ['token', 'token-jwt', 'introspect', 'introspect-jwt', 'revoke'] as Op[]) {
        expect(count(during, op)).toBeGreaterThan(0);
        const wrong = during
          .filter((o) => o.op === op)
          .filter((o) => !(o.status === 503 && o.retryAfter !== undefined && /^\d+$/.test(o.retryAfter) && o.json?.error === 'temporarily_unavailable'))
          .map((o) => ({ op: o.op, status: o.status, error: o.error, retryAfter: o.retryAfter, body: o.json }));
        expect(wrong).toEqual([]);
      }
      // Readiness says so too.
      const readyz = during.filter((o) => o.op === 'readyz');
      expect(readyz.length).toBeGreaterThan(0);
      expect(readyz.filter((o) => o.status !== 503)).toEqual([]);
      // Nothing hung on the dead database for long.
      expect(durations[durations.length - 1]).toBeLessThan(12_000);

      // Recovered within 5 s of the database accepting connections again.
      for (const op of OPS) {
        expect({ op, recovered: recovered[op] !== undefined }).toEqual({ op, recovered: true });
        expect(recovered[op]).toBeLessThan(5000);
      }

      // Nothing lost: tokens issued before the outage are still active; revoked ones are not.
      expect((await introspect(port, rs, survivor)).json).toMatchObject({ active: true, client_id: app.client_id });
      expect((await introspect(port, rs, jwtSurvivor)).json).toMatchObject({ active: true, client_id: jwtApp.client_id });
      expect(revoked.length).toBeGreaterThan(0);
      for (const t of revoked.slice(0, 5)) expect((await introspect(port, rs, t)).json).toEqual({ active: false });
      // And new ones work end to end.
      const fresh = await issueToken(port, app);
      expect((await introspect(port, rs, fresh)).json.active).toBe(true);

      // No leaked connections: at or below the pool maxima, now and a little later.
      const samples: Array<Array<{ application_name: string; n: number }>> = [];
      for (let i = 0; i < 4; i += 1) {
        samples.push(await countServerConnections(cluster!.url));
        await sleep(500);
      }
      console.log(`[outage] connections after recovery: ${samples.map((s) => JSON.stringify(s)).join(' ')}`);
      for (const s of samples) {
        const main = s.find((r) => r.application_name === 'portcullis')?.n ?? 0;
        const counters = s.find((r) => r.application_name === 'portcullis-counters')?.n ?? 0;
        const tokens = s.find((r) => r.application_name === 'portcullis-tokens')?.n ?? 0;
        const listener = s.find((r) => r.application_name === 'portcullis-listener')?.n ?? 0;
        expect(main).toBeLessThanOrEqual(POOL_MAX);
        expect(counters).toBeLessThanOrEqual(COUNTERS_MAX);
        expect(tokens).toBeLessThanOrEqual(TOKENS_MAX);
        expect(listener).toBeLessThanOrEqual(LISTENER);
        expect(s.reduce((n, r) => n + r.n, 0)).toBeLessThanOrEqual(POOL_MAX + COUNTERS_MAX + TOKENS_MAX + LISTENER);
      }
    } finally {
      stop = true;
      await Promise.all(loops);
      if (!cluster!.isRunning) cluster!.start();
    }
  });

  /**
   * The window the load above hits only by chance (a request that passed client authentication
   * when the database went away), made deterministic: the test holds a lock on `tenants`, so each
   * request waits in its tenant lookup — after the client was authenticated and the token found —
   * and then the database goes away under it.
   */
  runIf('the database vanishing in the middle of a request is a 503 too, for every kind of request', async () => {
    const srv = server!;
    const port = srv.port;
    if (!cluster!.isRunning) cluster!.start();
    const opaque = await issueToken(port, app);
    const jwt = await issueToken(port, jwtApp);
    expect((await introspect(port, rs, jwt)).json.active).toBe(true);
    // The login client is cached now, so the login below gets as far as its tenant.
    expect((await passwordLogin(port, loginApp, USER.username, USER.password)).status).toBe(200);

    const locker = new PgClient({ connectionString: cluster!.url, application_name: 'reliability-locker' });
    locker.on('error', () => undefined); // it dies with the database
    await locker.connect();
    let answers: Array<{ op: string; status: number; retryAfter?: string; body: Record<string, unknown> }>;
    try {
      // The server caches tenants (src/cache/lookups.ts): announce a change of this one, as an
      // operator's write would, so that the requests below read it and wait on the lock.
      await locker.query('select pg_notify($1, $2)', ['portcullis_changes', 'tenant:bank-a']);
      await sleep(300);
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE');
      const pending = [
        ['introspect opaque', () => introspect(port, rs, opaque, 20_000)],
        ['introspect jwt', () => introspect(port, rs, jwt, 20_000)],
        ['token opaque', () => tokenRequest(port, app, 20_000)],
        ['token jwt', () => tokenRequest(port, jwtApp, 20_000)],
        ['password login', () => passwordLogin(port, loginApp, USER.username, USER.password, 20_000)],
      ].map(([op, send]) => (send as () => Promise<Reply>)().then((r) => ({ op: op as string, status: r.status, retryAfter: r.headers['retry-after'] as string | undefined, body: r.json })));
      // Wait until the requests wait on the lock (they got past client authentication). A request
      // still queued for a pool connection is in flight all the same, so at least one waiting and
      // a short while for the rest is enough; each must still be answered 503 below.
      const deadline = Date.now() + 10_000;
      let waitingNow = 0;
      for (;;) {
        const waiting = await locker.query<{ n: string }>(
          "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'portcullis' AND wait_event_type = 'Lock'",
        );
        waitingNow = Number(waiting.rows[0]!.n);
        if (waitingNow >= pending.length || (waitingNow >= 1 && Date.now() > deadline - 7_000)) break;
        if (Date.now() > deadline) throw new Error(`no request reached the tenant lookup: ${waitingNow} waiting`);
        await sleep(50);
      }
      console.log(`[outage] mid-request: ${waitingNow} of ${pending.length} requests waiting on the database when it stopped`);
      cluster!.stopImmediate();
      answers = await Promise.all(pending);
    } finally {
      await locker.end().catch(() => undefined);
      if (!cluster!.isRunning) cluster!.start();
    }
    console.log(`[outage] database gone mid-request: ${answers.map((a) => `${a.op} → ${a.status} ${JSON.stringify(a.body)}`).join('; ')}`);

    // The JWT was valid all along: once the database is back it introspects active again.
    let after: Reply | undefined;
    for (let i = 0; i < 50 && after?.status !== 200; i += 1) {
      after = await introspect(port, rs, jwt).catch(() => undefined);
      if (after?.status !== 200) await sleep(100);
    }
    expect(after?.json.active).toBe(true);

    for (const a of answers) {
      expect({ op: a.op, status: a.status, error: a.body.error, retryAfter: a.retryAfter !== undefined }).toEqual({
        op: a.op,
        status: 503,
        error: 'temporarily_unavailable',
        retryAfter: true,
      });
    }
  });

  /**
   * A request with an idempotency-ref claims it (committed on its own) before its work; when the
   * database goes away in that work, freeing the ref fails too. It is freed once the database is
   * back, so the client's retry runs instead of meeting 409 in-flight for five minutes.
   */
  runIf("the database vanishing after an idempotency-ref was claimed: the client's retry with it runs once the database is back", async () => {
    const srv = server!;
    const port = srv.port;
    if (!cluster!.isRunning) cluster!.start();
    const register = () =>
      request(port, 'POST', '/users', {
        json: { tenant: 'bank-a', username: 'retried', password: USER.password, acceptedTerms: true },
        headers: { 'api-key': loginApp.api_key, 'idempotency-ref': 'outage-registration-1' },
        timeoutMs: 20_000,
      });
    const locker = new PgClient({ connectionString: cluster!.url, application_name: 'reliability-locker' });
    locker.on('error', () => undefined); // it dies with the database
    await locker.connect();
    let first: Reply;
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE users IN ACCESS EXCLUSIVE MODE');
      const pending = register();
      for (const deadline = Date.now() + 10_000; ; ) {
        const waiting = await locker.query<{ n: string }>(
          "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'portcullis' AND wait_event_type = 'Lock'",
        );
        if (Number(waiting.rows[0]!.n) >= 1) break;
        if (Date.now() > deadline) throw new Error('the registration never reached the users table');
        await sleep(50);
      }
      cluster!.stopImmediate();
      first = await pending;
    } finally {
      await locker.end().catch(() => undefined);
      if (!cluster!.isRunning) cluster!.start();
    }
    expect([first.status, first.json.code]).toEqual([503, 'UNAVAILABLE']);
    const seen: number[] = [];
    let retry: Reply | undefined;
    for (const deadline = Date.now() + 30_000; Date.now() < deadline; ) {
      retry = await register().catch(() => undefined);
      if (retry) seen.push(retry.status);
      if (retry?.status === 201) break;
      await sleep(250);
    }
    console.log(`[outage] retries of the registration after the database came back: ${seen.join(' ')}`);
    expect(retry?.status).toBe(201);
    expect((await register()).headers['idempotent-replayed']).toBe('true');
  });
});
