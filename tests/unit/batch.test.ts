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
    }, 2);
    const results = await Promise.allSettled([1, 2, 3, 4, 5].map((x) => b.add(x)));
    expect(runs).toEqual([[1, 2], [3, 4], [5]]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'rejected', 'fulfilled']);
  });
});
