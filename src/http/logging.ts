import type { Context, Next } from 'koa';
import type { Logger } from '../log';
import { routeLabel, type Metrics } from '../metrics';

/** One line per request: no headers, no query string, no body — nothing that can hold a secret. */
export function requestLogger(logger: Logger, metrics: Metrics) {
  // Not async (it only registers a listener), and the line's fields are gathered only when info
  // lines are written: every request passes here, and production logs at warn.
  return function logRequest(ctx: Context, next: Next): Promise<void> {
    const start = performance.now();
    ctx.res.once('finish', () => {
      const ms = performance.now() - start;
      metrics.httpDuration.observe({ method: ctx.method, route: routeLabel(ctx.path, ctx._matchedRoute as string | undefined), status: String(ctx.res.statusCode) }, ms / 1e3);
      if (logger.isLevelEnabled('info')) {
        logger.info({ requestId: ctx.state.requestId, method: ctx.method, path: ctx.path, status: ctx.res.statusCode, ms }, 'request');
      }
    });
    return next();
  };
}
