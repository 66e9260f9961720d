import type { Knex } from 'knex';
import { RateLimiterMemory, RateLimiterPostgres, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';

/**
 * Per-IP throttling of failed logins. Every attempt takes a point before the password is
 * evaluated — so parallel attempts cannot overrun the budget — and a successful login gives its
 * point back, so successful traffic is never slowed. Out of points: 429 with Retry-After, before
 * any password is evaluated. On PostgreSQL the counters live in the database and are shared by
 * every process; the embedded database serves a single process, so memory is the same thing there.
 */
export interface LoginThrottle {
  /** Takes a point: 0 when the address may try, else the seconds to wait. */
  attempt(ip: string): Promise<number>;
  /** The attempt succeeded: its point is returned. */
  succeeded(ip: string): Promise<void>;
}

export function createLoginThrottle(opts: { knex?: Knex; failures: number; windowSeconds: number }): LoginThrottle {
  const common = { keyPrefix: 'login_ip', points: opts.failures, duration: opts.windowSeconds };
  const limiter: RateLimiterAbstract = opts.knex
    ? new RateLimiterPostgres({ ...common, storeClient: opts.knex, storeType: 'knex', tableName: 'rate_limits', tableCreated: true, clearExpiredByTimeout: false })
    : new RateLimiterMemory(common);
  return {
    async attempt(ip) {
      try {
        await limiter.consume(ip, 1);
        return 0;
      } catch (res) {
        if (res instanceof RateLimiterRes) return Math.max(1, Math.ceil(res.msBeforeNext / 1000));
        throw res;
      }
    },
    async succeeded(ip) {
      await limiter.reward(ip, 1);
    },
  };
}

/** Removes expired rate-limit windows (the PostgreSQL store keeps them until swept). */
export async function sweepRateLimits(knex: Knex): Promise<void> {
  await knex('rate_limits').where('expire', '<', Date.now()).del();
}
