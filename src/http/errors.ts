import type { Context, Next } from 'koa';
import { AppError } from '../errors';
import type { Logger } from '../log';
import { isDatabaseUnavailable, RETRY_AFTER_SECONDS } from '../db/unavailable';
import { bearerChallenge } from './challenge';

/**
 * Renders errors of our own routes: AppError as `{message, code}` (validation as
 * `{message, syntaxErrors: {invalidFields}}`); anything else is logged and answered with a
 * generic 500. Never a stack trace.
 */
export function errorHandler(logger: Logger, realm: string) {
  return async function handleErrors(ctx: Context, next: Next): Promise<void> {
    try {
      await next();
    } catch (err) {
      ctx.set('Cache-Control', 'no-store');
      if (err instanceof AppError) {
        ctx.status = err.status;
        for (const [k, v] of Object.entries(err.headers ?? {})) ctx.set(k, v);
        if (err.insufficientScope) {
          ctx.set('WWW-Authenticate', bearerChallenge(realm, { error: 'insufficient_scope', scope: err.insufficientScope.scope || undefined }));
        }
        ctx.body = err.invalidFields
          ? { message: err.message, syntaxErrors: { invalidFields: err.invalidFields } }
          : { message: err.message, code: err.code };
        return;
      }
      const e = err as { status?: number; statusCode?: number; expose?: boolean; type?: string };
      const status = e.status ?? e.statusCode;
      if (status === 413) {
        ctx.status = 413;
        ctx.body = { message: 'Request body is too large', code: 'PAYLOAD_TOO_LARGE' };
        return;
      }
      if (status && status >= 400 && status < 500) {
        ctx.status = status;
        ctx.body = { message: status === 415 ? 'Unsupported content type' : 'Request is invalid', code: status === 415 ? 'UNSUPPORTED_MEDIA_TYPE' : 'BAD_REQUEST' };
        return;
      }
      if (isDatabaseUnavailable(err)) {
        logger.warn({ err, requestId: ctx.state.requestId }, 'database unavailable');
        ctx.status = 503;
        ctx.set('Retry-After', String(RETRY_AFTER_SECONDS));
        ctx.body = { message: 'Service temporarily unavailable; try again later', code: 'UNAVAILABLE' };
        return;
      }
      logger.error({ err, requestId: ctx.state.requestId }, 'unhandled error');
      ctx.status = 500;
      ctx.body = { message: 'Internal server error', code: 'INTERNAL_ERROR' };
    }
  };
}
