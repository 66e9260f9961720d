import { bodyParser } from '@koa/bodyparser';
import type { Context, Next } from 'koa';
import { AppError } from '../errors';

/** The path of the first string (value or key) holding U+0000, which PostgreSQL cannot store. */
function findNul(value: unknown, path: string): string | undefined {
  if (typeof value === 'string') return value.includes('\u0000') ? path : undefined;
  if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const p = path ? `${path}.${k}` : k;
      if (k.includes('\u0000')) return p;
      const found = findNul(v, p);
      if (found !== undefined) return found;
    }
  }
  return undefined;
}

/**
 * JSON bodies for our routes: at most `limit` bytes (413 beyond), well-formed JSON (400
 * otherwise), and nothing but JSON (415). A request without a body gets `{}`.
 */
export function jsonBody(limitBytes: number) {
  const parse = bodyParser({
    enableTypes: ['json'],
    jsonLimit: limitBytes,
    jsonStrict: true,
    onError(err: Error & { status?: number; type?: string }) {
      if (err.status === 413 || err.type === 'entity.too.large') throw new AppError('PAYLOAD_TOO_LARGE', 413, 'Request body is too large');
      throw AppError.validation([{ fieldName: 'body', error: 'is not valid JSON' }]);
    },
  });
  return async function parseJsonBody(ctx: Context, next: Next): Promise<void> {
    // PostgreSQL cannot store U+0000, nor compare with it: a path naming it names nothing, and a
    // query parameter holding it is invalid (else the database's refusal would be a 500).
    if (ctx.path.includes('\u0000') || /%00/.test(ctx.path)) throw new AppError('NOT_FOUND', 404, 'Not found');
    for (const [name, value] of Object.entries(ctx.query)) {
      if (name.includes('\u0000') || [value ?? ''].flat().some((v) => v.includes('\u0000'))) {
        throw AppError.validation([{ fieldName: name.replaceAll('\u0000', ''), error: 'must not contain NUL characters' }]);
      }
    }
    const hasBody = Number(ctx.get('content-length') || 0) > 0 || ctx.get('transfer-encoding') !== '';
    if (['POST', 'PUT', 'PATCH', 'DELETE'].includes(ctx.method) && hasBody) {
      if (!ctx.is('application/json')) throw new AppError('UNSUPPORTED_MEDIA_TYPE', 415, 'Request body must be application/json');
      const declared = Number(ctx.get('content-length') || 0);
      if (declared > limitBytes) throw new AppError('PAYLOAD_TOO_LARGE', 413, 'Request body is too large');
      await parse(ctx, async () => {});
      const body = (ctx.request as { body?: unknown }).body;
      if (body === null || typeof body !== 'object' || Array.isArray(body)) {
        throw AppError.validation([{ fieldName: 'body', error: 'must be a JSON object' }]);
      }
      const nul = findNul(body, '');
      if (nul !== undefined) throw AppError.validation([{ fieldName: nul || 'body', error: 'must not contain NUL characters' }]);
    } else {
      (ctx.request as { body?: unknown }).body = {};
    }
    await next();
  };
}
