import { bodyParser } from '@koa/bodyparser';
import type { Context, Next } from 'koa';
import { AppError } from '../errors';
import { textProblem } from '../text';

/** Deeper than any body of ours nests (step-up transaction details are the deepest, a few levels). */
export const MAX_BODY_DEPTH = 32;

/**
 * The path of the first string (value or key, in document order) that PostgreSQL cannot store
 * (`textProblem`), and why; or `tooDeep` when objects and arrays nest more than MAX_BODY_DEPTH
 * levels. A walk with its own stack: JSON.parse reads thousands of levels in a few kilobytes, which
 * a recursive walk (here, or the idempotency hash's) would answer with a stack overflow, a 500.
 */
function inspectBody(body: object): { path: string; error: string } | { tooDeep: true } | undefined {
  const stack: Array<{ value: unknown; path: string; depth: number; key?: string }> = [{ value: body, path: '', depth: 0 }];
  for (let item = stack.pop(); item; item = stack.pop()) {
    const { value, path, depth, key } = item;
    const keyProblem = key === undefined ? undefined : textProblem(key);
    if (keyProblem) return { path, error: keyProblem };
    if (typeof value === 'string') {
      const error = textProblem(value);
      if (error) return { path, error };
    } else if (value && typeof value === 'object') {
      if (depth >= MAX_BODY_DEPTH) return { tooDeep: true };
      const entries = Object.entries(value);
      // Pushed last to first, so popped in document order (the first problem found is named).
      for (let i = entries.length - 1; i >= 0; i -= 1) {
        const [k, v] = entries[i]!;
        stack.push({ value: v, path: path ? `${path}.${k}` : k, depth: depth + 1, key: k });
      }
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
    // Any JSON is parsed, so that `null` or `42` is told it must be an object (below), not that it is not JSON.
    jsonStrict: false,
    onError(err: Error & { status?: number; type?: string }) {
      if (err.status === 413 || err.type === 'entity.too.large') throw new AppError('PAYLOAD_TOO_LARGE', 413, 'Request body is too large');
      // The parser refuses a "__proto__" key (prototype poisoning): valid JSON, so not called invalid.
      if (/forbidden prototype property/.test(err.message)) throw AppError.validation([{ fieldName: 'body', error: 'must not contain a "__proto__" key' }]);
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
      // JSON exchanged between systems is UTF-8 (RFC 8259 §8.1): a body declared in another
      // charset would be read as UTF-8 anyway, and mean something else.
      const charset = ctx.request.charset;
      if (charset && !['utf-8', 'utf8'].includes(charset.toLowerCase())) {
        throw new AppError('UNSUPPORTED_MEDIA_TYPE', 415, 'Request body must be application/json in UTF-8');
      }
      const declared = Number(ctx.get('content-length') || 0);
      if (declared > limitBytes) throw new AppError('PAYLOAD_TOO_LARGE', 413, 'Request body is too large');
      await parse(ctx, async () => {});
      // An empty body sent chunked parses as '' (no length declared it empty): no body, as without
      // one. A body that is the JSON string "" is not that, and must be an object like any other.
      const request = ctx.request as { body?: unknown; rawBody?: string };
      if (request.body === '' && (request.rawBody ?? '').trim() === '') request.body = {};
      const body = (ctx.request as { body?: unknown }).body;
      if (body === null || typeof body !== 'object' || Array.isArray(body)) {
        throw AppError.validation([{ fieldName: 'body', error: 'must be a JSON object' }]);
      }
      const found = inspectBody(body);
      if (found && 'tooDeep' in found) throw AppError.validation([{ fieldName: 'body', error: `must not nest more than ${MAX_BODY_DEPTH} levels deep` }]);
      if (found) throw AppError.validation([{ fieldName: found.path || 'body', error: found.error }]);
    } else {
      (ctx.request as { body?: unknown }).body = {};
    }
    await next();
  };
}
