/**
 * Is this error the database being unreachable (down, restarting, pool exhausted) rather than a
 * bug? Such requests get 503 with Retry-After: the client may retry, and nothing is pretended.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  const e = err as { code?: unknown; name?: unknown; message?: unknown } | undefined;
  if (!e) return false;
  const code = typeof e.code === 'string' ? e.code : '';
  if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH'].includes(code)) return true;
  // PostgreSQL: connection exceptions (08…); shutdown, crash, a dropped database (57P01-57P04);
  // insufficient resources (53…: too many connections, disk full, out of memory); a database that
  // is read-only (25006: a standby a failover left us on), gone (3D000), or refusing connections
  // or our credentials (55000 at connect, 28…). Not a deadlock or a serialisation failure: those
  // are bugs of ours to see at error level (and the token adapter retries a batch lost to one).
  if (/^(08|53|28)/.test(code) || ['57P01', '57P02', '57P03', '57P04', '25006', '3D000'].includes(code)) return true;
  if (code === '55000' && /not currently accepting connections|does not allow connections/i.test(String(e.message ?? ''))) return true;
  if (e.name === 'KnexTimeoutError') return true;
  const message = typeof e.message === 'string' ? e.message : '';
  return /Connection terminated|connection is closed|Client has encountered a connection error|Timeout acquiring a connection/i.test(message);
}

export const RETRY_AFTER_SECONDS = 5;
