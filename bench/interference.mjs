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

/**
 * Starts sampling; `stop()` returns, for each process, its CPU milliseconds in each `windowMs`
 * window counted from `origin` (a performance.now() value), as { name, pid, ms: Map<window, ms> },
 * and, as `own`, the same for the groups of ownGroups (each summed over its processes), the
 * Node.js processes' other threads, the load generator, and the cores' interrupt, idle and steal
 * time. Processes started during the run are among the first list, named `+<name>`. Undefined where /proc cannot be read (not Linux).
 */
export function sampleOthers({ count = 3, everyMs = 10 } = {}) {
  let chosen;
  let own;
  try {
    chosen = busiestOthers(count);
    own = Object.entries(ownGroups()).map(([name, pids]) => ({ name, pids }));
    machineNs();
  } catch {
    return undefined;
  }
  const samples = chosen.map(() => []);
  const ownSamples = own.map(() => []);
  const idleSamples = [];
  const nodeAllSamples = []; // the Node.js processes' every thread: V8's compiler and GC helpers, libuv's pool
  const selfSamples = []; // this process, the load generator: all its threads (process.cpuUsage, µs)
  const stealSamples = [];
  const irqSamples = [];
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
    own.forEach((g, i) => {
      let ns = 0;
      let all = 0;
      for (const pid of g.pids) {
        try {
          ns += runNs(pid);
          if (g.name === 'node') all += allThreadsNs(pid);
        } catch { /* it ended: its time so far is lost, a step down that perWindow skips */ }
      }
      ownSamples[i].push([now, ns]);
      if (g.name === 'node') nodeAllSamples.push([now, all]);
    });
    const u = process.cpuUsage();
    selfSamples.push([now, (u.user + u.system) * 1000]);
    const m = machineNs();
    idleSamples.push([now, m.idle]);
    stealSamples.push([now, m.steal]);
    irqSamples.push([now, m.irq]);
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
      const result = chosen.map((p, i) => ({ ...p, ms: perWindow(samples[i]) }));
      result.own = own.map((g, i) => ({ name: g.name, ms: perWindow(ownSamples[i]) }));
      // The Node.js processes' threads besides their event loops (all threads' ticks less the
      // event loops' exact time: rough, and at times below zero by a part of a tick); the load
      // generator; and the cores' interrupt, idle and steal time (the hypervisor running something
      // else), in whole 10 ms ticks: rough per 100 ms window, but enough to tell a server that
      // waited from one kept off the cores, and by what.
      const all = perWindow(nodeAllSamples);
      const mainMs = result.own.find((g) => g.name === 'node')?.ms ?? new Map();
      const helpers = new Map([...all].map(([w, ms]) => [w, ms - (mainMs.get(w) ?? 0)]));
      result.own.push({ name: 'node-other-threads', ms: helpers }, { name: 'loadgen', ms: perWindow(selfSamples) }, { name: 'irq', ms: perWindow(irqSamples) }, { name: 'idle', ms: perWindow(idleSamples) }, { name: 'steal', ms: perWindow(stealSamples) });
      return result;
    },
  };
}
