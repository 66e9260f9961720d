import { hash } from 'node:crypto';
import type { Knex } from 'knex';
import { errors, type Adapter, type AdapterPayload } from 'oidc-provider';
import { affected } from '../db/affected';
import type { DbSource } from '../db/tx';
import { Batcher, batchGatherOf } from '../db/batch';
import { pairsOf } from '../db/pairing';
import { deleteInBatches, SWEEP_BATCH } from '../db/sweep';
import { preparedRunner, statementRunner, type PreparedStatement } from '../db/prepared';
import { isDatabaseUnavailable } from '../db/unavailable';
import { END_LOGIN, LOGIN_INTACT, LoginSupersededError, loginEndCtes, loginEndValues, type LoginClosing, type LoginEnd } from '../users/login-end';

/** Not a value we could have issued, and one PostgreSQL refuses to compare: a plain miss. */
const plausible = (v: unknown): v is string => typeof v === 'string' && !v.includes('\u0000') && v.length <= 512;

interface PayloadRow {
  payload: AdapterPayload | string;
  consumed_at: Date | null;
}

/**
 * The key a token's row is stored under: a SHA-256 of its value (an opaque token's id is its value;
 * JWT access tokens are not stored), never the value itself. A token is a bearer secret: whoever reads the
 * table (a backup, a replica, a support query) must not be able to use what they read. The tokens
 * carry 256 bits of randomness, so an unsalted hash cannot be reversed by guessing.
 */
export function storedTokenId(value: string): string {
  // The one-shot hash: about 0.5 µs here against 1.2 for a Hash object, three times per introspection.
  return hash('sha256', value, 'base64url');
}

/**
 * oidc-provider's storage for every model but Client: one `oidc_payloads` table keyed by
 * (type, id). Expired rows are invisible at once and removed by `sweepExpired`. Tokens (access,
 * client-credentials and refresh) are keyed by `storedTokenId` and stored without their `jti`,
 * which a find gives back from the value it was asked for.
 */
export class KnexAdapter implements Adapter {
  constructor(
    private readonly source: DbSource,
    private readonly type: string,
  ) {}

  private get knex(): Knex {
    return this.source.db();
  }

  private table() {
    return this.knex<Record<string, unknown>>('oidc_payloads');
  }

  /** Token types hide their value: the key a row of this type is stored under. */
  private key(id: string): string {
    return TOKEN_TYPES.has(this.type) ? storedTokenId(id) : id;
  }

  async upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
    let stored = payload;
    if (TOKEN_TYPES.has(this.type)) {
      stored = { ...payload };
      delete stored.jti;
    }
    const row = {
      type: this.type,
      id: this.key(id),
      payload: JSON.stringify(stored),
      grant_id: payload.grantId ?? null,
      user_code: payload.userCode ?? null,
      uid: payload.uid ?? null,
      account_id: payload.accountId ?? null,
      expires_at: expiresIn ? new Date(Date.now() + expiresIn * 1000) : null,
    };
    // Access tokens may commit asynchronously (Database.asyncCommit): one lost in a crash fails
    // safe; every other model commits synchronously. Outside a transaction, the concurrent writes
    // of each pool are inserted together (a login's session and refresh token, say) — and an
    // access token whose session is about to be inserted joins that statement: its commit costs
    // nothing more there, and one round trip less. A session that ends a password login closes
    // the login in the same statement (src/users/login-end.ts).
    const accessToken = ACCESS_TOKEN_TYPES.has(this.type);
    const knex = accessToken && this.source.asyncCommitDb && !this.sessionWaiting(payload.grantId) ? this.source.asyncCommitDb() : this.knex;
    const login = takeLoginEnd(this.type, id);
    const end = login?.end;
    if (!knex.isTransaction) {
      const failed = await batchersOf(knex).inserts.add({ row, end });
      if (login && failed instanceof LoginSupersededError) login.written = failed.closed;
      if (failed) throw failed;
    } else {
      await inTurn(knex, () => insertClosing(knex, [row], end));
    }
    if (login) login.written = true;
  }

  /** Is the Grant `grantId` waiting to be inserted by the main pool's next batch? */
  private sessionWaiting(grantId: string | undefined): boolean {
    const knex = this.knex;
    return !!grantId && !knex.isTransaction && batchersOf(knex).inserts.waiting(({ row }) => row.type === 'Grant' && row.id === grantId);
  }

  private async findWhere(where: Record<string, string>): Promise<AdapterPayload | undefined> {
    if (!Object.values(where).every(plausible)) return undefined;
    const row = (await this.table()
      .select('payload', 'consumed_at')
      .where({ type: this.type, ...where })
      .andWhere((q) => q.whereNull('expires_at').orWhere('expires_at', '>', this.knex.fn.now()))
      .first()) as PayloadRow | undefined;
    return row ? toPayload(row) : undefined;
  }

  async find(id: string): Promise<AdapterPayload | undefined> {
    if (!TOKEN_TYPES.has(this.type)) return this.findWhere({ id });
    if (!plausible(id)) return undefined;
    const knex = this.knex;
    const key = storedTokenId(id);
    const payload = knex.isTransaction ? await this.findWhere({ id: key }) : await findBatched(knex, this.type, key);
    return payload && { ...payload, jti: id };
  }

  findByUserCode(userCode: string) {
    return this.findWhere({ user_code: userCode });
  }

  findByUid(uid: string) {
    return this.findWhere({ uid });
  }

  /**
   * One atomic UPDATE: of concurrent consumers of one artifact (a refresh token used twice at
   * once), exactly one changes the row; the others fail here, before anything is issued.
   */
  async consume(id: string): Promise<void> {
    if (id.includes('\u0000')) throw new errors.CustomOIDCProviderError('invalid_grant', 'grant request is invalid');
    const key = this.key(id);
    const changed = affected(
      await this.table().where({ type: this.type, id: key }).whereNull('consumed_at').update({ consumed_at: this.knex.fn.now() }),
    );
    if (changed !== 1) {
      // A refresh token used twice, even concurrently: treated as stolen (RFC 9700 §4.14.2), so
      // the whole session ends — whichever request won, its tokens die too.
      if (this.type === 'RefreshToken') {
        const row = (await this.table().where({ type: this.type, id: key }).first('grant_id')) as { grant_id?: string } | undefined;
        if (row?.grant_id) await revokeSession(this.knex, row.grant_id);
      }
      throw new errors.CustomOIDCProviderError('invalid_grant', 'grant request is invalid');
    }
  }

  async destroy(id: string): Promise<void> {
    if (id.includes('\u0000')) return;
    await this.table().where({ type: this.type, id: this.key(id) }).del();
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    await this.table().where({ grant_id: grantId }).del();
  }
}

/**
 * The hot path, batched (src/db/batch.ts). Introspection and revocation look a presented token up
 * as an access token, a client-credentials token and a refresh token at once, and many requests
 * do so at the same time: their lookups become one statement (`id in (…)`, every token type),
 * and each caller picks its row and parses its own copy. Likewise the inserts of concurrent token
 * requests become one multi-row INSERT per pool: access tokens on the asynchronously committing
 * one, sessions and refresh tokens (and the access token of a session inserted with it) on the
 * main pool. Each caller is answered only when its
 * batch is (a token is handed out only once stored). Inside a transaction nothing is batched.
 */
const ACCESS_TOKEN_TYPES = new Set(['AccessToken', 'ClientCredentials']);
const TOKEN_TYPES = new Set(['AccessToken', 'ClientCredentials', 'RefreshToken']);
const TOKEN_TYPE_LIST = [...TOKEN_TYPES];
type TokenRow = PayloadRow & { id: string; type: string };

/** A row to insert, and the login its session closes (a Grant's only). */
interface PendingInsert {
  row: Record<string, unknown>;
  end: LoginEnd | undefined;
}

interface Batchers {
  lookups: Batcher<string, TokenRow[]>;
  /** Per row: undefined when stored, else its error. */
  inserts: Batcher<PendingInsert, Error | undefined>;
}
const batchers = new WeakMap<Knex, Batchers>();

/**
 * The batches' statements on PostgreSQL, prepared (src/db/prepared.ts). Arrays make one text fit
 * every batch size: `= ANY($1)` uses the primary key as `IN (…)` does, and unnest() turns one array
 * per column into the rows of a multi-row INSERT. A prepared statement's result types are fixed:
 * a migration that changes the type of a column they read or write needs the servers restarted
 * (adding columns or indexes does not), else "cached plan must not change result type". A new
 * text takes a new name (_v2).
 *
 * The lookup names the token types as constants, not as a parameter. A connection that has run a
 * statement five times may settle on a generic plan, made once for any parameters and kept until
 * the table's statistics change. With both lists as parameters, the generic plan made while the
 * table was still small and never analyzed (a new server's first minute, or a database without
 * autovacuum) searched the primary key (type, id) by type alone and filtered by id: every lookup
 * then read every token of those types, 2.4 ms of PostgreSQL's CPU at 45,000 tokens, 9.8 ms at
 * 50,000 of one type (bench/NOTES.md). With the types in the text, that plan searches by both
 * (tests/integration/lookup-plan.test.ts). One made after an ANALYZE of a near-empty table is a
 * sequential scan with either text, until autovacuum's next ANALYZE replaces it (README).
 */
export const LOOKUP: PreparedStatement = {
  name: 'portcullis_token_lookup_v2',
  text: `SELECT id, type, payload::text AS payload, consumed_at FROM oidc_payloads
         WHERE id = ANY($1::text[]) AND type IN (${TOKEN_TYPE_LIST.map((t) => `'${t}'`).join(', ')})
           AND (expires_at IS NULL OR expires_at > now())`,
};
const INSERT_COLUMNS = ['type', 'id', 'payload', 'grant_id', 'user_code', 'uid', 'account_id', 'expires_at'] as const;
const insertText = (where = '') => `INSERT INTO oidc_payloads (${INSERT_COLUMNS.join(', ')})
         SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[]) ${where}
         ON CONFLICT (type, id) DO UPDATE SET ${INSERT_COLUMNS.slice(2).map((c) => `${c} = excluded.${c}`).join(', ')}`;
const INSERT: PreparedStatement = { name: 'portcullis_token_insert_v1', text: insertText() };
/**
 * The same INSERT storing a login's session, closing the login: one statement, one commit. The
 * rows are stored only if the user's sessions were not ended since the login began (no row
 * returned otherwise: LoginSupersededError).
 */
const INSERT_ENDING_LOGIN: PreparedStatement = {
  name: 'portcullis_token_insert_ending_login_v4',
  text: `WITH ${loginEndCtes(INSERT_COLUMNS.length + 1)}
         ${insertText(`WHERE ${LOGIN_INTACT}`)} RETURNING 1`,
};

/**
 * Logins to close with their session's INSERT, by the session's (Grant's) id: registered by
 * startUserSession right before it saves the Grant, taken by the Grant's upsert.
 */
const loginEnds = new Map<string, LoginClosing>();

/**
 * Closes `login` with the session `grantId` when it is stored, and marks it written then (inside a
 * transaction: with it, undone if that rolls back). The returned function forgets it: call it
 * once the session's saves are over.
 */
export function closeLoginWithSession(grantId: string, login: LoginClosing): () => void {
  loginEnds.set(grantId, login);
  return () => {
    if (loginEnds.get(grantId) === login) loginEnds.delete(grantId);
  };
}

/**
 * A transaction has one connection, and the pg driver queues a query sent while another is running
 * on it only as a deprecated courtesy (gone in pg 9): the saves of one transaction (a session's
 * Grant and tokens, saved together by startUserSession) run one after another.
 */
const turns = new WeakMap<Knex, Promise<unknown>>();
function inTurn<T>(trx: Knex, work: () => Promise<T>): Promise<T> {
  const mine = (turns.get(trx) ?? Promise.resolve()).then(work);
  turns.set(trx, mine.catch(() => undefined));
  return mine;
}

/** Rows inserted through the query builder, then the login their session closes (in a transaction, or for one). */
async function insertClosing(knex: Knex, rows: Array<Record<string, unknown>>, end: LoginEnd | undefined): Promise<void> {
  await knex('oidc_payloads').insert(rows).onConflict(['type', 'id']).merge();
  if (!end) return;
  // In the caller's transaction: a superseded login's rows go with it when it rolls back.
  const [closed] = await statementRunner(knex)<{ intact: boolean }>(END_LOGIN, loginEndValues(end));
  if (!closed?.intact) throw new LoginSupersededError(false);
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

function takeLoginEnd(type: string, id: string): LoginClosing | undefined {
  const entry = type === 'Grant' ? loginEnds.get(id) : undefined;
  if (entry) loginEnds.delete(id);
  return entry;
}

function batchersOf(knex: Knex): Batchers {
  let b = batchers.get(knex);
  if (!b) {
    const prepared = preparedRunner(knex);
    const gather = { gatherMs: batchGatherOf(knex) };
    const lookup = async (ids: string[]): Promise<TokenRow[]> =>
      prepared
        ? prepared<TokenRow>(LOOKUP, [ids])
        : ((await knex('oidc_payloads')
            // As text: each caller parses its own copy (two requests may present the same token).
            .select('id', 'type', knex.raw('payload::text as payload'), 'consumed_at')
            .whereIn('id', ids)
            .whereIn('type', TOKEN_TYPE_LIST)
            .andWhere((q) => q.whereNull('expires_at').orWhere('expires_at', '>', knex.fn.now()))) as TokenRow[]);
    const insert = async (list: Array<Record<string, unknown>>, end: LoginEnd | undefined): Promise<void> => {
      if (prepared) {
        const columns = INSERT_COLUMNS.map((c) => list.map((r) => r[c] ?? null));
        if (!end) await prepared(INSERT, columns);
        else {
          // A login's start waiting for a round trip goes in this one (src/db/pairing.ts).
          const values = [...columns, ...loginEndValues(end)];
          const pairs = pairsOf(knex);
          const stored = pairs?.waiting ? await pairs.carry(INSERT_ENDING_LOGIN, values) : await prepared(INSERT_ENDING_LOGIN, values);
          // No row stored; the statement's CTEs stored the login's end all the same.
          if (stored.length === 0) throw new LoginSupersededError(true);
        }
      } else if (!end) {
        await insertClosing(knex, list, undefined);
      } else {
        // The embedded database (knex binds no arrays there): the same two statements, one transaction.
        await knex.transaction((trx) => insertClosing(trx, list, end));
      }
    };
    /** Rows stored by one statement; per row, undefined or its error. */
    const store = async (group: PendingInsert[], end: LoginEnd | undefined): Promise<Array<Error | undefined>> => {
      // One row per (type, id), the last written: ON CONFLICT cannot touch a row twice.
      const unique = new Map(group.map(({ row }) => [`${String(row.type)}\u0000${String(row.id)}`, row]));
      try {
        await insert([...unique.values()], end);
        return group.map(() => undefined);
      } catch (err) {
        // The database is away: every request of the group gets that (503). Anything else may be
        // one row's fault, which must not fail the others: each row again, on its own (a login's
        // end with its session's row).
        // A superseded login's session and tokens are not stored at all, nor tried again one by one.
        if (group.length === 1 || isDatabaseUnavailable(err) || err instanceof LoginSupersededError) return group.map(() => asError(err));
        return Promise.all(group.map((p) => insert([p.row], p.end).then(() => undefined, asError)));
      }
    };
    b = {
      // The library looks a token up as each type it may be (three finds of one id): one entry.
      lookups: new Batcher(async (ids) => {
        const rows = await lookup(ids);
        const byId = new Map<string, TokenRow[]>();
        for (const row of rows) byId.set(row.id, [...(byId.get(row.id) ?? []), row]);
        return ids.map((id) => byId.get(id) ?? []);
      }, { ...gather, key: (id) => id }),
      inserts: new Batcher(async (pending) => {
        // A login's session, with the tokens of it in the batch, is a statement of its own that
        // closes the login; every other row goes in one more.
        const groups = new Map<string | undefined, { rows: PendingInsert[]; end?: LoginEnd }>([[undefined, { rows: [] }]]);
        for (const p of pending) if (p.end) groups.set(String(p.row.id), { rows: [], end: p.end });
        const groupOf = (p: PendingInsert) => (p.end ? String(p.row.id) : groups.has(p.row.grant_id as string) ? (p.row.grant_id as string) : undefined);
        for (const p of pending) groups.get(groupOf(p))!.rows.push(p);
        const stored = new Map<PendingInsert, Error | undefined>();
        await Promise.all(
          [...groups.values()].map(async ({ rows, end }) => {
            if (!rows.length) return;
            const outcome = await store(rows, end);
            rows.forEach((p, i) => stored.set(p, outcome[i]));
          }),
        );
        return pending.map((p) => stored.get(p));
      }, gather),
    };
    batchers.set(knex, b);
  }
  return b;
}

/** A token's payload by its stored key (storedTokenId). */
async function findBatched(knex: Knex, type: string, key: string): Promise<AdapterPayload | undefined> {
  const row = (await batchersOf(knex).lookups.add(key)).find((r) => r.type === type);
  return row ? toPayload(row) : undefined;
}

function toPayload(row: PayloadRow): AdapterPayload {
  const payload = (typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload) as AdapterPayload;
  return row.consumed_at ? { ...payload, consumed: Math.floor(new Date(row.consumed_at).getTime() / 1000) } : payload;
}

/** Ends a session: the Grant and every artifact issued under it. */
async function revokeSession(knex: Knex, grantId: string): Promise<void> {
  await knex('oidc_payloads')
    .where({ grant_id: grantId })
    .orWhere((q) => q.where({ type: 'Grant', id: grantId }))
    .del();
}

/** Sessions of a user: their live Grants. */
export async function listGrantsOfAccount(source: DbSource, accountId: string): Promise<AdapterPayload[]> {
  const knex = source.db();
  const rows = (await knex('oidc_payloads')
    .select('payload')
    .where({ type: 'Grant', account_id: accountId })
    .andWhere((q) => q.whereNull('expires_at').orWhere('expires_at', '>', knex.fn.now()))
    .orderBy('expires_at', 'desc')) as PayloadRow[];
  return rows.map((r) => (typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload) as AdapterPayload);
}

/**
 * Ends one session of a user: its Grant and every token of it, in one transaction. False when the
 * session does not exist or is not this user's (the caller answers 404 either way).
 */
export async function revokeGrantOfAccount(source: DbSource, accountId: string, grantId: string): Promise<boolean> {
  return source.db().transaction(async (trx) => {
    const gone = affected(await trx('oidc_payloads').where({ type: 'Grant', id: grantId, account_id: accountId }).del());
    if (gone !== 1) return false;
    await trx('oidc_payloads').where({ grant_id: grantId }).del();
    return true;
  });
}

/** Ends every session of a user (admin lock, factor reset): all their grants and tokens. */
export async function revokeAllOfAccount(source: DbSource, accountId: string): Promise<number> {
  const knex = source.db();
  const grants = (await knex('oidc_payloads').select('id').where({ type: 'Grant', account_id: accountId })) as Array<{ id: string }>;
  const ids = grants.map((g) => g.id);
  let n = affected(await knex('oidc_payloads').where({ account_id: accountId }).del());
  if (ids.length) n += affected(await knex('oidc_payloads').whereIn('grant_id', ids).del());
  return n;
}

/**
 * Login-time MFA completed: the session's pending access tokens, good only for the step-up routes
 * until now, end (they would otherwise complete the login again with every later step-up). The
 * number deleted tells a caller whether it was the one that completed it.
 */
export async function endPendingLogin(source: DbSource, grantId: string): Promise<number> {
  return affected(
    await source.db()('oidc_payloads').where({ type: 'AccessToken', grant_id: grantId }).whereRaw("payload->'extra'->>'pending' is not null").del(),
  );
}

/** Deletes rows that expired more than `graceSeconds` ago, `batch` per statement (src/db/sweep.ts); returns how many. */
export async function sweepExpired(knex: Knex, graceSeconds = 0, batch = SWEEP_BATCH): Promise<number> {
  return deleteInBatches(knex, 'oidc_payloads', 'expires_at < ?', [new Date(Date.now() - graceSeconds * 1000)], batch);
}
