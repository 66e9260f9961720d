import { Batcher } from '../../src/db/batch';

describe('Batcher', () => {
  test('calls made in one turn run as one batch; each caller gets its own answer', async () => {
    const runs: number[][] = [];
    const b = new Batcher<number, number>(async (xs) => {
      runs.push(xs);
      return xs.map((x) => x * 10);
    });
    expect(await Promise.all([1, 2, 3].map((x) => b.add(x)))).toEqual([10, 20, 30]);
    expect(runs).toEqual([[1, 2, 3]]);
  });

  test('a call never joins a batch already sent: it waits for the next one', async () => {
    const runs: number[][] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const b = new Batcher<number, number>(async (xs) => {
      runs.push(xs);
      await gate;
      return xs;
    });
    const first = b.add(1);
    await new Promise((r) => setImmediate(r)); // the first batch is sent and is now in flight
    const second = b.add(2);
    release();
    expect(await Promise.all([first, second])).toEqual([1, 2]);
    expect(runs).toEqual([[1], [2]]);
  });

  test('waiting() sees only calls not yet sent', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const b = new Batcher<number, number>(async (xs) => {
      await gate;
      return xs;
    });
    expect(b.waiting((x) => x === 1)).toBe(false);
    const first = b.add(1);
    expect(b.waiting((x) => x === 1)).toBe(true);
    expect(b.waiting((x) => x === 2)).toBe(false);
    await new Promise((r) => setImmediate(r)); // sent: in flight, no longer waiting
    expect(b.waiting((x) => x === 1)).toBe(false);
    release();
    expect(await first).toBe(1);
  });

  test('a full batch is sent at once; a failure reaches every caller of its batch only', async () => {
    const runs: number[][] = [];
    const b = new Batcher<number, number>(async (xs) => {
      runs.push(xs);
      if (xs.includes(3)) throw new Error('boom');
      return xs;
    }, { maxSize: 2 });
    const results = await Promise.allSettled([1, 2, 3, 4, 5].map((x) => b.add(x)));
    expect(runs).toEqual([[1, 2], [3, 4], [5]]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'rejected', 'fulfilled']);
  });
});

describe('Batcher gathering under load', () => {
  const turn = () => new Promise((r) => setImmediate(r));
  /** Ends the current synchronous run: the next call is another arrival. */
  const run = () => Promise.resolve();
  /** A batcher whose clock stands still: every arrival comes at once, as under heavy load. */
  const busy = (opts: { gatherMs: number; enough?: number; maxSize?: number; key?: (x: number) => string }) => {
    const runs: number[][] = [];
    const b = new Batcher<number, number>(
      async (xs) => {
        runs.push(xs);
        return xs.map((x) => x * 10);
      },
      { now: () => 0, ...opts },
    );
    return { b, runs };
  };
  /** Enough arrivals at no interval that the smoothed gap between them falls under any wait. */
  const warm = async (b: Batcher<number, number>, runs: number[][]) => {
    const calls: Array<Promise<number>> = [];
    for (let i = 0; i < 60; i += 1) {
      calls.push(b.add(1000 + i));
      await run();
    }
    await Promise.all(calls);
    runs.length = 0;
  };

  test('a quiet batcher sends at the end of the turn, without waiting', async () => {
    const runs: number[][] = [];
    let t = 0;
    const b = new Batcher<number, number>(async (xs) => (runs.push(xs), xs), { gatherMs: 100, now: () => (t += 500) });
    const first = b.add(1);
    await turn();
    expect(runs).toEqual([[1]]);
    expect(await first).toBe(1);
  });

  test('under load a batch waits for calls of later turns to join it', async () => {
    const { b, runs } = busy({ gatherMs: 40 });
    await warm(b, runs);
    const first = b.add(1);
    await turn();
    await turn();
    expect(runs).toEqual([]); // still gathering
    const second = b.add(2);
    expect(await Promise.all([first, second])).toEqual([10, 20]);
    expect(runs).toEqual([[1, 2]]);
  });

  test('a gathering batch goes at the end of the turn in which enough requests have joined it', async () => {
    const { b, runs } = busy({ gatherMs: 60_000, enough: 3 }); // waiting out the timer would time the test out
    await warm(b, runs);
    const calls = [b.add(1)];
    await run();
    calls.push(b.add(2));
    await turn();
    expect(runs).toEqual([]);
    calls.push(b.add(3));
    expect(await Promise.all(calls)).toEqual([10, 20, 30]);
    expect(runs).toEqual([[1, 2, 3]]);
  });

  test("one synchronous run's calls are one arrival: a request's three finds do not make a load", async () => {
    // Requests 0.6 ms apart, each looking its token up three times at once (as the library does):
    // about one more request is due within a 1 ms wait, not two, so no batch waits.
    let t = 0;
    const runs: string[][] = [];
    const b = new Batcher<string, string>(async (ids) => (runs.push(ids), ids), { gatherMs: 1, now: () => t, key: (id) => id });
    for (let i = 0; i < 100; i += 1) {
      t += 0.6;
      const finds = [b.add(`token${i}`), b.add(`token${i}`), b.add(`token${i}`)];
      await turn(); // sent at the end of its turn, not held for a millisecond
      expect(runs.length).toBe(i + 1);
      await Promise.all(finds);
    }
    expect(runs.every((r) => r.length === 1)).toBe(true);
  });

  test('a client alone, one request after another, seldom waits: each wasted wait holds off twice as many', async () => {
    const { b, runs } = busy({ gatherMs: 20 });
    await warm(b, runs);
    const waited: number[] = [];
    for (let i = 0; i < 40; i += 1) {
      const answer = b.add(i);
      await turn();
      if (runs.length === 0 || runs[runs.length - 1]![0] !== i) waited.push(i); // not sent at the end of its turn
      expect(await answer).toBe(i * 10); // the next request only after this one's answer
    }
    expect(waited).toEqual([0, 9, 26]); // then 8 and 16 batches sent at once
    expect(runs.every((r) => r.length === 1)).toBe(true);
  });

  test('a wait that others joined lets the next batch wait again', async () => {
    const { b, runs } = busy({ gatherMs: 20 });
    await warm(b, runs);
    await b.add(1); // wasted: the next 8 batches go at once
    const first = b.add(2);
    await turn();
    expect(runs).toEqual([[1], [2]]);
    await first;
    for (let i = 0; i < 7; i += 1) await b.add(100 + i);
    const a = b.add(3); // waits again, and is joined
    await turn();
    await run();
    const c = b.add(4);
    await Promise.all([a, c]);
    expect(runs[runs.length - 1]).toEqual([3, 4]);
    const d = b.add(5); // so this one waits too
    await turn();
    expect(runs[runs.length - 1]).toEqual([3, 4]);
    await run();
    const e = b.add(6);
    await Promise.all([d, e]);
    expect(runs[runs.length - 1]).toEqual([5, 6]);
  });

  test('calls with one key share an entry and its answer, and never join a batch already sent', async () => {
    const { b, runs } = busy({ gatherMs: 0, key: (x) => String(x % 100) });
    const [a, same, other] = await Promise.all([b.add(7), b.add(107), b.add(8)]);
    expect([a, same, other]).toEqual([70, 70, 80]); // 107 shares 7's entry
    expect(runs).toEqual([[7, 8]]);
    const later = b.add(107);
    expect(await later).toBe(1070); // a new entry in a new batch
    expect(runs).toEqual([[7, 8], [107]]);
  });

  test('a key whose batch was sent full at once is not joined by a later call', async () => {
    const { b, runs } = busy({ gatherMs: 0, maxSize: 2, key: (x) => String(x % 100) });
    const calls = [b.add(1), b.add(2), b.add(102)]; // 1 and 2 fill a batch, sent at once
    expect(await Promise.all(calls)).toEqual([10, 20, 1020]);
    expect(runs).toEqual([[1, 2], [102]]);
  });
});
