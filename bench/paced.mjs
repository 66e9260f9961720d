// Latency at a fixed load: requests are sent open-loop, evenly spaced at `rate` per second, and each
// one's latency is measured from the moment it was due, not from when a free connection sent it —
// so a server (or a load generator) that falls behind shows the wait in its percentiles.
//
// Why not autocannon's overallRate: autocannon lets each connection send its quota for the second
// back to back as soon as the second starts, then idles until the next. At "70 %" the server is
// saturated by every connection at once for ~0.7 s of each second, so the p99 is that of full load;
// and it corrects for coordinated omission with an interval of 1 ms whatever the rate, which adds a
// made-up sample for every millisecond of each slow reply. Neither is latency at 70 % of the maximum.
//
// Why raw sockets and not node:http: the load generator shares the machine's cores with the server
// and its database. node:http's client cost 70–96 µs of CPU per request here (autocannon ~30), all
// of it taken from the server being measured. One request is always the same bytes, so it is
// written once, and a reply only needs its status and where it ends (Content-Length, or chunked).
import { performance } from 'node:perf_hooks';
import net from 'node:net';
import { sampleOthers } from './interference.mjs';

const CRLF2 = Buffer.from('\r\n\r\n');

/**
 * A keep-alive HTTP/1.1 connection that sends one request at a time and calls `onReply(status,
 * body)` when the whole reply has arrived (the body as sent: a chunked one with its chunk sizes),
 * or `onReply(undefined)` when the connection broke while a request was out (it is opened again
 * for the next one).
 */
class Connection {
  constructor(host, port, request) {
    Object.assign(this, { host, port, request, onReply: () => {}, stopped: false });
    this.open();
  }

  open() {
    const socket = net.connect({ host: this.host, port: this.port, noDelay: true });
    Object.assign(this, { socket, buffer: Buffer.alloc(0), busy: false });
    socket.on('data', (chunk) => this.read(chunk));
    socket.on('error', () => {}); // 'close' follows
    socket.on('close', () => {
      if (this.stopped || socket !== this.socket) return;
      const wasBusy = this.busy;
      this.open();
      if (wasBusy) this.onReply(undefined);
    });
  }

  stop() {
    this.stopped = true;
    this.socket.destroy();
  }

  send() {
    this.busy = true;
    this.socket.write(this.request);
  }

  read(chunk) {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    const headEnd = this.buffer.indexOf(CRLF2);
    if (headEnd < 0) return;
    const head = this.buffer.toString('latin1', 0, headEnd);
    const status = Number(head.slice(9, 12));
    const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
    let end;
    if (length) {
      end = headEnd + 4 + Number(length[1]);
      if (this.buffer.length < end) return;
    } else if (/\r\ntransfer-encoding:\s*chunked/i.test(head)) {
      end = chunkedEnd(this.buffer, headEnd + 4);
      if (end < 0) return;
    } else {
      throw new Error(`paced: a reply with neither Content-Length nor chunked encoding:\n${head}`);
    }
    const body = this.buffer.subarray(headEnd + 4, end);
    this.buffer = this.buffer.subarray(end);
    this.busy = false;
    // A server that ends the connection after this reply: the next request goes on a new one.
    if (/\r\nconnection:\s*close/i.test(head)) this.open();
    this.onReply(status, body);
  }
}

/** Where a chunked body that starts at `at` ends, or -1 when it has not all arrived. */
function chunkedEnd(buffer, at) {
  for (;;) {
    const lineEnd = buffer.indexOf('\r\n', at, 'latin1');
    if (lineEnd < 0) return -1;
    const size = parseInt(buffer.toString('latin1', at, lineEnd), 16);
    if (Number.isNaN(size)) throw new Error('paced: a malformed chunked reply');
    if (size === 0) {
      const end = buffer.indexOf(CRLF2, lineEnd);
      return end < 0 ? -1 : end + 4;
    }
    at = lineEnd + 2 + size + 2;
    if (at > buffer.length) return -1;
  }
}

/**
 * Sends `rate × seconds` requests to `url`, the i-th due at start + i / rate, over at most
 * `connections` keep-alive connections (a request due while all are busy waits, and that wait is
 * part of its latency). Resolves to autocannon's result shape for the fields the bench reads.
 *
 * Like autocannon, it connects before it measures: one request on each connection opens it, then
 * the schedule runs `warmup` seconds unmeasured (as wrk2 does), so neither TCP handshakes nor the
 * first second's cold paths count as the server's latency at this load.
 *
 * `expect`: a string every 2xx reply's body must contain (`"active":true` for introspection);
 * replies without it are counted as `unexpected`.
 */
export async function paced(url, { rate, seconds, connections = 50, warmup = 1, method = 'GET', headers = {}, body, expect }) {
  const target = new URL(url);
  const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(body);
  const head = [`${method} ${target.pathname}${target.search} HTTP/1.1`, `host: ${target.host}`, 'connection: keep-alive'];
  for (const [name, value] of Object.entries(headers)) head.push(`${name}: ${value}`);
  if (body !== undefined) head.push(`content-length: ${payload.length}`);
  const request = Buffer.concat([Buffer.from(`${head.join('\r\n')}\r\n\r\n`, 'latin1'), payload]);

  const skipped = Math.floor(rate * warmup);
  const total = skipped + Math.max(1, Math.floor(rate * seconds));
  const interval = 1000 / rate;
  const latencies = new Float64Array(total);
  const sendLag = new Float64Array(total); // how late this process sent each request (its own event loop's delay)
  let sent = 0;
  let finished = 0;
  let non2xx = 0;
  let unexpected = 0; // 2xx replies whose body lacks `expect`
  const expected = expect === undefined ? undefined : Buffer.from(expect);
  let errors = 0;
  let start = 0;
  let done = () => {};
  // Requests due while no connection is free wait in order. Free connections are taken oldest
  // first, so the load spreads over all of them — and so over every worker they were accepted by.
  const waiting = [];
  let nextWaiting = 0;
  const idle = [];
  let nextIdle = 0;

  const dispatch = (connection, i) => {
    connection.carrying = i;
    connection.send();
  };
  const onReply = (connection, status, reply) => {
    const i = connection.carrying;
    latencies[i] = performance.now() - (start + i * interval);
    if (status === undefined) errors += 1;
    else if (status >= 300) non2xx += 1;
    else if (expected && reply.indexOf(expected) < 0) unexpected += 1;
    finished += 1;
    if (nextWaiting < waiting.length) dispatch(connection, waiting[nextWaiting++]);
    else idle.push(connection);
    if (finished === total) done();
  };
  const pool = [];

  // Open the connections one after another, each with one request, before the schedule starts.
  // One at a time, because the cluster's round robin hands a new connection to whichever worker
  // acknowledged its last one first: a burst of 50 connects lands unevenly (18 and 32 were seen), and
  // over keep-alive connections that skew would load one worker more for the whole run.
  while (pool.length < connections) {
    const c = new Connection(target.hostname, target.port, request);
    pool.push(c);
    await new Promise((resolve, reject) => {
      c.onReply = (status) => (status === undefined ? reject(new Error(`paced: could not reach ${url}`)) : resolve());
      c.send();
    });
  }
  for (const c of pool) c.onReply = (status, reply) => onReply(c, status, reply);
  idle.push(...pool);

  start = performance.now() + 20;
  // With the timeline: what other processes ran meanwhile (bench/interference.mjs).
  const others = process.env.PACED_TIMELINE ? sampleOthers() : undefined;
  return new Promise((resolve) => {
    // Each tick sends every request that is due; timers fire at 1 ms granularity at best.
    const tick = () => {
      const now = performance.now();
      while (sent < total && start + sent * interval <= now) {
        sendLag[sent] = now - (start + sent * interval);
        if (nextIdle < idle.length) dispatch(idle[nextIdle++], sent);
        else waiting.push(sent);
        sent += 1;
      }
      if (sent < total) setTimeout(tick, Math.max(0, start + sent * interval - performance.now()));
    };
    setTimeout(tick, 20);
    done = () => {
      for (const c of pool) c.stop();
      if (process.env.PACED_TIMELINE) {
        // The worst latency of each 100 ms of the schedule, to tell steady queueing from stalls.
        // With each, the worst delay of this process's own sending (its timers or GC, not the server's).
        const windows = new Map();
        latencies.forEach((ms, i) => {
          if (i < skipped) return;
          const w = Math.floor((i * interval) / 100);
          const [worst, lag] = windows.get(w) ?? [0, 0];
          windows.set(w, [Math.max(worst, ms), Math.max(lag, sendLag[i])]);
        });
        const epoch = Date.now() - (performance.now() - start); // the schedule's start, for lining up with other logs
        console.log(`schedule started at ${new Date(epoch).toISOString()} (${Math.round(epoch)}); windows over 20 ms (worst latency/worst send lag):`);
        // Each late window with the CPU other processes took in it and the next one (a request due
        // late in a window waits for a burst that begins in the next): ` kdamond.0 24` after it.
        const sampled = others?.stop(start, 100);
        const seen = sampled?.others ?? [];
        const near = (w) => seen.map((o) => [o.name, (o.ms.get(w) ?? 0) + (o.ms.get(w + 1) ?? 0)]).filter(([, ms]) => ms >= 5);
        const late = [...windows].filter(([, [ms]]) => ms > 20);
        // And where the window's CPU went (two cores: at most 200 ms in 100), in brackets: the
        // servers' event loops, PostgreSQL, Node's other threads, the load generator, and the
        // cores' interrupt, idle and steal time (bench/interference.mjs): ` [node 170 pg 25 …]`.
        const own = (w) => sampled.own.map((g) => `${g.name} ${Math.round(g.ms.get(w) ?? 0)}`).join(' ');
        console.log(late.map(([w, [ms, lag]]) => `${(w / 10).toFixed(1)}s:${Math.round(ms)}/${Math.round(lag)}${near(w).map(([n, t]) => ` ${n} ${Math.round(t)}`).join('')}${sampled ? ` [${own(w)}]` : ''}`).join(' '));
        if (seen.length) {
          const all = [...windows.keys()];
          const share = (ws) => (ws.length ? `${ws.filter((w) => near(w).length).length} of ${ws.length}` : 'none');
          const seconds = (performance.now() - start) / 1000;
          console.log(
            `other processes (the busiest before the run, and + those started during it that took 5 ms or more): ${seen
              .map((o) => [o.name, [...o.ms.values()].reduce((a, b) => a + b, 0)])
              .filter(([name, ms]) => !name.startsWith('+') || ms >= 5)
              .map(([name, ms]) => `${name} ${Math.round(ms / seconds)} ms/s`)
              .join(', ')}; ` +
              `windows with 5 ms or more of them in it or the next: late ${share(late.map(([w]) => w))}, all ${share(all)}` +
              `; where the CPU went: ${sampled.own.map((g) => `${g.name} ${Math.round([...g.ms.values()].reduce((a, b) => a + b, 0) / seconds)} ms/s`).join(', ')}`,
          );
        }
      }
      const sorted = latencies.slice(skipped).sort();
      const at = (q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
      const round = (ms) => Math.round(ms * 10) / 10;
      const elapsed = (performance.now() - start) / 1000;
      resolve({
        requests: { average: total / elapsed, total: total + connections, measured: sorted.length },
        latency: { p50: round(at(0.5)), p99: round(at(0.99)), max: round(sorted[sorted.length - 1]) },
        non2xx, unexpected, errors, timeouts: 0,
      });
    };
  });
}
