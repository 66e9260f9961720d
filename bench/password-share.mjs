// The password grant's share of the machine's bcrypt ceiling, for npm run bench and bench/one.mjs.
//
// This machine's speed moves by a few per cent from one few-second stretch to the next (eight
// back-to-back 8 s ceilings at cost 10 gave 37.6-39.7 hashes/s), so a run compared with one ceiling
// measured beside it moves by as much. Runs and ceilings therefore alternate, ceiling, run, ceiling, run, …,
// ceiling: each run is compared with the mean of the two ceilings either side of it, and the share
// is the rounds' mean logins per second over the mean of those ceilings. A ceiling is measured only
// once the server has finished the logins still queued when its run ended; measured while they ran,
// it would be low and flatter the share.
import { readFileSync, readdirSync } from 'node:fs';
import { bcryptCeiling } from './bcrypt-ceiling.mjs';

/** CPU seconds used so far by a process and its children (a cluster's primary and its workers). */
function treeCpuSeconds(pid) {
  let ticks = 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      // After the command's closing parenthesis: state, ppid, … utime (14th field), stime (15th).
      const f = readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1].split(' ');
      if (Number(d) === pid || Number(f[1]) === pid) ticks += Number(f[11]) + Number(f[12]);
    } catch { /* gone */ }
  }
  return ticks / 100;
}

/**
 * Resolves once the server (pid and its children) used under 5 % of one core over a whole second:
 * its queued bcrypt work is done. An idle server's timers use under 1 %. `idleCores` raises the
 * bar for a server whose idle costs more (V8's profiler samples 1,000 times a second).
 */
export async function drained(pid, timeoutMs = 120000, idleCores = 0.05) {
  const end = Date.now() + timeoutMs;
  let last = treeCpuSeconds(pid);
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = treeCpuSeconds(pid);
    if (now - last < idleCores) return;
    last = now;
  }
  throw new Error(`the server (pid ${pid}) still busy after ${timeoutMs / 1000} s`);
}

const mean = (xs) => xs.reduce((s, x) => s + x, 0) / xs.length;

/**
 * `rounds` password runs (`runOnce()`, an autocannon result) between rounds + 1 bcrypt ceilings at
 * `cost`. Returns the share, the rate and ceiling it divides, each round's share, and the rounds'
 * results merged into one (mean rate, median p50, worst p99, non-2xx and errors summed).
 */
export async function passwordShare(cost, runOnce, { rounds, pid, idleCores }) {
  await drained(pid, undefined, idleCores); // whatever ran before (a warm-up, say) has finished
  const ceilings = [await bcryptCeiling(cost)];
  const runs = [];
  for (let i = 0; i < rounds; i += 1) {
    runs.push(await runOnce());
    await drained(pid, undefined, idleCores);
    ceilings.push(await bcryptCeiling(cost));
  }
  const around = runs.map((_, i) => (ceilings[i] + ceilings[i + 1]) / 2);
  const rate = mean(runs.map((r) => r.requests.average));
  const ceiling = mean(around);
  const p50s = runs.map((r) => r.latency.p50).sort((a, b) => a - b);
  const reasons = {};
  for (const r of runs) for (const [k, v] of Object.entries(r.reasons ?? {})) reasons[k] = (reasons[k] ?? 0) + v;
  const merged = {
    requests: { average: rate, total: runs.reduce((s, r) => s + r.requests.total, 0) },
    latency: { p50: p50s[Math.floor(p50s.length / 2)], p99: Math.max(...runs.map((r) => r.latency.p99)) },
    non2xx: runs.reduce((s, r) => s + r.non2xx, 0),
    errors: runs.reduce((s, r) => s + r.errors, 0),
    timeouts: runs.reduce((s, r) => s + r.timeouts, 0),
    reasons,
  };
  return { share: rate / ceiling, rate, ceiling, ceilings, shares: runs.map((r, i) => r.requests.average / around[i]), merged };
}
