// The best share of the bcrypt ceiling a password login could reach on this machine, to hold the
// password grant's figure against (bench/NOTES.md, 2026-12-07):
//   npm run build && node bench/login-floor.mjs            ROUND_TRIPS=2 · COST=10 · BENCH_PW_ROUNDS=3 · DATABASE_URL
// The smallest password server there is: node:http and bcrypt, one worker per core, one bcrypt
// computation at a time per worker through Portcullis's own limiter (as its BCRYPT_CONCURRENCY
// default; src/users/passwords.ts, so the slot is handed on as a login's is), and per login
// ROUND_TRIPS statements to PostgreSQL (each its own transaction, committed synchronously): 0 none;
// 1 an INSERT after the hash; 2 also an UPSERT before it, as Portcullis's login reserves its attempt
// before the hash and stores its session after; `carried` the same two statements, but while other
// logins wait for bcrypt a login's UPSERT waits for the next login's INSERT and is written behind
// it on one pipelined connection, as Portcullis does (src/db/pairing.ts): about one round trip a
// login. No parsing beyond the form, no tokens, no checks: what is left between it and the ceiling
// is the machine's cost of a login's wake-ups, round trips and load generator, which no server can
// avoid. Driven like the password runs of npm run bench: 50 connections, one user each, rounds
// alternating with bcrypt ceilings (bench/password-share.mjs).
import cluster from 'node:cluster';
import http from 'node:http';
import os from 'node:os';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import bcrypt from 'bcrypt';
import autocannon from 'autocannon';
import pg from 'pg';
import { createLimiter } from '../dist/src/users/passwords.js';
import { passwordShare } from './password-share.mjs';

const PASSWORD = 'login-floor-password';
const CARRIED = process.env.ROUND_TRIPS === 'carried';
const ROUND_TRIPS = CARRIED ? 2 : Number(process.env.ROUND_TRIPS ?? 2);
const COST = Number(process.env.COST ?? 10);
const CONNECTIONS = 50;

/** The server: a cluster whose workers answer POST /token. */
async function serve() {
  if (cluster.isPrimary) {
    const hash = bcrypt.hashSync(PASSWORD, COST);
    const workers = os.availableParallelism();
    for (let i = 0; i < workers; i += 1) cluster.fork({ FLOOR_HASH: hash });
    let listening = 0;
    cluster.on('listening', () => { if (++listening === workers) process.send?.('ready'); });
    cluster.on('exit', (_w, code, signal) => { if (code !== 0 && signal !== 'SIGTERM') process.exit(1); });
    process.on('SIGTERM', () => { for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM'); process.exit(0); });
    return;
  }
  const hash = process.env.FLOOR_HASH;
  const db = ROUND_TRIPS > 0 ? new pg.Pool({ connectionString: process.env.FLOOR_DB, max: 4, pipeline: CARRIED }) : undefined;
  const BEGIN = { name: 'floor_begin', text: 'INSERT INTO floor_attempts (username, n) VALUES ($1, 1) ON CONFLICT (username) DO UPDATE SET n = floor_attempts.n + 1' };
  const END = { name: 'floor_end', text: 'INSERT INTO floor_sessions (username) VALUES ($1)' };
  const waiting = []; // begins waiting for the next end to carry them
  const alone = (w) => db.query({ ...BEGIN, values: [w.user] }).then(w.resolve, w.reject);
  // As Portcullis's: when the last login waiting for bcrypt gets its turn, a waiting begin goes now.
  const limited = createLimiter(1, () => waiting.splice(0).forEach(alone));
  const verify = (password) => limited(() => bcrypt.compare(password, hash));
  // As Portcullis's (src/users/service.ts): no more begins wait than computations run (one here).
  const begin = (user) =>
    CARRIED && limited.queued() > 0 && waiting.length < 1 ? new Promise((resolve, reject) => waiting.push({ user, resolve, reject })) : db.query({ ...BEGIN, values: [user] });
  const end = async (user) => {
    const rider = waiting.shift();
    if (!rider) return db.query({ ...END, values: [user] });
    const client = await db.connect();
    try {
      client.connection.stream.cork();
      const own = client.query({ ...END, values: [user] });
      const theirs = client.query({ ...BEGIN, values: [rider.user] });
      client.connection.stream.uncork();
      theirs.then(rider.resolve, rider.reject);
      await Promise.allSettled([own, theirs]);
      return await own;
    } finally {
      client.release();
    }
  };
  http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', async () => {
      try {
        const form = new URLSearchParams(Buffer.concat(chunks).toString());
        const user = form.get('username');
        if (ROUND_TRIPS >= 2) await begin(user);
        const ok = await verify(form.get('password') ?? '');
        if (ok && ROUND_TRIPS >= 1) await end(user);
        const body = JSON.stringify(ok ? { access_token: 'x'.repeat(43), token_type: 'Bearer', expires_in: 900 } : { error: 'invalid_grant' });
        res.writeHead(ok ? 200 : 400, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      } catch (err) {
        res.writeHead(500);
        res.end(String(err));
      }
    });
  }).listen(Number(process.env.FLOOR_PORT), '127.0.0.1');
}

/** The driver: a scratch database, the server, a warm-up, the measured rounds. */
async function drive() {
  const base = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const dbName = `portcullis_floor_${Date.now()}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  const url = new URL(base);
  url.pathname = `/${dbName}`;
  if (ROUND_TRIPS > 0) {
    await admin.query(`CREATE DATABASE ${dbName}`);
    const c = new pg.Client({ connectionString: url.toString() });
    await c.connect();
    await c.query('CREATE TABLE floor_attempts (username text PRIMARY KEY, n int NOT NULL); CREATE TABLE floor_sessions (id bigserial PRIMARY KEY, username text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())');
    await c.end();
  }
  const port = 20000 + Math.floor(Math.random() * 20000);
  const server = fork(fileURLToPath(import.meta.url), [], { env: { ...process.env, FLOOR_SERVE: '1', FLOOR_DB: url.toString(), FLOOR_PORT: String(port) }, stdio: 'inherit' });
  try {
    await new Promise((resolve, reject) => { server.once('message', resolve); server.once('exit', () => reject(new Error('the server exited'))); });
    const login = (n) => ({ method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ grant_type: 'password', username: `user${n}`, password: PASSWORD }).toString() });
    let next = 0;
    const options = { url: `http://127.0.0.1:${port}/token`, ...login(0), connections: CONNECTIONS, setupClient: (c) => c.setRequests([login(next++ % CONNECTIONS)]) };
    await autocannon({ ...options, amount: 500 }); // compiled before it is measured
    const once = async () => {
      const r = await autocannon({ ...options, duration: 8 });
      if (r.non2xx || r.errors) throw new Error(`a run had ${r.non2xx} non-2xx answers and ${r.errors} errors`);
      return r;
    };
    const m = await passwordShare(COST, once, { rounds: Number(process.env.BENCH_PW_ROUNDS ?? 3), pid: server.pid });
    console.log(`login floor, ${CARRIED ? 'carried' : ROUND_TRIPS} round trip${ROUND_TRIPS === 1 ? '' : 's'}, cost ${COST}: ${m.rate.toFixed(1)}/s is ${m.share.toFixed(3)} of ${m.ceiling.toFixed(1)}/s (each run: ${m.shares.map((x) => x.toFixed(3)).join(', ')})`);
  } finally {
    await new Promise((resolve) => { if (server.exitCode !== null || server.signalCode !== null) return resolve(); server.once('exit', resolve); server.kill('SIGTERM'); });
    if (ROUND_TRIPS > 0) await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.end();
  }
}

if (process.env.FLOOR_SERVE) await serve();
else await drive();
