import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import type { Knex } from 'knex';
import { deleteInBatches } from '../db/sweep';

/**
 * Per-IP throttling of failed logins. Every attempt takes a point before the password is
 * evaluated — so parallel attempts cannot overrun the budget — and a successful login gives its
 * point back, so successes never use up the budget. Out of points: 429 with Retry-After, before
 * any password is evaluated (a right one too).
 *
 * The counters live in the database (table `rate_limits`, shared by every process), and are taken
 * and given back inside the login's own statements (src/users/repository.ts: beginLogin; and
 * src/users/login-end.ts, with the session's INSERT): a login costs no round trip of its own for
 * them. Rows have the shape of rate-limiter-flexible's PostgreSQL store, which the send caps use
 * on PostgreSQL: key `login_ip:<address>` (or `login_ip:#<digest>`, below), points, and the
 * window's end in epoch milliseconds; one sweep clears both. A success's point goes back to the
 * window it was taken in, while that runs, never below zero; a later window never counted it, and
 * gets nothing.
 */
export interface LoginThrottle {
  /** The counter's row. */
  key(ip: string): string;
  /** Attempts an address may have counted in a window (failures, and logins still running). */
  readonly limit: number;
  readonly windowMs: number;
  /** Epoch milliseconds (the app's clock: tests move it instead of sleeping). */
  now(): number;
}

export function createLoginThrottle(opts: { failures: number; windowSeconds: number; clock?: () => Date }): LoginThrottle {
  const clock = opts.clock ?? (() => new Date());
  return {
    // An address as it is; anything else (a proxy passing on what its client wrote, with
    // TRUST_PROXY) by a digest of it: any length fits the row's key, and each value keeps its own.
    // An IPv6 address with a zone (`fe80::1%…`) is an address to isIP whatever the zone's length:
    // digested too.
    key: (ip) => (isIP(ip) && !ip.includes('%') ? `login_ip:${ip}` : `login_ip:#${createHash('sha256').update(ip).digest('base64url')}`),
    limit: opts.failures,
    windowMs: opts.windowSeconds * 1000,
    now: () => clock().getTime(),
  };
}

/** Removes expired rate-limit windows (kept until swept). */
export async function sweepRateLimits(knex: Knex): Promise<void> {
  await deleteInBatches(knex, 'rate_limits', 'expire < ?', [Date.now()]);
}
