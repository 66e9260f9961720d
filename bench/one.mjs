// One scenario against one Portcullis on PostgreSQL, for working on a change (the figures of the
// README's "what made the difference" table):
//   npm run build && node bench/one.mjs [cc|intro|cc70|intro70|pw10|pw12 ...]   WORKERS=1 (default) · BENCH_SECONDS=8 ·
//   PROFILE=1 writes a CPU profile per process into bench/profiles/ (open it in Chrome DevTools); a
//   pw run then counts the server as drained under 30 % of a core, the profiler's own sampling included.
//   cc70 / intro70 run at 70 % of the rate the last cc / intro run reached (as npm run bench does);
//   cc70p / intro70p do the same with evenly paced requests (bench/paced.mjs) instead of autocannon.
//   Without an earlier cc / intro run, MAX_CC / MAX_INTRO give the maximum to take 70 % of.
//   pw10 / pw12 (pw<cost>): the password grant, one user per connection, at that bcrypt cost, and
//   its share of the bcrypt ceiling at that cost, measured right before and after (BENCH_PW_ROUNDS=3: three
//   runs alternating with four ceilings, as npm run bench does; bench/password-share.mjs).
//   during12 / during10: introspection, 200 evenly paced requests a second, while 20 connections log
//   in at that cost (npm run bench's "introspection during password load").
//   The first pw run is preceded by WARMUP_LOGINS (default 8000) unmeasured cost-4 logins (the login path warmed up, as npm run bench does).
//   Each run also prints the server processes' peak RSS so far (VmHWM, the largest process), how
//   busy the machine's cores were (from /proc/stat), and CPU per request of the server (and of its
//   event-loop threads, with their system time apart), PostgreSQL and the load generator, and how
//   often per request the event loops and PostgreSQL's processes were switched out.
//   PER_RUN=1: also a line per measured run (each round of a pw run): its rate and CPU per request.
//   NODE_FLAGS="--trace-gc" SERVER_LOG=gc.log: flags for the server's processes, and its output kept.
//   PACED_TIMELINE=1: paced runs print when the schedule started (epoch ms, to line up with other logs)
//   and each 100 ms window whose worst latency passed 20 ms, with the load generator's own worst send lag.
//   Every introspection reply (intro, intro70, intro70p, during*) must say `"active":true`, as in
//   npm run bench: a run with any other answer stops with an error.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { paced } from './paced.mjs';
import { passwordShare } from './password-share.mjs';
import pg from 'pg';

/**
 * CPU seconds used so far by each live process whose command is `node …serve` or postgres (keyed by
 * pid, with its kind; `main` = its event loop's thread), and the servers' peak RSS.
 */
function cpuByKind() {
  const out = { pids: new Map(), peakRssMB: 0 };
  // utime and stime (fields 14 and 15 of /proc/…/stat), in seconds.
  const times = (statPath) => { const f = readFileSync(statPath, 'utf8').split(') ')[1].split(' '); return { user: Number(f[11]) / 100, kernel: Number(f[12]) / 100 }; };
  // Times the thread was switched out: waiting (voluntary) and preempted (nonvoluntary).
  const switches = (statusPath) => {
    const st = readFileSync(statusPath, 'utf8');
    return Number(/\nvoluntary_ctxt_switches:\s+(\d+)/.exec(st)[1]) + Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(st)[1]);
  };
  const ticks = (statPath) => { const t = times(statPath); return t.user + t.kernel; };
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      const kind = cmd.includes('cli/main.js') && cmd.includes('serve') ? 'server' : cmd.startsWith('postgres') ? 'postgres' : null;
      if (!kind) continue;
      const entry = { kind, all: ticks(`/proc/${pid}/stat`), main: 0, mainKernel: 0, switches: switches(`/proc/${pid}/task/${pid}/status`) };
      out.pids.set(pid, entry);
      if (kind !== 'server') continue;
      const loop = times(`/proc/${pid}/task/${pid}/stat`); // the event loop's thread
      entry.main = loop.user + loop.kernel;
      entry.mainKernel = loop.kernel;
      out.peakRssMB = Math.max(out.peakRssMB, Math.round(Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024));
    } catch { /* gone */ }
  }
  return out;
}

/**
 * CPU seconds each kind used between two snapshots: a process's CPU from its start when it began in
 * between; one that ended in between (a pooled PostgreSQL backend, say) is left out — its last
 * seconds were not seen, and subtracting its earlier total would make the sum negative.
 */
function cpuBetween(before, after) {
  const out = { server: 0, serverMain: 0, serverMainKernel: 0, postgres: 0, serverSwitches: 0, postgresSwitches: 0 };
  for (const [pid, a] of after.pids) {
    const b = before.pids.get(pid) ?? { all: 0, main: 0, mainKernel: 0, switches: 0 };
    out[a.kind] += a.all - b.all;
    out[`${a.kind}Switches`] += a.switches - b.switches;
    if (a.kind !== 'server') continue;
    out.serverMain += a.main - b.main;
    out.serverMainKernel += a.mainKernel - b.mainKernel;
  }
  return out;
}

/** Busy and total jiffies of all cores, from /proc/stat. */
function machineCpu() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1).map(Number);
  const idle = f[3] + f[4];
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const scenarios = process.argv.slice(2).length ? process.argv.slice(2) : ['cc', 'intro'];
const base = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const db = `portcullis_one_${Date.now()}`;
const admin = new pg.Client({ connectionString: base });
await admin.connect();
await admin.query(`CREATE DATABASE ${db}`);
const url = new URL(base);
url.pathname = `/${db}`;
const port = 20000 + Math.floor(Math.random() * 20000);
const dataDir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-one-'));
const env = {
  ...process.env, NODE_ENV: 'production', LOG_LEVEL: 'warn', DATABASE_URL: url.toString(), DATA_DIR: dataDir,
  SECRETS_KEY: randomBytes(32).toString('base64'), WEB_CONCURRENCY: process.env.WORKERS ?? '1', PORT: String(port), PUBLIC_URL: `http://127.0.0.1:${port}`,
  PASSWORD_REHASH: 'false', // the users keep the cost they were made with (pw4, pw10 under the default BCRYPT_COST 12)
};
const cli = (...args) => JSON.parse(execFileSync(process.execPath, [path.join(root, 'dist/src/cli/main.js'), ...args, '--json'], { env }).toString());
let server;
try {
  cli('migrate');
  cli('tenant', 'create', 'bench');
  const app = cli('client', 'create', '--tenant', 'bench', '--grant', 'client_credentials', '--grant', 'password', '--scope', 'accounts');
  const PASSWORD = 'benchmark passphrase 2026';
  const costs = new Set(scenarios.filter((s) => s.startsWith('pw')).map((s) => s.replace(/70p?$/, '').slice(2)));
  for (const s of scenarios.filter((x) => x.startsWith('during'))) costs.add(s.slice('during'.length) || '12');
  if (costs.size) costs.add('4'); // the warm-up's users
  for (const cost of costs) {
    execFileSync(process.execPath, [path.join(root, 'bench/setup-users.mjs'), 'bench', `cost${cost}-`, '50', cost], { env: { ...env, BENCH_PASSWORD: PASSWORD } });
  }
  const rs = cli('client', 'create', '--tenant', 'bench', '--introspection');
  const profile = process.env.PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${path.join(root, 'bench/profiles')}`] : [];
  // SERVER_LOG=file keeps the server's output (with NODE_FLAGS=--trace-gc, say); else it is dropped.
  const log = process.env.SERVER_LOG ? openSync(process.env.SERVER_LOG, 'w') : 'ignore';
  // NODE_FLAGS: extra node flags for the server and its workers (--trace-gc is not allowed in NODE_OPTIONS).
  const flags = (process.env.NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);
  server = spawn(process.execPath, [...profile, ...flags, path.join(root, 'dist/src/cli/main.js'), 'serve'], { env, stdio: ['ignore', log, log] });
  const target = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i += 1) {
    if (await fetch(`${target}/readyz`).then((r) => r.ok, () => false)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  const basic = (c) => `Basic ${Buffer.from(`${c.client_id}:${c.client_secret}`).toString('base64')}`;
  const form = 'application/x-www-form-urlencoded';
  const cc = { method: 'POST', headers: { 'content-type': form, authorization: basic(app) }, body: 'grant_type=client_credentials' };
  const token = (await (await fetch(`${target}/token`, cc)).json()).access_token;
  const intro = { method: 'POST', headers: { 'content-type': form, authorization: basic(rs) }, body: `token=${token}` };
  // Every introspection reply must say the token is active, as npm run bench requires: an inactive
  // answer is the cheap one, and a run of them would measure the wrong thing (bench/NOTES.md).
  const ACTIVE = '"active":true';
  const notActive = (s, n) => { if (n) throw new Error(`${s}: ${n} introspection replies did not say ${ACTIVE}`); };
  const pw = (user) => ({ method: 'POST', headers: { 'content-type': form, authorization: basic(app) }, body: new URLSearchParams({ grant_type: 'password', username: user, password: PASSWORD }).toString() });
  // Password runs: each connection logs in as a user of its own (see bench/run.mjs).
  const perUserAt = (cost) => {
    let n = 0;
    return { setupClient: (c) => c.setRequests([pw(`cost${cost}-${n++ % 50}`)]) };
  };
  const max = {};
  let warmed = false;
  for (const s of scenarios) {
    if (s.startsWith('during')) {
      // Introspection latency while logins at that cost keep bcrypt busy, as npm run bench measures it.
      const cost = s.slice('during'.length) || '12';
      const seconds = Number(process.env.BENCH_SECONDS ?? 8);
      const [, r] = await Promise.all([
        autocannon({ url: `${target}/token`, ...pw(`cost${cost}-0`), ...perUserAt(cost), duration: seconds + 1, connections: 20 }),
        paced(`${target}/token/introspection`, { ...intro, rate: 200, seconds, connections: 4, expect: ACTIVE }),
      ]);
      notActive(s, r.unexpected);
      console.log(`${s.padEnd(8)} ×${env.WEB_CONCURRENCY}  introspection during cost-${cost} logins: ${Math.round(r.requests.average)} req/s  p50 ${r.latency.p50} ms  p99 ${r.latency.p99} ms  max ${r.latency.max} ms  non2xx ${r.non2xx}`);
      continue;
    }
    const kind = s.replace(/70p?$/, '');
    const [pathName, req] = kind === 'cc' ? ['/token', cc] : kind === 'intro' ? ['/token/introspection', intro] : ['/token', pw(`cost${kind.slice(2)}-0`)];
    const perUser = kind.startsWith('pw') ? perUserAt(kind.slice(2)) : {};
    const rate = /70p?$/.test(s) ? { overallRate: Math.max(1, Math.floor((max[kind] ?? Number(process.env[`MAX_${kind.toUpperCase()}`] ?? 1000)) * 0.7)) } : {};
    if (kind.startsWith('pw') && !warmed) {
      // Unmeasured, as npm run bench does: cost-4 logins, so the login path runs compiled.
      await autocannon({ url: target + pathName, ...pw('cost4-0'), ...perUserAt('4'), amount: Number(process.env.WARMUP_LOGINS ?? 8000), connections: 50 });
      warmed = true;
    }
    const seconds = Number(process.env.BENCH_SECONDS ?? 8);
    // One measured run; CPU, context switches and the cores' busy time are summed over a scenario's runs.
    const used = {};
    const busy = { busy: 0, total: 0 };
    let peakRssMB = 0;
    let generator = 0;
    const once = async () => {
      const before = cpuByKind();
      const m0 = machineCpu();
      const me0 = process.cpuUsage();
      const expect = kind === 'intro' ? ACTIVE : undefined;
      let wrong = 0;
      const checked = expect ? { requests: [{ ...req, onResponse: (status, body) => { if (status < 300 && !body.includes(expect)) wrong += 1; } }] } : {};
      const res = s.endsWith('70p')
        ? await paced(target + pathName, { ...req, rate: rate.overallRate, seconds, connections: 50, expect })
        : await autocannon({ url: target + pathName, ...req, ...checked, ...rate, ...perUser, duration: seconds, connections: 50 });
      notActive(s, res.unexpected ?? wrong);
      const me = process.cpuUsage(me0);
      const generated = me.user + me.system; // µs
      const after = cpuByKind();
      const m1 = machineCpu();
      const run = cpuBetween(before, after);
      for (const [k, v] of Object.entries(run)) used[k] = (used[k] ?? 0) + v;
      if (process.env.PER_RUN) {
        const n = res.requests.total;
        console.log(`         this run: ${res.requests.average.toFixed(1)} req/s, per request: event loops ${Math.round((run.serverMain * 1e6) / n)} µs, postgres ${Math.round((run.postgres * 1e6) / n)} µs, load generator ${Math.round(generated / n)} µs`);
      }
      busy.busy += m1.busy - m0.busy;
      busy.total += m1.total - m0.total;
      peakRssMB = after.peakRssMB;
      generator += generated;
      return res;
    };
    // Password runs alternate with bcrypt ceilings at their cost (bench/password-share.mjs), BENCH_PW_ROUNDS
    // runs (1 here by default; npm run bench runs 3).
    const share = kind.startsWith('pw') ? await passwordShare(Number(kind.slice(2)), once, { rounds: Number(process.env.BENCH_PW_ROUNDS ?? 1), pid: server.pid, idleCores: process.env.PROFILE ? 0.3 : undefined }) : undefined;
    const r = share ? share.merged : await once();
    if (!rate.overallRate) max[kind] = r.requests.average;
    console.log(`${s.padEnd(8)} ×${env.WEB_CONCURRENCY}  ${Math.round(r.requests.average)} req/s  p50 ${r.latency.p50} ms  p99 ${r.latency.p99} ms  non2xx ${r.non2xx}  peak RSS ${peakRssMB} MB  cores busy ${Math.round((busy.busy / busy.total) * 100)} %`);
    if (share) {
      console.log(`         bcrypt ceilings at cost ${kind.slice(2)}: ${share.ceilings.map((c) => c.toFixed(1)).join(', ')}/s → ${share.rate.toFixed(1)}/s is ${share.share.toFixed(3)} of ${share.ceiling.toFixed(1)}/s${share.shares.length > 1 ? ` (each run: ${share.shares.map((x) => x.toFixed(3)).join(', ')})` : ''}`);
    }
    const per = (k) => Math.round((used[k] * 1e6) / r.requests.total);
    console.log(`         CPU per request: server ${per('server')} µs (event loop ${per('serverMain')} µs, of it in the kernel ${per('serverMainKernel')} µs), postgres ${per('postgres')} µs, load generator ${Math.round(generator / r.requests.total)} µs`);
    const each = (k) => (used[k] / r.requests.total).toFixed(1);
    console.log(`         context switches per request: event loops ${each('serverSwitches')}, postgres ${each('postgresSwitches')}`);
  }
} finally {
  if (server && server.exitCode === null) await new Promise((r) => { server.once('exit', r); server.kill('SIGTERM'); });
  await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await admin.end();
  rmSync(dataDir, { recursive: true, force: true });
}
