// What else ran on the machine during a paced run: the CPU time of the few busiest processes that
// are neither Node.js nor PostgreSQL (kernel threads included), sampled every 10 ms from
// /proc/<pid>/schedstat (nanoseconds), so a late window of the paced timeline can be lined up
// with another process taking a core.
//
// Chosen by their CPU time since they started, before the run: on these VMs the host's DAMON
// pageout thread (kdamond) was the busiest kernel thread by far, and it runs in bursts (about
// 25 ms of CPU every 545 ms), which a whole-run average hides. Reading three small files every
// 10 ms costs the load generator well under 1 % of a core.
import { readdirSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const runNs = (pid) => Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);

/** The `count` busiest processes since they started that are not node or postgres, as { pid, name }. */
function busiestOthers(count) {
  const found = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const name = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      if (name === 'node' || name.startsWith('postgres') || Number(pid) === process.pid) continue;
      found.push({ pid, name, ns: runNs(pid) });
    } catch { /* gone, or not ours to read */ }
  }
  return found.sort((a, b) => b.ns - a.ns).slice(0, count);
}

/**
 * Starts sampling; `stop()` returns, for each process, its CPU milliseconds in each `windowMs`
 * window counted from `origin` (a performance.now() value), as { name, pid, ms: Map<window, ms> }.
 * Undefined where /proc cannot be read (not Linux).
 */
export function sampleOthers({ count = 3, everyMs = 10 } = {}) {
  let chosen;
  try {
    chosen = busiestOthers(count);
  } catch {
    return undefined;
  }
  const samples = chosen.map(() => []);
  const read = () => {
    const now = performance.now();
    chosen.forEach((p, i) => {
      try {
        samples[i].push([now, runNs(p.pid)]);
      } catch { /* it ended */ }
    });
  };
  read();
  const timer = setInterval(read, everyMs);
  return {
    stop(origin, windowMs) {
      clearInterval(timer);
      read();
      return chosen.map((p, i) => {
        const ms = new Map();
        const s = samples[i];
        for (let j = 1; j < s.length; j += 1) {
          const w = Math.floor((s[j][0] - origin) / windowMs);
          ms.set(w, (ms.get(w) ?? 0) + (s[j][1] - s[j - 1][1]) / 1e6);
        }
        return { ...p, ms };
      });
    },
  };
}
