import { createMetrics } from '../../src/metrics';

/** The value of one unlabelled sample in Prometheus text. */
function sample(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  if (!line) throw new Error(`${name} is not in the scrape`);
  return Number(line.slice(name.length + 1));
}

const lag = (stat: string) => `portcullis_nodejs_eventloop_lag_${stat}_seconds`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Holds the event loop, as a long synchronous computation would. */
function block(ms: number) {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    /* busy */
  }
}

describe('event-loop metrics', () => {
  const RESOLUTION = 40;

  test('an idle loop reads a delay near zero, not the sampling interval', async () => {
    const metrics = createMetrics({ eventLoopMonitorMs: RESOLUTION });
    try {
      await metrics.registry.metrics(); // a window of its own from here
      await sleep(RESOLUTION * 12);
      const text = await metrics.registry.metrics();
      // prom-client's histogram recorded each whole interval: p50 would be 40 ms or more.
      expect(sample(text, lag('p50'))).toBeLessThan(RESOLUTION / 2 / 1000);
      expect(sample(text, lag('min'))).toBeGreaterThanOrEqual(0);
      expect(text).toContain(`delay beyond its ${RESOLUTION} ms sampling interval`);
      // Each gauge once: prom-client's own were taken out of the registry.
      expect(text.split('\n').filter((l) => l.startsWith(`${lag('p99')} `))).toHaveLength(1);
    } finally {
      metrics.close();
    }
  });

  test('a stall shows in the delay gauges and in the busy time, and a scrape starts a new window', async () => {
    const metrics = createMetrics({ eventLoopMonitorMs: RESOLUTION });
    try {
      const before = sample(await metrics.registry.metrics(), 'portcullis_nodejs_eventloop_busy_seconds_total');
      await sleep(RESOLUTION * 2);
      block(300);
      await sleep(RESOLUTION * 3); // the late timer fires and records
      const text = await metrics.registry.metrics();
      // The timer due during the stall ran at least 300 − 40 ms late.
      expect(sample(text, lag('max'))).toBeGreaterThanOrEqual(0.25);
      expect(sample(text, lag('p99'))).toBeGreaterThanOrEqual(0.25);
      expect(sample(text, 'portcullis_nodejs_eventloop_busy_seconds_total') - before).toBeGreaterThanOrEqual(0.29);
      await sleep(RESOLUTION * 6);
      // The stall belongs to the previous window.
      expect(sample(await metrics.registry.metrics(), lag('max'))).toBeLessThan(0.25);
    } finally {
      metrics.close();
    }
  });

  test('closed, the monitor samples nothing more', async () => {
    const metrics = createMetrics({ eventLoopMonitorMs: 10 });
    await sleep(50);
    metrics.close();
    await metrics.registry.metrics();
    await sleep(50);
    const text = await metrics.registry.metrics();
    for (const stat of ['min', 'max', 'mean', 'p50', 'p99']) expect(sample(text, lag(stat))).toBe(0);
  });
});
