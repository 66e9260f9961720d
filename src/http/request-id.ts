import { randomUUID } from 'node:crypto';
import type { Context, Next } from 'koa';

const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Seed request-id headers: echoed back under their own name when the caller sends them. */
const ECHOED = [
  ['di_tid', 'di_tid'],
  ['transactionid', 'transactionId'],
  ['x-request-id', 'x-request-id'],
] as const;

/**
 * Takes the request id from `di_tid` (V1), `transactionId` (V2) or `x-request-id`, else makes one.
 * Only a well-formed id is echoed, so a header can never be used to inject into the response.
 */
export async function requestId(ctx: Context, next: Next): Promise<void> {
  let id: string | undefined;
  for (const [incoming, outgoing] of ECHOED) {
    const value = ctx.get(incoming);
    if (value && SAFE_ID.test(value)) {
      id ??= value;
      ctx.res.setHeader(outgoing, value);
    }
  }
  id ??= randomUUID();
  ctx.state.requestId = id;
  if (!ctx.res.hasHeader('x-request-id')) ctx.res.setHeader('x-request-id', id);
  await next();
}
