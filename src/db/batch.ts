/**
 * Runs the calls made during one turn of the event loop as one: under load, the token lookups
 * (or inserts) of every request that reached that point together cost one statement instead of
 * one each. The batch is sent at the end of the turn (setImmediate), or at once when it is full.
 *
 * A call only ever joins a batch that has not been sent yet, so its statement starts after the
 * call did: it sees everything committed before — a revocation that committed before an
 * introspection began is always seen by it. Nothing is kept after a batch is answered.
 */
export class Batcher<I, O> {
  private pending: Array<{ input: I; resolve(out: O): void; reject(err: unknown): void }> = [];
  private scheduled = false;

  constructor(
    private readonly run: (inputs: I[]) => Promise<O[]>,
    private readonly maxSize = 100,
  ) {}

  add(input: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.pending.push({ input, resolve, reject });
      if (this.pending.length >= this.maxSize) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.flush();
        });
      }
    });
  }

  /** Whether a call not yet sent matches: a later call may then choose to join its batch. */
  waiting(match: (input: I) => boolean): boolean {
    return this.pending.some((p) => match(p.input));
  }

  private flush(): void {
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    Promise.resolve()
      .then(() => this.run(batch.map((b) => b.input)))
      .then(
        (outs) => batch.forEach((b, i) => b.resolve(outs[i] as O)),
        (err: unknown) => batch.forEach((b) => b.reject(err)),
      );
  }
}
