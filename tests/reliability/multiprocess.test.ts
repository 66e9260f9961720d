/**
 * Several processes on one PostgreSQL database: all state is in the database, so any process can
 * introspect or revoke what another issued; node:cluster workers (WEB_CONCURRENCY) serve together;
 * and the brute-force counters — the per-user lockout and the per-IP login throttle — are shared,
 * so spreading attempts over processes does not multiply an attacker's budget.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Client as PgClient } from 'pg';
import {
  buildServer,
  childPids,
  cli,
  freshDatabase,
  introspect,
  issueToken,
  passwordLogin,
  pgTest,
  revoke,
  ROOT,
  serverEnv,
  SKIP_REASON,
  startServer,
  tempDir,
  tokenRequest,
  type Build,
  type Creds,
  type ServerProcess,
} from './helpers';

jest.setTimeout(60_000);

const PASSWORD = 'a sturdy passphrase';
const LOCKOUT_THRESHOLD = 10; // the default tenant policy
const IP_FAILURES = 20; // the per-IP budget these processes are configured with (config dir below)

describe(`several processes on one database${SKIP_REASON}`, () => {
  let build: Build | undefined;
  let db: Awaited<ReturnType<typeof freshDatabase>> | undefined;
  let data: ReturnType<typeof tempDir> | undefined;
  let configDir: ReturnType<typeof tempDir> | undefined;
  const servers: ServerProcess[] = [];
  let env: NodeJS.ProcessEnv;
  let a: ServerProcess;
  let b: ServerProcess;
  let app: Creds;
  let rs: Creds;
  let loginApp: Creds;

  beforeAll(async () => {
    if (pgTest !== test) return;
    build = buildServer();
    db = await freshDatabase(process.env.DATABASE_URL!);
    data = tempDir('portcullis-rel-multi-');
    // The per-IP throttle is not set by an environment variable, but its config directory is:
    // the project's config with a small budget and a window longer than this file runs.
    configDir = tempDir('portcullis-rel-config-');
    const defaults = JSON.parse(readFileSync(path.join(ROOT, 'config', 'default.json'), 'utf8')) as Record<string, unknown>;
    defaults.loginThrottle = { failuresPerWindow: IP_FAILURES, windowSeconds: 600 };
    writeFileSync(path.join(configDir.dir, 'default.json'), JSON.stringify(defaults));
    copyFileSync(path.join(ROOT, 'config', 'test.json'), path.join(configDir.dir, 'test.json'));
    env = serverEnv(db.url, data.dir, { PORTCULLIS_CONFIG_DIR: configDir.dir });

    await cli(build, env, ['tenant', 'create', 'bank-a']);
    app = await cli(build, env, ['client', 'create', '--tenant', 'bank-a', '--grant', 'client_credentials']);
    rs = await cli(build, env, ['client', 'create', '--tenant', 'bank-a', '--introspection']);
    loginApp = await cli(build, env, ['client', 'create', '--tenant', 'bank-a', '--grant', 'password']);
    await cli(build, env, ['user', 'create', '--tenant', 'bank-a', '--username', 'pat', '--password', PASSWORD]);
    await cli(build, env, ['user', 'create', '--tenant', 'bank-a', '--username', 'otpuser', '--mobile', '+447911150077', '--password', PASSWORD]);
    [a, b] = await Promise.all([startServer(build, env), startServer(build, env)]);
    servers.push(a, b);
  }, 60_000);

  afterAll(async () => {
    await Promise.all(servers.map((s) => s.stop(5000)));
    await db?.drop();
    data?.cleanup();
    configDir?.cleanup();
    build?.cleanup();
  }, 30_000);

  pgTest('a token issued by one process is introspected and revoked through the other, then inactive on both', async () => {
    expect(a.child.pid).not.toBe(b.child.pid);
    const token = await issueToken(a.port, app);
    expect((await introspect(b.port, rs, token)).json).toMatchObject({ active: true, client_id: app.client_id, tenant: 'bank-a' });
    const revoked = await revoke(b.port, app, token);
    expect(revoked.status).toBe(200);
    expect((await introspect(a.port, rs, token)).json).toEqual({ active: false });
    expect((await introspect(b.port, rs, token)).json).toEqual({ active: false });
    // and the other way round
    const other = await issueToken(b.port, app);
    expect((await introspect(a.port, rs, other)).json.active).toBe(true);
    expect((await revoke(a.port, app, other)).status).toBe(200);
    expect((await introspect(b.port, rs, other)).json).toEqual({ active: false });
  });

  pgTest(`the per-user lockout is shared: ${LOCKOUT_THRESHOLD + 2} wrong passwords alternating over two processes lock the user on both`, async () => {
    // The right password works through either process to begin with (and resets nothing it should not).
    expect((await passwordLogin(a.port, loginApp, 'pat', PASSWORD)).status).toBe(200);
    expect((await passwordLogin(b.port, loginApp, 'pat', PASSWORD)).status).toBe(200);

    const wrong = [];
    for (let i = 0; i < LOCKOUT_THRESHOLD + 2; i += 1) {
      const srv = i % 2 === 0 ? a : b;
      wrong.push(await passwordLogin(srv.port, loginApp, 'pat', `wrong guess ${i}`));
    }
    expect(wrong.map((r) => `${r.status} ${String(r.json.error)}`)).toEqual(Array(LOCKOUT_THRESHOLD + 2).fill('400 invalid_grant'));

    // Neither process counted only its own half (5 + 5 < 10 each would not lock): the user is locked.
    const pg = new PgClient({ connectionString: db!.url });
    await pg.connect();
    try {
      const row = (await pg.query<{ failed_login_count: number; locked_until: Date | null }>("SELECT failed_login_count, locked_until FROM users WHERE username = 'pat'")).rows[0];
      expect(row?.failed_login_count).toBe(LOCKOUT_THRESHOLD);
      expect(row?.locked_until).not.toBeNull();
    } finally {
      await pg.end();
    }
    for (const srv of [a, b]) {
      const r = await passwordLogin(srv.port, loginApp, 'pat', PASSWORD);
      expect({ status: r.status, body: r.json }).toEqual({ status: 400, body: { error: 'invalid_grant', error_description: 'invalid username or password' } });
    }
  });

  pgTest('OTP attempts and idempotency-refs are shared: 5 wrong codes over two processes block both; a ref replays on the other', async () => {
    const login = await passwordLogin(a.port, loginApp, 'otpuser', PASSWORD);
    expect(login.status).toBe(200);
    const H = { authorization: `Bearer ${String(login.json.access_token)}`, 'content-type': 'application/json' };
    const post = (srv: ServerProcess, p: string, body: unknown, extra: Record<string, string> = {}) =>
      fetch(`http://127.0.0.1:${srv.port}${p}`, { method: 'POST', headers: { ...H, ...extra }, body: JSON.stringify(body) });

    // one idempotency-ref, one effect, whichever process answers
    const first = await post(a, '/authentication_factors/otp/SMS', {}, { 'idempotency-ref': 'enrol-once' });
    const second = await post(b, '/authentication_factors/otp/SMS', {}, { 'idempotency-ref': 'enrol-once' });
    expect([first.status, second.status]).toEqual([204, 204]);
    expect(second.headers.get('idempotent-replayed')).toBe('true');
    const pg = new PgClient({ connectionString: db!.url });
    await pg.connect();
    try {
      const n = (await pg.query<{ n: string }>("SELECT count(*) AS n FROM challenges c JOIN users u ON u.id = c.user_id WHERE u.username = 'otpuser'")).rows[0];
      expect(Number(n?.n)).toBe(1);

      // five wrong codes, alternating processes (sandbox tenant: the right code is 123456)
      const wrong = [];
      for (let i = 0; i < 5; i += 1) wrong.push((await post(i % 2 === 0 ? a : b, '/authentication_factors/otp/SMS/verify', { verificationCode: '000000' })).status);
      expect(wrong).toEqual([403, 403, 403, 403, 403]);
      for (const srv of [a, b]) expect((await post(srv, '/authentication_factors/otp/SMS/verify', { verificationCode: '123456' })).status).toBe(403);
      const row = (await pg.query<{ factor_blocked_until: Date | null }>("SELECT factor_blocked_until FROM users WHERE username = 'otpuser'")).rows[0];
      expect(row?.factor_blocked_until).not.toBeNull();
    } finally {
      await pg.end();
    }
  });

  pgTest(`the per-IP login throttle is shared: ${IP_FAILURES} failed logins over two processes exhaust it on both`, async () => {
    // Failed attempts so far from 127.0.0.1 (lockout test): 12 wrong + 2 right-but-locked; the
    // successful logins gave their points back.
    let failures = LOCKOUT_THRESHOLD + 2 + 2;
    const more = [];
    for (let i = 0; failures < IP_FAILURES; i += 1, failures += 1) {
      more.push(await passwordLogin((i % 2 === 0 ? a : b).port, loginApp, 'nobody', `guess ${i}`));
    }
    expect(more.map((r) => r.status)).toEqual(Array(more.length).fill(400));
    // Budget used up, counted across both processes: each refuses before evaluating any password,
    // the right one included.
    for (const srv of [a, b]) {
      const r = await passwordLogin(srv.port, loginApp, 'nobody', 'one more');
      expect({ status: r.status, error: r.json.error }).toEqual({ status: 429, error: 'temporarily_unavailable' });
      expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    }
    // Client credentials are not login attempts: unaffected.
    expect((await tokenRequest(a.port, app)).status).toBe(200);
  });

  pgTest('WEB_CONCURRENCY=2 on a port already taken: the primary stops with one clear line, not a restart loop', async () => {
    const blocker = net.createServer().listen(0, '127.0.0.1');
    await new Promise((r) => blocker.once('listening', r));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      const child = spawn(process.execPath, [build!.main, 'serve'], { env: { ...env, WEB_CONCURRENCY: '2', PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const code = await new Promise<number | null>((resolve) => {
        const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
        child.once('exit', (c) => {
          clearTimeout(timer);
          resolve(c);
        });
      });
      expect(code).toBe(1);
      expect(out).toContain(`cannot listen on port ${port} (PORT): another process is using it`);
      expect(out).toContain('a worker failed to start; stopping');
      expect(out).not.toMatch(/worker died; starting another|\n\s+at /); // no loop, no stack trace
    } finally {
      blocker.close();
    }
  });

  pgTest('WEB_CONCURRENCY=2: two workers (with WORKER_HEAP_LIMIT_MB, WORKER_MIN_SEMI_SPACE_MB) serve 50 concurrent requests; every token introspects active; SIGTERM stops all, exit 0', async () => {
    const c = await startServer(build!, { ...env, WEB_CONCURRENCY: '2', SHUTDOWN_TIMEOUT_MS: '5000', WORKER_HEAP_LIMIT_MB: '300', WORKER_MIN_SEMI_SPACE_MB: '8' });
    servers.push(c);
    expect(childPids(c.child.pid!)).toHaveLength(2);
    // Each worker runs with the configured V8 heap sizes; the primary keeps its own command line.
    const argv = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    for (const pid of childPids(c.child.pid!)) expect(argv(pid)).toEqual(expect.arrayContaining(['--max-old-space-size=300', '--min-semi-space-size=8']));
    expect(argv(c.child.pid!)).not.toContain('--max-old-space-size=300');
    expect(argv(c.child.pid!)).not.toContain('--min-semi-space-size=8');

    const replies = await Promise.all(Array.from({ length: 50 }, () => tokenRequest(c.port, app)));
    expect(replies.map((r) => r.status)).toEqual(Array(50).fill(200));
    const tokens = replies.map((r) => r.json.access_token as string);
    expect(new Set(tokens).size).toBe(50);
    const seen = await Promise.all(tokens.map((t, i) => introspect((i % 2 === 0 ? c : a).port, rs, t)));
    expect(seen.map((r) => r.json.active)).toEqual(Array(50).fill(true));

    const workers = childPids(c.child.pid!);
    const t0 = Date.now();
    c.child.kill('SIGTERM');
    const exit = await c.exited;
    console.log(`[multiprocess] WEB_CONCURRENCY=2 primary ${c.child.pid} workers ${workers.join(',')}: exit code ${exit.code} ${exit.at - t0} ms after SIGTERM`);
    expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null });
    for (const pid of workers) expect(() => process.kill(pid, 0)).toThrow(); // workers are gone too
  });
});
