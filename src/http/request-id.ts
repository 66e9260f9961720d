import { randomUUID } from 'node:crypto';
import type { Context, Next } from 'koa';

/**
 * Printable ASCII, up to 255 characters: any id a caller is likely to use (UUIDs, base64, paths,
 * "order 42"); not markup or quoting characters, which no id needs and a careless log viewer might
 * render. Nothing in it can break a header or a log line (pino writes it as a JSON string).
 */
const safeId = (v: string) => /^[\x20-\x7E]{1,255}$/.test(v) && !/[<>"'`\\]/.test(v);

/** Seed request-id headers: echoed back under their own name when the caller sends them. */
const ECHOED = [
  ['di_tid', 'di_tid'],
  ['transactionid', 'transactionId'],
  ['x-request-id', 'x-request-id'],
] as const;

/**
 * Takes the request id from `di_tid` (V1), `transactionId` (V2) or `x-request-id`, else makes one.
 * Only printable ASCII is echoed (Node refuses control characters in a header anyway).
 */
export function requestId(ctx: Context, next: Next): Promise<void> {
  let id: string | undefined;
  const headers = ctx.req.headers;
  for (const [incoming, outgoing] of ECHOED) {
    const value = headers[incoming];
    if (typeof value === 'string' && value && safeId(value)) {
      id ??= value;
      ctx.res.setHeader(outgoing, value);
    }
  }
  id ??= randomUUID();
  ctx.state.requestId = id;
  if (!ctx.res.hasHeader('x-request-id')) ctx.res.setHeader('x-request-id', id);
  return next(); // not async: nothing to do after it, so no promise of its own
}
