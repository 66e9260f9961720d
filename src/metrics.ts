import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { NEVER_MS, eventLoopMetrics } from './metrics-event-loop';

/**
 * Prometheus metrics of one app (its own registry, so several apps can live in one process).
 * `eventLoopMonitorMs`: the config's (EVENT_LOOP_MONITOR_MS). `close()` stops the event-loop delay timer.
 */
export function createMetrics(opts: { eventLoopMonitorMs: number }) {
  const registry = new Registry();
  const prefix = 'portcullis_';
  // prom-client's process and heap metrics; its event-loop delay monitor never fires and its gauges
  // give way to ours (src/metrics-event-loop.ts), which report delay, not the sampling interval.
  collectDefaultMetrics({ register: registry, prefix, eventLoopMonitoringPrecision: NEVER_MS });
  const eventLoop = eventLoopMetrics(registry, prefix, opts.eventLoopMonitorMs);
  return {
    registry,
    close: () => eventLoop.close(),
    tokensIssued: new Counter({ name: 'portcullis_tokens_issued_total', help: 'Access tokens issued', labelNames: ['grant', 'tenant'], registers: [registry] }),
    failures: new Counter({ name: 'portcullis_oauth_failures_total', help: 'OAuth endpoint failures by endpoint and error', labelNames: ['endpoint', 'error'], registers: [registry] }),
    lockouts: new Counter({ name: 'portcullis_lockouts_total', help: 'Users locked after consecutive failed logins', labelNames: ['tenant'], registers: [registry] }),
    factorBlocks: new Counter({ name: 'portcullis_factor_blocks_total', help: 'Factor verification blocked after consecutive wrong codes', registers: [registry] }),
    sends: new Counter({ name: 'portcullis_messages_sent_total', help: 'SMS and push messages handed to the sender', labelNames: ['kind', 'sender'], registers: [registry] }),
    stepUps: new Counter({ name: 'portcullis_stepups_total', help: 'Successful step-ups (SCA tokens issued)', labelNames: ['channel', 'tenant'], registers: [registry] }),
    replays: new Counter({ name: 'portcullis_idempotent_replays_total', help: 'Requests answered from a stored idempotency-ref reply', registers: [registry] }),
    httpDuration: new Histogram({
      name: 'portcullis_http_request_duration_seconds',
      help: 'Request latency by route',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;

/** OAuth routes are few and fixed; anything unknown is folded, so labels stay bounded. */
const KNOWN = new Set(['/token', '/token/introspection', '/token/revocation', '/jwks', '/.well-known/openid-configuration', '/.well-known/oauth-authorization-server', '/v1/oauth/token', '/v1/token']);
export function routeLabel(path: string, matched?: string): string {
  if (matched) return matched;
  return KNOWN.has(path) ? path : 'other';
}
