// One scenario against one Portcullis on PostgreSQL, for working on a change (the figures of the
// README's "what made the difference" table):
//   npm run build && node bench/one.mjs [cc|intro|cc70|intro70 ...]   WORKERS=1 (default) · BENCH_SECONDS=8 ·
//   PROFILE=1 writes a CPU profile per process into bench/profiles/ (open it in Chrome DevTools).
//   cc70 / intro70 run at 70 % of the rate the last cc / intro run reached (as npm run bench does).
//   Each run also prints the server processes' peak RSS so far (VmHWM, the largest process).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import pg from 'pg';
import { readdirSync, readFileSync } from 'node:fs';

/** CPU seconds used so far by every live process whose command is `node …serve` or postgres, and the servers' peak RSS. */
function cpuByKind() {
  const out = { server: 0, postgres: 0, peakRssMB: 0 };
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      const kind = cmd.includes('cli/main.js') && cmd.includes('serve') ? 'server' : cmd.startsWith('postgres') ? 'postgres' : null;
      if (!kind) continue;
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      out[kind] += (Number(f[11]) + Number(f[12])) / 100;
      if (kind === 'server') out.peakRssMB = Math.max(out.peakRssMB, Math.round(Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024));
    } catch { /* gone */ }
  }
  return out;
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
};
const cli = (...args) => JSON.parse(execFileSync(process.execPath, [path.join(root, 'dist/src/cli/main.js'), ...args, '--json'], { env }).toString());
let server;
try {
  cli('migrate');
  cli('tenant', 'create', 'bench');
  const app = cli('client', 'create', '--tenant', 'bench', '--grant', 'client_credentials');
  const rs = cli('client', 'create', '--tenant', 'bench', '--introspection');
  const profile = process.env.PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${path.join(root, 'bench/profiles')}`] : [];
  server = spawn(process.execPath, [...profile, path.join(root, 'dist/src/cli/main.js'), 'serve'], { env, stdio: 'ignore' });
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
  const max = {};
  for (const s of scenarios) {
    const kind = s.replace(/70$/, '');
    const [pathName, req] = kind === 'cc' ? ['/token', cc] : ['/token/introspection', intro];
    const rate = s.endsWith('70') ? { overallRate: Math.max(1, Math.floor((max[kind] ?? 1000) * 0.7)) } : {};
    const before = cpuByKind();
    const r = await autocannon({ url: target + pathName, ...req, ...rate, duration: Number(process.env.BENCH_SECONDS ?? 8), connections: 50 });
    if (!rate.overallRate) max[kind] = r.requests.average;
    const after = cpuByKind();
    console.log(`${s.padEnd(8)} ×${env.WEB_CONCURRENCY}  ${Math.round(r.requests.average)} req/s  p50 ${r.latency.p50} ms  p99 ${r.latency.p99} ms  non2xx ${r.non2xx}  peak RSS ${after.peakRssMB} MB`);
    const per = (k) => Math.round(((after[k] - before[k]) * 1e6) / r.requests.total);
    console.log(`         CPU per request: server ${per('server')} µs, postgres ${per('postgres')} µs`);
  }
} finally {
  if (server && server.exitCode === null) await new Promise((r) => { server.once('exit', r); server.kill('SIGTERM'); });
  await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  await admin.end();
  rmSync(dataDir, { recursive: true, force: true });
}
