import type { Knex } from 'knex';
import { RateLimiterMemory, RateLimiterPostgres, type RateLimiterAbstract } from 'rate-limiter-flexible';
import { AppError } from '../errors';

/**
 * Hourly send caps (per mobile number, per user) against SMS pumping and push bombing. The caps
 * are tenant policy, so the counters count freely and each check compares with the current cap.
 * PostgreSQL-backed when there is PostgreSQL (shared by every process).
 */
export interface SendCaps {
  /** Counts one send against every key; throws 429 (and counts nothing) when any cap is reached. */
  take(keys: Array<{ key: string; cap: number }>): Promise<void>;
}

export function createSendCaps(knex: Knex | undefined): SendCaps {
  const opts = { keyPrefix: 'send', points: 1_000_000, duration: 3600 };
  const limiter: RateLimiterAbstract = knex
    ? new RateLimiterPostgres({ ...opts, storeClient: knex, storeType: 'knex', tableName: 'rate_limits', tableCreated: true, clearExpiredByTimeout: false })
    : new RateLimiterMemory(opts);
  return {
    async take(keys) {
      const taken: string[] = [];
      for (const { key, cap } of keys) {
        const res = await limiter.consume(key, 1);
        taken.push(key);
        if (res.consumedPoints > cap) {
          await Promise.all(taken.map((k) => limiter.reward(k, 1)));
          const retry = Math.max(1, Math.ceil(res.msBeforeNext / 1000));
          throw new AppError('TOO_MANY_REQUESTS', 429, 'Too many messages sent; try again later', undefined, { 'Retry-After': String(retry) });
        }
      }
    },
  };
}
