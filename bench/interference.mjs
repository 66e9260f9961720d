// What else ran on the machine during a paced run: the CPU time of the few busiest processes that
// are neither Node.js nor PostgreSQL (kernel threads included), sampled every 10 ms from
// /proc/<pid>/schedstat (nanoseconds), so a late window of the paced timeline can be lined up
// with another process taking a core.
//
// Chosen by their CPU time since they started, before the run: on these VMs the host's DAMON
// pageout thread (kdamond) was the busiest kernel thread by far, and it runs in bursts (about
// 25 ms of CPU every 545 ms), which a whole-run average hides. Reading three small files every
// 10 ms costs the load generator well under 1 % of a core. The server's and PostgreSQL's own
// processes are read too (about 18 more files, and /proc/stat), for where each late window's CPU
// went (their cost, which the paced runs' own latency pays for, was not measured).
import { readdirSync, readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const runNs = (pid) => Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[0]);
const NEW_EVERY = 5; // reads between listings of /proc for processes started during the run
const TICK_NS = 1e7; // /proc/stat counts in USER_HZ, 100 a second here
/** A process's CPU so far, all its threads (utime + stime of /proc/<pid>/stat), in nanoseconds: whole ticks. */
const allThreadsNs = (pid) => {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) * TICK_NS;
};
/**
 * All cores' idle (iowait included), interrupt (hard and soft: loopback TCP is processed there, and
 * /proc/<pid>/schedstat charges it to no process) and steal time so far, in nanoseconds, from
 * /proc/stat's first line.
 */
function machineNs() {
  const f = readFileSync('/proc/stat', 'utf8').slice(0, 200).split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: (f[3] + f[4]) * TICK_NS, irq: (f[5] + f[6]) * TICK_NS, steal: (f[7] ?? 0) * TICK_NS };
}

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
 * The measured side's own processes, as two groups: `node` (every other Node.js process: the
 * servers' event loops, /proc/<pid>/schedstat being the main thread's) and `postgres` (every
 * PostgreSQL process), so that a late window shows whether the server and the database were
 * busy in it (computing, or queued behind each other) or not (waiting, or kept off the cores).
 */
function ownGroups() {
  const groups = { node: [], postgres: [] };
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const name = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      if (Number(pid) === process.pid) continue;
      if (name === 'node') groups.node.push(pid);
      else if (name.startsWith('postgres')) groups.postgres.push(pid);
    } catch { /* gone */ }
  }
  return groups;
}

/** The sum of `ns(pid)` over `pids`; a process that ended adds nothing (a step down that perWindow skips). */
function sumOver(pids, ns) {
  let total = 0;
  for (const pid of pids) {
    try { total += ns(pid); } catch { /* it ended */ }
  }
  return total;
}

/**
 * Starts sampling; `stop()` returns `others`: for each process, its CPU milliseconds in each
 * `windowMs` window counted from `origin` (a performance.now() value), as { name, pid, ms:
 * Map<window, ms> } (processes started during the run among them, named `+<name>`); and `own`: the
 * same, as { name, ms }, for where else the cores' time went (the series below). Undefined where
 * /proc cannot be read (not Linux).
 */
export function sampleOthers({ count = 3, everyMs = 10 } = {}) {
  let chosen;
  let mine;
  try {
    chosen = busiestOthers(count);
    mine = ownGroups();
    machineNs();
  } catch {
    return undefined;
  }
  const samples = chosen.map(() => []);
  // Running totals in nanoseconds, read together at each sample (`m`: machineNs(), read once). The
  // servers' event loops and PostgreSQL exactly; the Node.js processes' other threads (V8's
  // compiler and GC helpers, libuv's pool) as all their threads' ticks less the event loops' exact
  // time, so rough and at times below zero by a part of a tick; the load generator (this process,
  // all its threads); and the cores' interrupt, idle and steal time (the hypervisor running
  // something else), in whole 10 ms ticks: rough per 100 ms window, but enough to tell a server
  // that waited from one kept off the cores, and by what.
  const series = [
    { name: 'node', read: () => sumOver(mine.node, runNs) },
    { name: 'pg', read: () => sumOver(mine.postgres, runNs) },
    { name: 'node-other-threads', read: () => sumOver(mine.node, allThreadsNs), less: 'node' },
    { name: 'loadgen', read: () => { const u = process.cpuUsage(); return (u.user + u.system) * 1000; } },
    { name: 'irq', read: (m) => m.irq },
    { name: 'idle', read: (m) => m.idle },
    { name: 'steal', read: (m) => m.steal },
  ].map((x) => ({ ...x, samples: [] }));
  // Processes started during the run are sampled too, from when they are found (/proc is listed
  // every NEW_EVERY reads): a short-lived one can take a core for a few hundred milliseconds and be
  // gone, as the throwaway Erlang VM RabbitMQ's server starts every minute on these machines did
  // (bench/NOTES.md). Their names are marked with a `+`.
  const known = new Set(readdirSync('/proc').filter((d) => /^\d+$/.test(d)));
  let reads = 0;
  const findNew = () => {
    for (const pid of readdirSync('/proc')) {
      if (known.has(pid) || !/^\d+$/.test(pid)) continue;
      known.add(pid);
      try {
        const name = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
        if (name === 'node' || name.startsWith('postgres')) continue;
        // All its threads, in ticks: an Erlang VM's work is in its scheduler threads, not its main one.
        chosen.push({ pid, name: `+${name}`, ns: 0, allThreads: true });
        samples.push([[performance.now(), 0]]); // from nothing: its CPU before it was found counts in this read's window
      } catch { /* gone already */ }
    }
  };
  const read = () => {
    const now = performance.now();
    reads += 1;
    if (reads % NEW_EVERY === 0) findNew();
    chosen.forEach((p, i) => {
      try {
        samples[i].push([now, p.allThreads ? allThreadsNs(p.pid) : runNs(p.pid)]);
      } catch { /* it ended */ }
    });
    const m = machineNs();
    for (const x of series) x.samples.push([now, x.read(m)]);
  };
  read();
  const timer = setInterval(read, everyMs);
  return {
    stop(origin, windowMs) {
      clearInterval(timer);
      read();
      const perWindow = (s) => {
        const ms = new Map();
        for (let j = 1; j < s.length; j += 1) {
          const w = Math.floor((s[j][0] - origin) / windowMs);
          ms.set(w, (ms.get(w) ?? 0) + Math.max(0, s[j][1] - s[j - 1][1]) / 1e6);
        }
        return ms;
      };
      const windows = new Map(series.map((x) => [x.name, perWindow(x.samples)]));
      const own = series.map(({ name, less }) => {
        const ms = windows.get(name);
        if (!less) return { name, ms };
        const minus = windows.get(less);
        return { name, ms: new Map([...ms].map(([w, v]) => [w, v - (minus.get(w) ?? 0)])) };
      });
      return { others: chosen.map((p, i) => ({ ...p, ms: perWindow(samples[i]) })), own };
    },
  };
}
