// Latency at a fixed load: requests are sent open-loop, evenly spaced at `rate` per second, and each
// one's latency is measured from the moment it was due, not from when a free connection sent it —
// so a server (or a load generator) that falls behind shows the wait in its percentiles.
//
// Why not autocannon's overallRate: autocannon lets each connection send its quota for the second
// back to back as soon as the second starts, then idles until the next. At "70 %" the server is
// saturated by every connection at once for ~0.7 s of each second, so the p99 is that of full load;
// and it corrects for coordinated omission with an interval of 1 ms whatever the rate, which adds a
// made-up sample for every millisecond of each slow reply. Neither is latency at 70 % of the maximum.
import { performance } from 'node:perf_hooks';
import http from 'node:http';

/**
 * Sends `rate × seconds` requests to `url`, the i-th due at start + i / rate, over at most
 * `connections` keep-alive connections (a request due while all are busy waits, and that wait is
 * part of its latency). Resolves to autocannon's result shape for the fields the bench reads.
 *
 * Like autocannon, it connects before it measures: `connections` requests at once open the
 * connections, then the schedule runs `warmup` seconds unmeasured (as wrk2 does), so neither
 * TCP handshakes nor the first second's cold paths count as the server's latency at this load.
 */
export async function paced(url, { rate, seconds, connections = 50, warmup = 1, method = 'GET', headers = {}, body }) {
  const target = new URL(url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const payload = body === undefined ? undefined : Buffer.from(body);
  const options = { agent, host: target.hostname, port: target.port, path: target.pathname + target.search, method, headers: payload ? { ...headers, 'content-length': String(payload.length) } : headers };
  /** One request; resolves to its status. */
  const request = () =>
    new Promise((resolve, reject) => {
      const req = http.request(options, (res) => {
        res.on('data', () => {});
        res.on('end', () => resolve(res.statusCode));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(payload);
    });
  await Promise.all(Array.from({ length: connections }, request));
  const skipped = Math.floor(rate * warmup);
  const total = skipped + Math.max(1, Math.floor(rate * seconds));
  const interval = 1000 / rate;
  const latencies = new Float64Array(total);
  let sent = 0;
  let finished = 0;
  let non2xx = 0;
  let errors = 0;
  const start = performance.now() + 20;

  return new Promise((resolve) => {
    const settle = (i, failed, status) => {
      latencies[i] = performance.now() - (start + i * interval);
      if (failed) errors += 1;
      else if (status >= 300) non2xx += 1;
      finished += 1;
      if (finished === total) done();
    };
    const send = (i) => request().then((status) => settle(i, false, status), () => settle(i, true));
    // Each tick sends every request that is due; timers fire at 1 ms granularity at best.
    const tick = () => {
      const now = performance.now();
      while (sent < total && start + sent * interval <= now) send(sent++);
      if (sent < total) setTimeout(tick, Math.max(0, start + sent * interval - performance.now()));
    };
    setTimeout(tick, 20);
    const done = () => {
      agent.destroy();
      if (process.env.PACED_TIMELINE) {
        // The worst latency of each 100 ms of the schedule, to tell steady queueing from stalls.
        const windows = new Map();
        latencies.forEach((ms, i) => { if (i >= skipped) { const w = Math.floor((i * interval) / 100); windows.set(w, Math.max(windows.get(w) ?? 0, ms)); } });
        console.log([...windows].filter(([, ms]) => ms > 20).map(([w, ms]) => `${(w / 10).toFixed(1)}s:${Math.round(ms)}`).join(' '));
      }
      const sorted = latencies.slice(skipped).sort();
      const at = (q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
      const round = (ms) => Math.round(ms * 10) / 10;
      const elapsed = (performance.now() - start) / 1000;
      resolve({
        requests: { average: total / elapsed, total: total + connections, measured: sorted.length },
        latency: { p50: round(at(0.5)), p99: round(at(0.99)), max: round(sorted[sorted.length - 1]) },
        non2xx, errors, timeouts: 0,
      });
    };
  });
}
