import type { Context, Next } from 'koa';
import type { Logger } from '../log';
import { routeLabel, type Metrics } from '../metrics';

/** One line per request: no headers, no query string, no body — nothing that can hold a secret. */
export function requestLogger(logger: Logger, metrics: Metrics) {
  return async function logRequest(ctx: Context, next: Next): Promise<void> {
    const start = process.hrtime.bigint();
    ctx.res.once('finish', () => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      metrics.httpDuration.observe({ method: ctx.method, route: routeLabel(ctx.path, ctx._matchedRoute as string | undefined), status: String(ctx.res.statusCode) }, seconds);
      logger.info(
        {
          requestId: ctx.state.requestId,
          method: ctx.method,
          path: ctx.path,
          status: ctx.res.statusCode,
          ms: Number(process.hrtime.bigint() - start) / 1e6,
        },
        'request',
      );
    });
    await next();
  };
}
