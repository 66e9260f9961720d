import { monitorEventLoopDelay, performance, type EventLoopUtilization } from 'node:perf_hooks';
import { Counter, Gauge, type Registry } from 'prom-client';

/** The gauges of prom-client's event-loop delay histogram, which these replace (same names). */
export const EVENT_LOOP_LAG_GAUGES = ['min', 'max', 'mean', 'stddev', 'p50', 'p90', 'p99'] as const;

/**
 * A timer interval prom-client's own delay monitor is given so that it never fires (2^31 − 1 ms,
 * about 24.8 days: Node's delay histogram takes a 32-bit count of milliseconds). Its gauges are
 * taken out of the registry and these stand in for them.
 */
export const NEVER_MS = 2 ** 31 - 1;

/**
 * The event loop's delay and busy time, for /metrics.
 *
 * Delay: a timer every `resolutionMs` notes when it actually ran; the gauges report how much later
 * than due (min, max, mean, standard deviation, p50, p90, p99 since the previous scrape; 0 when
 * nothing was sampled). prom-client's monitor reports the whole interval instead, so an idle loop
 * sampled every 10 ms read a p50 "lag" of 10 ms; and its 100 wake-ups a second cost each process
 * 6–7 ms of CPU a second (bench/NOTES.md). A stall longer than the interval is seen, a shorter one in
 * proportion to its length (a 50 ms stall half the time at 100 ms); but not one that begins before
 * the first tick after a scrape, which only starts the new window (Node's reset forgets the last
 * tick's time), so up to one interval per scrape goes unwatched.
 *
 * Busy time: `…_eventloop_busy_seconds_total`, what the loop spent outside its wait for events
 * (Node's event-loop utilization, read from libuv at each scrape: no timer). Its rate() is the
 * loop's utilization, where saturation shows whatever the stalls' length.
 */
export function eventLoopMetrics(registry: Registry, prefix: string, resolutionMs: number): { close(): void } {
  const histogram = monitorEventLoopDelay({ resolution: resolutionMs });
  histogram.enable();
  const interval = resolutionMs * 1e6; // ns, as the histogram records
  const late = (ns: number) => Math.max(0, ns - interval) / 1e9;
  const values = (): Record<(typeof EVENT_LOOP_LAG_GAUGES)[number], number> => {
    if (histogram.count === 0) return { min: 0, max: 0, mean: 0, stddev: 0, p50: 0, p90: 0, p99: 0 };
    return {
      min: late(histogram.min),
      max: late(histogram.max),
      mean: late(histogram.mean),
      stddev: histogram.stddev / 1e9,
      p50: late(histogram.percentile(50)),
      p90: late(histogram.percentile(90)),
      p99: late(histogram.percentile(99)),
    };
  };
  // The first gauge's collect sets them all and starts the next window, as prom-client's does: a
  // scrape collects the metrics in the order they were registered, each before its value is read.
  const collectAll = () => {
    const v = values();
    histogram.reset();
    for (const { stat, gauge } of gauges) gauge.set(v[stat]);
  };
  const gauges = EVENT_LOOP_LAG_GAUGES.map((stat, i) => {
    const name = `${prefix}nodejs_eventloop_lag_${stat}_seconds`;
    registry.removeSingleMetric(name); // prom-client's, which reads the interval as delay
    const gauge = new Gauge({
      name,
      help: `Event loop delay beyond its ${resolutionMs} ms sampling interval since the previous scrape: ${stat === 'stddev' ? 'standard deviation' : stat}.`,
      registers: [registry],
      aggregator: stat === 'min' ? 'min' : stat === 'max' ? 'max' : 'average',
      ...(i === 0 ? { collect: collectAll } : {}),
    });
    return { stat, gauge };
  });

  let last: EventLoopUtilization = performance.eventLoopUtilization();
  new Counter({
    name: `${prefix}nodejs_eventloop_busy_seconds_total`,
    help: 'Time the event loop spent running callbacks rather than waiting for events; its rate is the loop’s utilization.',
    registers: [registry],
    collect() {
      const now = performance.eventLoopUtilization();
      const busy = (now.active - last.active) / 1000;
      last = now;
      if (busy > 0) this.inc(busy);
    },
  });

  return {
    close() {
      histogram.disable();
    },
  };
}
