import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import { AppError } from '../errors';
import type { TxContext } from '../db/tx';
import type { IdempotencyKey, IdempotencyRepository } from '../idempotency/repository';

const REF = /^[\x21-\x7E]{1,255}$/;
const TTL_SECONDS = 24 * 3600;
/** An in-flight record older than this belongs to a request that died with its process. */
const ABANDONED_MS = 300_000;

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** The request a ref was first used with, as a stored record names it. */
const HASH_PREFIX = 'h1.';

/**
 * What a record stores of its request: an HMAC under a key derived from SECRETS_KEY, never a plain
 * digest. The bodies hashed hold passwords (a registration's) and one-time codes; a plain SHA-256 of
 * them, kept 24 hours beside the bcrypt hash, would be a fast hash of the password, and a code's
 * million values fall to it in seconds.
 */
function requestHashOf(key: Buffer, text: string): string {
  return HASH_PREFIX + createHmac('sha256', key).update(text).digest('base64url');
}

/**
 * Whether a stored record was made by this request's text. A record stored before the HMAC (a
 * plain SHA-256, no prefix) is compared the old way, so that a retry across the upgrade still gets
 * its reply; such records are never written again, and are gone within 24 hours.
 */
function sameRequest(stored: string, hash: string, text: string): boolean {
  const mine = stored.startsWith(HASH_PREFIX) ? hash : createHash('sha256').update(text).digest('base64url');
  const [a, b] = [Buffer.from(stored), Buffer.from(mine)];
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * A write that settles a claimed ref (freeing it, or marking its reply done). When it fails — the
 * database away, the likely reason the request failed — it is tried again in the background,
 * backing off, until the record would count as abandoned anyway: else a client retrying after
 * `Retry-After` would get 409 in-flight for five minutes after the database came back. Each write
 * names the claim (its `locked_at`), so a late one never touches a request that took over.
 */
export function releaseWhenPossible(settle: () => Promise<void>, giveUpAt = Date.now() + ABANDONED_MS, delayMs = 500): Promise<void> {
  return settle().catch(() => {
    if (Date.now() + delayMs > giveUpAt) return;
    setTimeout(() => void releaseWhenPossible(settle, giveUpAt, Math.min(delayMs * 2, 10_000)), delayMs).unref();
  });
}

const BEFORE_TRANSACTION = Symbol('before the idempotency transaction');
/** Where outsideTransaction keeps its hand-off on a request: keys no other middleware can name. */
const symbols = (ctx: Context) => ctx.state as Record<symbol, unknown>;

/**
 * For a route whose work before it writes is slow and touches no data, such as a password's bcrypt
 * hash: with an idempotency-ref the rest of the request runs in one transaction (below), and work
 * done inside it holds the transaction's connection (the embedded database's only one) all along.
 * `middleware` goes before the idempotency middleware, which then runs `prepare` after claiming the
 * ref and before opening the transaction: only for a request that will run, never for a replay or
 * a 409, and a refusal there frees the ref. `result(ctx)` is what it prepared; without a ref, the
 * route's handler prepares there (no transaction is open then).
 */
export function outsideTransaction<T>(prepare: (ctx: Context) => Promise<T>): {
  middleware: (ctx: Context, next: Next) => Promise<void>;
  result: (ctx: Context) => Promise<T>;
} {
  const done = Symbol('prepared');
  return {
    async middleware(ctx, next) {
      symbols(ctx)[BEFORE_TRANSACTION] = async () => {
        symbols(ctx)[done] = { value: await prepare(ctx) };
      };
      await next();
    },
    async result(ctx) {
      const prepared = symbols(ctx)[done] as { value: T } | undefined;
      return prepared ? prepared.value : prepare(ctx);
    },
  };
}

/**
 * `idempotency-ref` (seed 001) on a POST, scoped to tenant + caller, kept 24 h:
 * - first time: the request runs in one transaction with the record of its reply;
 * - same ref and payload again: the stored reply, nothing done twice;
 * - same ref, other payload: 409; same ref while the first is still running: 409.
 * Only successful replies are stored; a failed request releases the ref. An AppError (a refused
 * request) commits what the service wrote deliberately — failure counters, audit — and nothing else
 * was written before it; any other error rolls everything back.
 */
export function idempotency(deps: {
  repo: IdempotencyRepository;
  tx: TxContext;
  clock: () => Date;
  scope: (ctx: Context) => { tenantId: string; caller: string };
  /** The key of the stored requests' HMACs (requestHashOf). */
  hashKey: Buffer;
  onReplay?: () => void;
}) {
  return async function idempotent(ctx: Context, next: Next): Promise<void> {
    const ref = ctx.get('idempotency-ref');
    if (ctx.method !== 'POST' || !ref) {
      await next();
      return;
    }
    if (!REF.test(ref)) throw AppError.validation([{ fieldName: 'idempotency-ref', error: 'must be 1 to 255 printable ASCII characters' }]);
    const key: IdempotencyKey = { ...deps.scope(ctx), ref };
    const requestText = `${ctx.method} ${ctx.path}\n${canonical((ctx.request as { body?: unknown }).body ?? {})}`;
    const requestHash = requestHashOf(deps.hashKey, requestText);
    const now = deps.clock();

    if (!(await deps.repo.claim(key, requestHash, now, TTL_SECONDS))) {
      const existing = await deps.repo.find(key);
      const expired = existing && existing.expiresAt <= now;
      const abandoned = existing?.state === 'in_flight' && now.getTime() - existing.lockedAt.getTime() > ABANDONED_MS;
      if (existing && !expired && !abandoned) {
        if (!sameRequest(existing.requestHash, requestHash, requestText)) throw new AppError('IDEMPOTENCY_CONFLICT', 409, 'idempotency-ref was already used with another request');
        if (existing.state === 'in_flight') throw new AppError('IDEMPOTENCY_IN_FLIGHT', 409, 'A request with this idempotency-ref is still in progress');
        ctx.status = existing.responseStatus ?? 200;
        ctx.set('Idempotent-Replayed', 'true');
        deps.onReplay?.();
        ctx.set('Cache-Control', 'no-store');
        if (existing.responseBody !== null && existing.responseBody !== undefined) ctx.body = existing.responseBody;
        return;
      }
      if (!existing || !(await deps.repo.takeOver(key, requestHash, existing.lockedAt, now, TTL_SECONDS))) {
        throw new AppError('IDEMPOTENCY_IN_FLIGHT', 409, 'A request with this idempotency-ref is still in progress');
      }
    }

    const prepare = symbols(ctx)[BEFORE_TRANSACTION] as (() => Promise<void>) | undefined;
    if (prepare) {
      try {
        await prepare();
      } catch (err) {
        await releaseWhenPossible(() => deps.repo.release(key, now)); // nothing was written: the ref is free again
        throw err;
      }
    }

    let refused: unknown;
    // A request whose work goes on after the commit (a message to send): its reply is stored in
    // the transaction but stays in flight, replays waiting, until that work has succeeded.
    let afterwards = false;
    try {
      await deps.tx.transaction(async () => {
        try {
          await next();
        } catch (err) {
          if (err instanceof AppError && err.status < 500) {
            refused = err;
            await deps.repo.release(key, now);
            return; // commit the deliberate writes (counters, audit)
          }
          throw err;
        }
        if (ctx.status >= 200 && ctx.status < 300) {
          afterwards = deps.tx.hasAfterCommit();
          await deps.repo.complete(key, ctx.status, ctx.body, { done: !afterwards });
        } else await deps.repo.release(key, now);
      });
    } catch (err) {
      await releaseWhenPossible(() => deps.repo.release(key, now));
      throw err;
    }
    if (afterwards) await releaseWhenPossible(() => deps.repo.finish(key, now));
    if (refused) throw refused;
  };
}
