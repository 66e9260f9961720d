import Router from '@koa/router';
import type { Knex } from 'knex';
import type { Registry } from 'prom-client';

/** How long /readyz waits for the database, a connection of the pool included, before it says 503. */
export const READY_CHECK_MS = 2000;

/** `work`, or a rejection once `ms` have passed (the work goes on, its outcome ignored). */
async function within<T>(work: PromiseLike<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Liveness says the process runs; readiness says it can serve: not draining, database reachable. */
export function healthRoutes(deps: { knex: Knex; isDraining: () => boolean; metrics: Registry }): Router {
  const router = new Router();
  // The check under way, shared by the probes that come while it waits: a probe that gave up still
  // waits in the pool's queue for a connection, and one each would put a line of them ahead of the
  // requests once a connection frees.
  let checking: Promise<boolean> | undefined;
  const readOnly = () =>
    (checking ??= Promise.resolve(
      deps.knex.raw("select pg_is_in_recovery() or current_setting('transaction_read_only') = 'on' as read_only").timeout(READY_CHECK_MS, { cancel: false }),
    )
      .then((r) => (r as { rows: Array<{ read_only: boolean }> }).rows[0]?.read_only === true)
      .finally(() => {
        checking = undefined;
      }));
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
      // read-only answers every write with an error. The wait covers the pool's too: knex's own
      // timeout starts once a connection is out, and a pool whose connections are all held (or
      // that cannot open one) would keep the probe for its acquire timeout, 10 s.
      if (await within(readOnly(), READY_CHECK_MS)) {
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
