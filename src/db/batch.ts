import type { Knex } from 'knex';

export interface BatcherOptions<I> {
  /** A batch this large is sent at once. */
  maxSize?: number;
  /**
   * Under load, the longest (ms) a batch's first call may wait for others to join it; 0: never,
   * a batch is sent at the end of the event-loop turn it began in. See `Batcher`.
   */
  gatherMs?: number;
  /** A batch being gathered is sent at the end of the turn once this many requests share it. */
  enough?: number;
  /** The clock arrivals are timed by (ms); tests give their own. */
  now?: () => number;
  /** Calls with the same key while a batch is unsent share one entry of it, and its answer. */
  key?: (input: I) => string;
}

/** A gap between arrivals longer than this counts as this: one quiet minute is not remembered for long. */
const GAP_CAP_MS = 1000;

/**
 * Runs the calls made during one turn of the event loop as one: under load, the token lookups
 * (or inserts) of every request that reached that point together cost one statement instead of
 * one each. The batch is sent at the end of the turn (setImmediate), or at once when it is full.
 *
 * Gathering (`gatherMs` > 0): when requests arrive often enough that at least two more are due
 * within `gatherMs` (the mean gap between arrivals, smoothed), a new batch waits up to `gatherMs`
 * for them, and goes at the end of the turn in which `enough` requests share it; a wait no one
 * joined holds the next ones off (`waited`). The calls of one synchronous run (the library's
 * three finds of one token, a login's session and its tokens) are one arrival. At moderate load a
 * turn holds one or two requests, so each paid a statement, a round trip and a wake-up of
 * PostgreSQL and of this process of its own: evenly paced at 70 % of the maximum, the cores were
 * 87–91 % busy, 71–78 % when batches gathered (bench/NOTES.md). A quiet server sends at once, as
 * before, and a client alone sending one request after another seldom waits: the wait is spent
 * where others are coming to share it.
 *
 * A call only ever joins a batch that has not been sent yet, so its statement starts after the
 * call did: it sees everything committed before — a revocation that committed before an
 * introspection began is always seen by it. Nothing is kept after a batch is answered.
 */
export class Batcher<I, O> {
  private pending: Array<{ input: I; resolve(out: O): void; reject(err: unknown): void }> = [];
  /** A flush at the end of this turn is due. */
  private immediate = false;
  /** The gathering batch's deadline. */
  private timer: NodeJS.Timeout | undefined;
  private readonly maxSize: number;
  private readonly gatherMs: number;
  private readonly enough: number;
  private readonly now: () => number;
  private readonly key: ((input: I) => string) | undefined;
  /** Arrivals (requests) that the unsent batch answers. */
  private arrivals = 0;
  /** A call came in the current synchronous run: later calls of the run are the same arrival. */
  private inRun = false;
  private readonly endRun = () => {
    this.inRun = false;
  };
  /** Batches still to send without gathering, and how many the last wasted wait set (doubling). */
  private skip = 0;
  private backoff = 0;
  /** The unsent batch's answers by key. */
  private byKey = new Map<string, Promise<O>>();
  /** Smoothed gap between arrivals (ms), and when the last one came. */
  private gap = GAP_CAP_MS;
  private last = -Infinity;

  constructor(
    private readonly run: (inputs: I[]) => Promise<O[]>,
    options: BatcherOptions<I> = {},
  ) {
    this.maxSize = options.maxSize ?? 100;
    this.gatherMs = options.gatherMs ?? 0;
    this.enough = Math.min(options.enough ?? 16, this.maxSize);
    this.now = options.now ?? (() => performance.now());
    this.key = options.key;
  }

  add(input: I): Promise<O> {
    if (!this.inRun) {
      this.inRun = true;
      queueMicrotask(this.endRun);
      this.arrivals += 1;
      if (this.gatherMs > 0) {
        const t = this.now();
        this.gap += (Math.min(t - this.last, GAP_CAP_MS) - this.gap) / 8;
        this.last = t;
      }
    }
    const k = this.key?.(input);
    let answer = k === undefined ? undefined : this.byKey.get(k);
    if (!answer) {
      let entry!: { input: I; resolve(out: O): void; reject(err: unknown): void };
      answer = new Promise<O>((resolve, reject) => (entry = { input, resolve, reject }));
      // Registered before a full batch is sent below: the key must leave with its batch.
      if (k !== undefined) this.byKey.set(k, answer);
      this.pending.push(entry);
      if (this.pending.length >= this.maxSize) {
        this.flush();
        return answer;
      }
    }
    if (this.immediate) return answer;
    if (this.timer) {
      if (this.arrivals >= this.enough) {
        this.backoff = 0;
        this.flushAtEndOfTurn();
      }
    } else if (this.shouldGather()) {
      this.timer = setTimeout(() => this.waited(), this.gatherMs);
    } else this.flushAtEndOfTurn();
    return answer;
  }

  private shouldGather(): boolean {
    if (this.gatherMs <= 0 || this.gap * 2 > this.gatherMs || this.arrivals >= this.enough) return false;
    if (this.skip > 0) {
      this.skip -= 1;
      return false;
    }
    return true;
  }

  /**
   * A wait ran its length. If no one joined (a client alone, sending one request after another,
   * whose next request comes only after this one's answer), the next batches do not wait: 8, then
   * twice as many after each wait wasted in a row, up to 1,024. A wait that someone joined resets it.
   */
  private waited(): void {
    if (this.arrivals <= 1) {
      this.backoff = Math.min(Math.max(this.backoff * 2, 8), 1024);
      this.skip = this.backoff;
    } else this.backoff = 0;
    this.flush();
  }

  /** Whether a call not yet sent matches: a later call may then choose to join its batch. */
  waiting(match: (input: I) => boolean): boolean {
    return this.pending.some((p) => match(p.input));
  }

  private flushAtEndOfTurn(): void {
    this.clearTimer();
    this.immediate = true;
    setImmediate(() => this.flush());
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private flush(): void {
    this.clearTimer();
    this.immediate = false;
    const batch = this.pending;
    this.pending = [];
    this.arrivals = 0;
    if (this.byKey.size) this.byKey = new Map();
    if (batch.length === 0) return;
    Promise.resolve()
      .then(() => this.run(batch.map((b) => b.input)))
      .then(
        (outs) => batch.forEach((b, i) => b.resolve(outs[i] as O)),
        (err: unknown) => batch.forEach((b) => b.reject(err)),
      );
  }
}

const gathering = new WeakMap<Knex, number>();

/** How long batches of statements on `knex`'s pool may gather under load (BATCH_WAIT_MS); set when it is opened. */
export function setBatchGather(knex: Knex, ms: number): void {
  gathering.set(knex, ms);
}

/** 0 for a pool opened without a setting (tests' own, the CLI's). */
export function batchGatherOf(knex: Knex): number {
  return gathering.get(knex) ?? 0;
}
