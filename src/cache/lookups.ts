import type { Knex } from 'knex';
import { Client as PgClient } from 'pg';
import type { Logger } from '../log';

/**
 * Short-lived caches of the rows every token request reads: the client and the tenant. They are
 * what made client_credentials and introspection cost three and four round trips each.
 *
 * Never tokens: whether a token is active (revoked, consumed, expired) is always read from the
 * database. A change of a client or a tenant (disabled, scopes, secret rotated, policy) reaches
 * every process at its commit: the writer sends `pg_notify` inside its own transaction and each
 * process listens on a connection of its own and evicts. The TTL only bounds what a lost
 * notification could cost. While a process is not listening (connecting, or its listener
 * connection broke) it does not cache at all.
 */

export const CHANGES_CHANNEL = 'portcullis_changes';
export type CachedKind = 'client' | 'tenant';

export interface LookupCache<V> {
  /** The cached value of `id`, or `load(id)` (remembered when it found something). */
  get(id: string, load: (id: string) => Promise<V | undefined>): Promise<V | undefined>;
  evict(id: string): void;
  clear(): void;
  readonly size: number;
}

interface Entry<V> {
  value: V;
  until: number;
}

/**
 * A bounded TTL map. Misses are not remembered (unknown ids cost what they cost, and cannot fill
 * memory). A load that was under way when its id was evicted is not remembered either: it may
 * have read the row from before the change.
 */
export function createLookupCache<V>(opts: { ttlMs: number; maxEntries: number; enabled: () => boolean; now?: () => number }): LookupCache<V> {
  const now = opts.now ?? (() => Date.now());
  const entries = new Map<string, Entry<V>>();
  const generation = new Map<string, number>();
  let epoch = 0; // bumped by clear(): loads begun before it are not remembered
  return {
    async get(id, load) {
      if (opts.ttlMs <= 0 || !opts.enabled()) return load(id);
      const hit = entries.get(id);
      if (hit && hit.until > now()) return hit.value;
      if (hit) entries.delete(id);
      const gen = generation.get(id) ?? 0;
      const startEpoch = epoch;
      const value = await load(id);
      if (value !== undefined && opts.enabled() && startEpoch === epoch && (generation.get(id) ?? 0) === gen) {
        if (entries.size >= opts.maxEntries) entries.delete(entries.keys().next().value as string);
        entries.set(id, { value, until: now() + opts.ttlMs });
      }
      return value;
    },
    evict(id) {
      entries.delete(id);
      generation.set(id, (generation.get(id) ?? 0) + 1);
      if (generation.size > opts.maxEntries) {
        generation.clear();
        epoch += 1;
      }
    },
    clear() {
      entries.clear();
      generation.clear();
      epoch += 1;
    },
    get size() {
      return entries.size;
    },
  };
}

export interface LookupCaches {
  clients: LookupCache<unknown>;
  tenants: LookupCache<unknown>;
  /** A client or tenant changed: evict it here now (other processes hear of it at commit). */
  changed(kind: CachedKind, id: string): void;
  /** Whether this process may cache (it hears every change). */
  listening: boolean;
}

export function createLookupCaches(opts: { ttlSeconds: number; listening: boolean; maxEntries?: number }): LookupCaches {
  const state = { listening: opts.listening };
  const make = () =>
    createLookupCache<unknown>({ ttlMs: opts.ttlSeconds * 1000, maxEntries: opts.maxEntries ?? 10_000, enabled: () => state.listening });
  const clients = make();
  const tenants = make();
  return {
    clients,
    tenants,
    changed(kind, id) {
      (kind === 'client' ? clients : tenants).evict(id);
    },
    get listening() {
      return state.listening;
    },
    set listening(on: boolean) {
      if (on !== state.listening) {
        clients.clear();
        tenants.clear();
      }
      state.listening = on;
    },
  };
}

/**
 * Writes a change of a client or tenant and tells every process, in one transaction (a savepoint
 * inside a request's): never a committed change the others do not hear of. `write` returns
 * undefined when it changed nothing. On PostgreSQL the notification is delivered at commit (and
 * dropped on rollback); the embedded database serves one process. Then `evict` drops the row from
 * this process's cache at once.
 */
export async function changeAndAnnounce<T>(
  knex: Knex,
  kind: CachedKind,
  id: string,
  write: (trx: Knex.Transaction) => Promise<T | undefined>,
  evict: (id: string) => void,
  whenDone?: (fn: () => void) => Promise<void>,
): Promise<T | undefined> {
  const result = await knex.transaction(async (trx) => {
    const changed = await write(trx);
    if (changed !== undefined && knex.client.config.client === 'pg') {
      await trx.raw('select pg_notify(?, ?)', [CHANGES_CHANNEL, `${kind}:${id}`]);
    }
    return changed;
  });
  if (result !== undefined) {
    evict(id);
    // Inside a caller's transaction (an admin change with its audit record) the change is not
    // committed yet, and this process could cache the old row again meanwhile: evict once more
    // when that transaction ends. Other processes evict on the NOTIFY, sent at the commit.
    await whenDone?.(() => evict(id));
  }
  return result;
}

export interface ChangeListener {
  stop(): Promise<void>;
}

/**
 * PostgreSQL: one connection per process LISTENs for changes and evicts them. Caching is on only
 * while it listens; a broken connection turns caching off (and empties the caches) until it is
 * listening again, so a change can never be missed for longer than it takes to notice. A LISTEN
 * connection is otherwise silent, and a half-open one (a partition, a frozen host) would look
 * alive for hours: it is asked `SELECT 1` every `heartbeatMs`, and an answer later than that
 * counts as lost.
 */
export function startChangeListener(opts: {
  connectionString: string;
  caches: LookupCaches;
  logger: Logger;
  retryMs?: number;
  heartbeatMs?: number;
}): ChangeListener {
  const { caches, logger } = opts;
  const heartbeatMs = opts.heartbeatMs ?? 2000;
  let client: PgClient | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let heartbeat: NodeJS.Timeout | undefined;

  /** Caching off; the current connection (if any) forgotten and closed. */
  const release = async () => {
    caches.listening = false;
    if (heartbeat) clearInterval(heartbeat);
    heartbeat = undefined;
    const c = client;
    client = undefined;
    c?.removeAllListeners();
    c?.on('error', () => undefined);
    await c?.end().catch(() => undefined);
  };

  const lost = (err?: unknown) => {
    if (caches.listening) logger.warn({ err }, 'change listener lost; caching of clients and tenants is off until it reconnects');
    void release();
    if (!stopped && !timer) {
      timer = setTimeout(() => {
        timer = undefined;
        void connect();
      }, opts.retryMs ?? 1000);
      timer.unref();
    }
  };

  const connect = async () => {
    if (stopped) return;
    const c = new PgClient({ connectionString: opts.connectionString, application_name: 'portcullis-listener', keepAlive: true, keepAliveInitialDelayMillis: 10_000 });
    client = c;
    c.on('error', lost);
    c.on('end', () => {
      if (client === c) lost();
    });
    c.on('notification', (msg) => {
      if (msg.channel !== CHANGES_CHANNEL || !msg.payload) return;
      const sep = msg.payload.indexOf(':');
      const kind = msg.payload.slice(0, sep);
      if (kind === 'client' || kind === 'tenant') caches.changed(kind, msg.payload.slice(sep + 1));
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${CHANGES_CHANNEL}`);
      if (client !== c || stopped) return;
      caches.listening = true;
      heartbeat = setInterval(() => {
        const late = setTimeout(() => {
          if (client === c) lost(new Error(`the change listener's connection did not answer within ${heartbeatMs} ms`));
        }, heartbeatMs);
        late.unref();
        c.query('SELECT 1').then(
          () => clearTimeout(late),
          (err: unknown) => {
            clearTimeout(late);
            if (client === c) lost(err);
          },
        );
      }, heartbeatMs);
      heartbeat.unref();
    } catch (err) {
      if (client === c) lost(err);
    }
  };

  void connect();
  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await release();
    },
  };
}
