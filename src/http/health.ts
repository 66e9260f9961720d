import Router from '@koa/router';
import type { Knex } from 'knex';
import type { Registry } from 'prom-client';

/** Liveness says the process runs; readiness says it can serve: not draining, database reachable. */
export function healthRoutes(deps: { knex: Knex; isDraining: () => boolean; metrics: Registry }): Router {
  const router = new Router();
  router.get('/metrics', async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.type = deps.metrics.contentType;
    ctx.body = await deps.metrics.metrics();
  });
  router.get('/healthz', (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    ctx.body = { status: 'ok' };
  });
  router.get('/readyz', async (ctx) => {
    ctx.set('Cache-Control', 'no-store');
    if (deps.isDraining()) {
      ctx.status = 503;
      ctx.body = { status: 'draining' };
      return;
    }
    try {
      // Reachable is not enough: a standby (what a failover can leave behind) or a database set
      // read-only answers every write with an error.
      const { rows } = (await deps.knex
        .raw("select pg_is_in_recovery() or current_setting('transaction_read_only') = 'on' as read_only")
        .timeout(2000, { cancel: false })) as { rows: Array<{ read_only: boolean }> };
      if (rows[0]?.read_only) {
        ctx.status = 503;
        ctx.set('Retry-After', '5');
        ctx.body = { status: 'unavailable', database: 'read-only' };
        return;
      }
      ctx.body = { status: 'ready', database: 'ok' };
    } catch {
      ctx.status = 503;
      ctx.set('Retry-After', '5');
      ctx.body = { status: 'unavailable', database: 'unreachable' };
    }
  });
  return router;
}
