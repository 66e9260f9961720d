/**
 * Is this error the database being unreachable (down, restarting, pool exhausted) rather than a
 * bug? Such requests get 503 with Retry-After: the client may retry, and nothing is pretended.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  const e = err as { code?: unknown; name?: unknown; message?: unknown } | undefined;
  if (!e) return false;
  const code = typeof e.code === 'string' ? e.code : '';
  if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH'].includes(code)) return true;
  // PostgreSQL: connection exceptions (08…), shutdown / crash (57P01-57P03), too many connections.
  if (/^08/.test(code) || ['57P01', '57P02', '57P03', '53300'].includes(code)) return true;
  if (e.name === 'KnexTimeoutError') return true;
  const message = typeof e.message === 'string' ? e.message : '';
  return /Connection terminated|connection is closed|Client has encountered a connection error|Timeout acquiring a connection/i.test(message);
}

export const RETRY_AFTER_SECONDS = 5;
