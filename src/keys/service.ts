import { createHash, generateKeyPair, type JsonWebKey } from 'node:crypto';
import { promisify } from 'node:util';
import type { Knex } from 'knex';
import type { Sealer } from '../crypto/secrets';

/** The algorithms our signing keys may have; a token naming another is never ours. */
/** The stored signing keys were sealed with another SECRETS_KEY: the deployment's, not the code's, problem. */
export class SecretsKeyMismatchError extends Error {}

export const SIGNING_ALGS = ['ES256', 'RS256'] as const;
export type SigningAlg = (typeof SIGNING_ALGS)[number];

export interface SigningKeyInfo {
  kid: string;
  alg: string;
  createdAt: Date;
  activatesAt: Date;
  retiredAt: Date | null;
  expiresAt: Date | null;
  publicJwk: JsonWebKey;
}

export interface KeySet {
  /** Private JWKs for oidc-provider, the signing key first. */
  jwks: { keys: JsonWebKey[] };
  signingKid: string;
  /** The signing key's algorithm. */
  signingAlg: SigningAlg;
  /** Changes whenever the published set or the signing key changes. */
  fingerprint: string;
}

interface KeyRow {
  kid: string;
  alg: string;
  public_jwk: JsonWebKey | string;
  private_jwk_sealed: string;
  created_at: Date;
  activates_at: Date;
  retired_at: Date | null;
  expires_at: Date | null;
}

export interface KeyService {
  /** Creates the first signing key when there is none (safe when several processes start at once). */
  ensureKey(): Promise<void>;
  /** Publishes a new key now, signs with it after `publishBeforeUseSeconds`, retires the old one. */
  rotate(): Promise<SigningKeyInfo>;
  list(): Promise<SigningKeyInfo[]>;
  load(): Promise<KeySet>;
  /**
   * SecretsKeyMismatchError unless this SECRETS_KEY opens the newest stored key (none stored: any
   * key will do). For the CLI, before it writes: run without the servers' key (a development key
   * file made in another directory, say), it sealed a new signing key no server could open, and
   * peppered passwords no server could check.
   */
  checkSecretsKey(): Promise<void>;
}

/** RFC 7638: the SHA-256 of the key's required members, in lexicographic order. */
function thumbprint(jwk: JsonWebKey): string {
  const canonical = jwk.kty === 'RSA'
    ? JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n })
    : JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
  return createHash('sha256').update(canonical).digest('base64url');
}

/** The members of a private JWK that are secret (RFC 7518 §6.2.2, §6.3.2). */
const PRIVATE_MEMBERS = new Set(['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']);

/** A JWK without its private members: what may be published, logged or handed to a verifier. */
export function publicJwk<T extends object>(jwk: T): T {
  return Object.fromEntries(Object.entries(jwk).filter(([name]) => !PRIVATE_MEMBERS.has(name))) as T;
}

const generate = promisify(generateKeyPair) as unknown as (type: string, options: object) => Promise<{ privateKey: JsonWebKey }>;

/**
 * How a signing key is made: P-256 for ES256, 2048-bit RSA for RS256 (RFC 7518 §3.3's minimum),
 * and given back as JWKs by the generation itself. Exporting the generated KeyObject afterwards
 * (`privateKey.export({ format: 'jwk' })`) can hang the process for good on Node 20: a garbage
 * collection during the export may finalize the finished generation job, whose destructor takes
 * the key's lock that the export holds (seen as a CI hang, and reproduced with
 * `--stress-compaction`; tests/unit/signing-key-generation.test.ts).
 */
export function signingKeyGeneration(alg: SigningAlg): [type: 'rsa' | 'ec', options: Record<string, unknown>] {
  const asJwk = { publicKeyEncoding: { format: 'jwk' }, privateKeyEncoding: { format: 'jwk' } };
  return alg === 'RS256' ? ['rsa', { modulusLength: 2048, ...asJwk }] : ['ec', { namedCurve: 'P-256', ...asJwk }];
}

/**
 * A new signing key, made off the event loop (an RSA key takes tens to hundreds of milliseconds)
 * and before the signing keys' lock is taken.
 */
async function newKey(alg: SigningAlg): Promise<{ kid: string; publicJwk: JsonWebKey; privateJwk: JsonWebKey }> {
  const { privateKey: privateJwk } = await generate(...signingKeyGeneration(alg));
  const kid = thumbprint(privateJwk);
  return { kid, publicJwk: { ...publicJwk(privateJwk), kid, alg, use: 'sig' }, privateJwk: { ...privateJwk, kid, alg, use: 'sig' } };
}

const LOCK = "select pg_advisory_xact_lock(hashtext('portcullis.signing_keys'))";

export function createKeyService(deps: {
  knex: Knex;
  /**
   * The request's transaction when one is open, else the pool (TxContext.db): a rotation commits
   * with its audit record, and on the embedded database's one connection it must not wait for
   * a second.
   */
  db?: () => Knex;
  sealer: Sealer;
  /** The algorithm of keys made from now on (config keys.alg); keys already made keep theirs. */
  alg?: SigningAlg;
  publishBeforeUseSeconds: number;
  maxTokenLifetimeSeconds: number;
  now?: () => Date;
}): KeyService {
  const { knex, sealer } = deps;
  const db = deps.db ?? (() => knex);
  const now = deps.now ?? (() => new Date());
  const toInfo = (r: KeyRow): SigningKeyInfo => ({
    kid: r.kid,
    alg: r.alg,
    createdAt: new Date(r.created_at),
    activatesAt: new Date(r.activates_at),
    retiredAt: r.retired_at ? new Date(r.retired_at) : null,
    expiresAt: r.expires_at ? new Date(r.expires_at) : null,
    publicJwk: typeof r.public_jwk === 'string' ? (JSON.parse(r.public_jwk) as JsonWebKey) : r.public_jwk,
  });

  type NewKey = Awaited<ReturnType<typeof newKey>>;
  const alg = deps.alg ?? 'ES256';
  async function insertKey(trx: Knex.Transaction, key: NewKey, activatesAt: Date): Promise<KeyRow> {
    const [row] = await trx<KeyRow>('signing_keys')
      .insert({
        kid: key.kid,
        alg,
        public_jwk: JSON.stringify(key.publicJwk) as unknown as JsonWebKey,
        private_jwk_sealed: sealer.seal(JSON.stringify(key.privateJwk)),
        activates_at: activatesAt,
      })
      .returning('*');
    return row as KeyRow;
  }

  return {
    async ensureKey() {
      if (await db()('signing_keys').whereNull('retired_at').first()) return;
      const key = await newKey(alg);
      await db().transaction(async (trx) => {
        await trx.raw(LOCK);
        const live = await trx('signing_keys').whereNull('retired_at').first();
        if (!live) await insertKey(trx, key, now());
      });
    },
    async rotate() {
      const key = await newKey(alg);
      return db().transaction(async (trx) => {
        await trx.raw(LOCK);
        const t = now();
        const activatesAt = new Date(t.getTime() + deps.publishBeforeUseSeconds * 1000);
        // The old key signs until the new one takes over, then verifies for as long as any token
        // it signed can live.
        await trx('signing_keys')
          .whereNull('retired_at')
          .update({
            retired_at: activatesAt,
            expires_at: new Date(activatesAt.getTime() + deps.maxTokenLifetimeSeconds * 1000),
          });
        return toInfo(await insertKey(trx, key, activatesAt));
      });
    },
    async list() {
      const rows = await db()<KeyRow>('signing_keys').orderBy('activates_at', 'desc');
      return rows.map(toInfo);
    },
    async checkSecretsKey() {
      const r = await db()<KeyRow>('signing_keys').orderBy('activates_at', 'desc').first();
      if (!r) return;
      try {
        sealer.open(r.private_jwk_sealed);
      } catch {
        throw new SecretsKeyMismatchError(
          `SECRETS_KEY is not the key this database's signing keys were sealed with (key ${r.kid}): set the servers' SECRETS_KEY; nothing was written`,
        );
      }
    },
    async load() {
      const t = now();
      const rows = await db()<KeyRow>('signing_keys')
        .where((q) => q.whereNull('expires_at').orWhere('expires_at', '>', t))
        .orderBy('activates_at', 'desc');
      const active = rows.filter((r) => new Date(r.activates_at) <= t);
      const signing = active[0] ?? rows[rows.length - 1];
      if (!signing) throw new Error('no signing key: run migrations and start the server once');
      const ordered = [signing, ...rows.filter((r) => r !== signing)];
      const keys = ordered.map((r) => {
        try {
          return JSON.parse(sealer.open(r.private_jwk_sealed)) as JsonWebKey;
        } catch {
          throw new SecretsKeyMismatchError(`cannot decrypt signing key ${r.kid}: SECRETS_KEY is not the key it was sealed with`);
        }
      });
      return { jwks: { keys }, signingKid: signing.kid, signingAlg: signing.alg as SigningAlg, fingerprint: ordered.map((r) => r.kid).join(',') };
    },
  };
}
