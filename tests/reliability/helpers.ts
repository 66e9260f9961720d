/**
 * Helpers for the reliability tests: they run the compiled server (`node dist/src/cli/main.js
 * serve`) as real child processes against real PostgreSQL, and talk to it over loopback HTTP with
 * keep-alive off, so that every request is one connection whose fate the test can see.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Client as PgClient } from 'pg';
import { freePort } from '../helpers/env';

export { freePort };

export const ROOT = path.resolve(__dirname, '..', '..');

/** The embedded database serves one process and cannot be stopped under the server: skip. */
export const pgTest = process.env.DATABASE_URL ? test : test.skip;
export const SKIP_REASON = process.env.DATABASE_URL ? '' : ' [skipped: needs DATABASE_URL (PostgreSQL)]';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));


// ---------------------------------------------------------------------------------------------
// The compiled server

export interface Build {
  /** dist/src/cli/main.js of this build. */
  main: string;
  cleanup(): void;
}

/**
 * Compiles src/ (tsconfig.build.json, what `npm run build` does) into a private directory rather
 * than the shared dist/: test files run in parallel Jest workers, and one file rebuilding dist/
 * while another's CLI loads it would be a race of the tests, not of the server. The layout is
 * dist's (dist/src, dist/migrations) beside symlinks to node_modules and config, so the compiled
 * code finds its dependencies, migrations and config/test.json exactly as from the real dist/.
 */
export function buildServer(): Build {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-rel-build-'));
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  symlinkSync(path.join(ROOT, 'config'), path.join(dir, 'config'), 'dir');
  const outDir = path.join(dir, 'dist');
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json', '--outDir', outDir], {
    cwd: ROOT,
    stdio: 'pipe',
    timeout: 60_000,
  });
  const main = path.join(outDir, 'src', 'cli', 'main.js');
  if (!existsSync(main)) throw new Error(`build produced no ${main}`);
  return { main, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** What the CLI and the server need: the same DATABASE_URL and DATA_DIR (it holds the secrets key). */
export function serverEnv(databaseUrl: string, dataDir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    NODE_ENV: 'test',
    LOG_LEVEL: 'warn',
    DATABASE_URL: databaseUrl,
    DATA_DIR: dataDir,
    ...extra,
  };
}

/** Runs the CLI with `--json` and returns what it printed. */
export async function cli<T = Record<string, string>>(build: Build, env: NodeJS.ProcessEnv, args: string[]): Promise<T> {
  const out = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [build.main, ...args, '--json'], { env, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`portcullis ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
  return JSON.parse(out.trim()) as T;
}

export interface ServerProcess {
  child: ChildProcess;
  port: number;
  base: string;
  /** stdout and stderr so far (logs at LOG_LEVEL). */
  output(): string;
  /** Resolves with the exit code (or signal) once the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  /** SIGTERM, then SIGKILL if it is still there after `graceMs`. Safe to call twice. */
  stop(graceMs?: number): Promise<void>;
}

/** Starts `serve` and waits until /readyz answers 200. */
export async function startServer(build: Build, env: NodeJS.ProcessEnv, opts: { readyTimeoutMs?: number } = {}): Promise<ServerProcess> {
  const port = await freePort();
  const child = spawn(process.execPath, [build.main, 'serve'], {
    env: { ...env, PORT: String(port), PUBLIC_URL: `http://127.0.0.1:${port}` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() }));
  });
  let gone = false;
  void exited.then(() => (gone = true));
  const proc: ServerProcess = {
    child,
    port,
    base: `http://127.0.0.1:${port}`,
    output: () => out,
    exited,
    async stop(graceMs = 10_000) {
      if (gone) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (!gone) child.kill('SIGKILL');
      }, graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 30_000);
  for (;;) {
    if (gone) throw new Error(`server exited before it was ready:\n${out}`);
    const r = await request(port, 'GET', '/readyz').catch(() => undefined);
    if (r?.status === 200) return proc;
    if (Date.now() > deadline) {
      await proc.stop(1000);
      throw new Error(`server not ready within the timeout:\n${out}`);
    }
    await sleep(100);
  }
}

/** The pids of a process's direct children (WEB_CONCURRENCY workers). */
export function childPids(pid: number): number[] {
  try {
    const out = execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' });
    return out.split('\n').map((s) => Number(s.trim())).filter((n) => n > 0);
  } catch {
    return []; // ps exits 1 when there are none
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP, one connection per request

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  json: Record<string, unknown>;
  /** When the request was completely handed to the kernel, and when the reply ended. */
  sentAt: number;
  doneAt: number;
}

export class RequestFailed extends Error {
  constructor(
    readonly code: string,
    message: string,
    /** When the request was completely handed to the kernel, if it was. */
    readonly sentAt: number | undefined,
  ) {
    super(message);
  }
}

export function basic(c: { client_id: string; client_secret: string }): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(c.client_id)}:${encodeURIComponent(c.client_secret)}`).toString('base64')}`;
}

/** When each request now awaiting its reply was completely sent (request() below). */
const awaiting = new Set<{ at?: number }>();
/** Whether a request sent before this millisecond is still awaiting its reply. */
export const repliesAwaited = (): boolean => [...awaiting].some((sent) => sent.at! < Date.now());

/** One request on a fresh connection (no agent: `Connection: close`) to 127.0.0.1. */
export function request(
  port: number,
  method: string,
  pathname: string,
  opts: { form?: Record<string, string>; json?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Reply> {
  const body = opts.form ? new URLSearchParams(opts.form).toString() : opts.json !== undefined ? JSON.stringify(opts.json) : undefined;
  const type = opts.form ? 'application/x-www-form-urlencoded' : 'application/json';
  return new Promise((resolve, reject) => {
    /** When the request was completely written to the socket. */
    const sent: { at?: number } = {};
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path: pathname,
        agent: false,
        headers: {
          ...(body !== undefined ? { 'content-type': type, 'content-length': String(Buffer.byteLength(body)) } : {}),
          ...opts.headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err: NodeJS.ErrnoException) => reject(new RequestFailed(err.code ?? 'ERR', err.message, sent.at)));
        res.on('end', () => {
          awaiting.delete(sent);
          const text = Buffer.concat(chunks).toString('utf8');
          let json: Record<string, unknown>;
          try {
            json = text ? (JSON.parse(text) as Record<string, unknown>) : {};
          } catch {
            json = { raw: text };
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text, json, sentAt: sent.at ?? 0, doneAt: Date.now() });
        });
      },
    );
    req.on('finish', () => {
      sent.at = Date.now();
      awaiting.add(sent);
    });
    req.on('close', () => awaiting.delete(sent));
    req.setTimeout(opts.timeoutMs ?? 20_000, () => req.destroy(Object.assign(new Error('client timeout'), { code: 'CLIENT_TIMEOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => reject(new RequestFailed(err.code ?? 'ERR', err.message, sent.at)));
    req.end(body);
  });
}

export type Creds = { client_id: string; client_secret: string };

export const tokenRequest = (port: number, client: Creds, timeoutMs?: number) =>
  request(port, 'POST', '/token', { form: { grant_type: 'client_credentials' }, headers: { authorization: basic(client) }, timeoutMs });

export const introspect = (port: number, rs: Creds, token: string, timeoutMs?: number) =>
  request(port, 'POST', '/token/introspection', { form: { token }, headers: { authorization: basic(rs) }, timeoutMs });

export const revoke = (port: number, client: Creds, token: string, timeoutMs?: number) =>
  request(port, 'POST', '/token/revocation', { form: { token }, headers: { authorization: basic(client) }, timeoutMs });

export const passwordLogin = (port: number, client: Creds, username: string, password: string, timeoutMs?: number) =>
  request(port, 'POST', '/token', { form: { grant_type: 'password', username, password }, headers: { authorization: basic(client) }, timeoutMs });

export async function issueToken(port: number, client: Creds): Promise<string> {
  const r = await tokenRequest(port, client);
  if (r.status !== 200 || typeof r.json.access_token !== 'string') throw new Error(`token request failed: ${r.status} ${r.body}`);
  return r.json.access_token;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/** A fresh database beside DATABASE_URL's, dropped by `drop`. */
export async function freshDatabase(baseUrl: string): Promise<{ url: string; name: string; drop(): Promise<void> }> {
  const name = `pc_rel_${randomBytes(6).toString('hex')}`;
  const admin = new PgClient({ connectionString: baseUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async drop() {
      const c = new PgClient({ connectionString: baseUrl });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** Our backends in one database, by application_name (portcullis, portcullis-counters, portcullis-tokens, portcullis-listener). */
export async function countServerConnections(url: string): Promise<Array<{ application_name: string; n: number }>> {
  const c = new PgClient({ connectionString: url, application_name: 'reliability-test' });
  await c.connect();
  try {
    const r = await c.query<{ application_name: string; n: string }>(
      `SELECT application_name, count(*) AS n FROM pg_stat_activity
        WHERE application_name LIKE 'portcullis%' AND datname = current_database()
        GROUP BY application_name ORDER BY application_name`,
    );
    return r.rows.map((row) => ({ application_name: row.application_name, n: Number(row.n) }));
  } finally {
    await c.end();
  }
}

const PG_BIN = '/usr/lib/postgresql/15/bin';
export const havePgBinaries = existsSync(path.join(PG_BIN, 'pg_ctl'));

/**
 * A PostgreSQL cluster of the test's own (initdb, trust auth, 127.0.0.1 only), which the test may
 * stop and start. The server binaries refuse root, so they run as the postgres user.
 */
export class PgCluster {
  readonly dir: string;
  readonly data: string;
  readonly log: string;
  private running = false;

  private constructor(readonly port: number) {
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-rel-pg-'));
    this.data = path.join(this.dir, 'data');
    this.log = path.join(this.dir, 'postgres.log');
  }

  get isRunning(): boolean {
    return this.running;
  }

  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  static async create(): Promise<PgCluster> {
    const cluster = new PgCluster(await freePort());
    const asRoot = process.getuid?.() === 0;
    if (asRoot) {
      const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
      const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
      chownSync(cluster.dir, uid, gid);
    }
    mkdirSync(cluster.data, { mode: 0o700 });
    if (asRoot) execFileSync('chown', ['postgres:postgres', cluster.data]);
    cluster.pg('initdb', ['-D', cluster.data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8', '--locale=C']);
    return cluster;
  }

  private pg(bin: string, args: string[], timeoutMs = 60_000): string {
    const cmd = path.join(PG_BIN, bin);
    const asRoot = process.getuid?.() === 0;
    return execFileSync(asRoot ? 'runuser' : cmd, asRoot ? ['-u', 'postgres', '--', cmd, ...args] : args, {
      encoding: 'utf8',
      stdio: 'pipe',
      timeout: timeoutMs,
      cwd: this.dir,
    });
  }

  start(): void {
    const opts = `-p ${this.port} -c listen_addresses=127.0.0.1 -k ${this.dir} -c max_connections=100 -c fsync=off`;
    this.pg('pg_ctl', ['start', '-w', '-t', '30', '-D', this.data, '-l', this.log, '-o', opts]);
    this.running = true;
  }

  /** `pg_ctl stop -m immediate`: the database vanishes mid-query, as in a crash. */
  stopImmediate(): void {
    this.pg('pg_ctl', ['stop', '-w', '-t', '30', '-D', this.data, '-m', 'immediate']);
    this.running = false;
  }

  destroy(): void {
    if (this.running) {
      try {
        this.pg('pg_ctl', ['stop', '-w', '-t', '30', '-D', this.data, '-m', 'immediate']);
      } catch {
        /* already stopped */
      }
      this.running = false;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A temporary DATA_DIR (it holds the dev SECRETS_KEY file). */
export function tempDir(prefix: string): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
