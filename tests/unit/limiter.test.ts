import { createLimiter, EvaluationTooLateError } from '../../src/users/passwords';

describe('bcrypt concurrency limiter', () => {
  test('never more than max at a time; the rest run in order as slots free; a failure frees its slot', async () => {
    const limited = createLimiter(2);
    let running = 0;
    let peak = 0;
    const order: number[] = [];
    const releases: Array<() => void> = [];
    const job = (i: number) =>
      limited(async () => {
        running += 1;
        peak = Math.max(peak, running);
        order.push(i);
        await new Promise<void>((r) => releases.push(r));
        running -= 1;
        if (i === 1) throw new Error('bad hash');
        return i;
      });
    const all = Promise.allSettled([0, 1, 2, 3, 4].map(job));
    for (let step = 0; step < 5; step += 1) {
      await new Promise((r) => setImmediate(r));
      expect(running).toBeLessThanOrEqual(2);
      releases.shift()?.();
    }
    const results = await all;
    expect(peak).toBe(2);
    expect(order).toEqual([0, 1, 2, 3, 4]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled']);
    // Everything released: the limiter is free again.
    await expect(limited(async () => 'free')).resolves.toBe('free');
  });

  test('a job whose turn comes too late does not run, and its slot passes on to the next', async () => {
    const limited = createLimiter(1);
    let release!: () => void;
    const ran: string[] = [];
    const first = limited(async () => {
      ran.push('first');
      await new Promise<void>((r) => (release = r));
    });
    let now = 0;
    const deadline = 10;
    const late = limited(
      async () => ran.push('late'),
      () => now > deadline,
    );
    const next = limited(async () => ran.push('next'));
    await new Promise((r) => setImmediate(r));
    now = 11; // the first job took too long for the second
    release();
    await first;
    await expect(late).rejects.toBeInstanceOf(EvaluationTooLateError);
    await next;
    expect(ran).toEqual(['first', 'next']);
    // In time, it runs.
    await expect(limited(async () => 'in time', () => false)).resolves.toBe('in time');
  });

  test('onDrain: called when the last job waiting gets its turn, not while others still wait, nor when a slot frees with none waiting', async () => {
    let drains = 0;
    const limited = createLimiter(1, () => (drains += 1));
    const releases: Array<() => void> = [];
    const job = () => limited(() => new Promise<void>((r) => releases.push(r)));
    const all = [job(), job(), job()]; // one running, two waiting
    await new Promise((r) => setImmediate(r));
    expect(limited.queued()).toBe(2);
    releases.shift()!(); // the second gets its turn; the third still waits
    await new Promise((r) => setImmediate(r));
    expect(drains).toBe(0);
    releases.shift()!(); // the third, the last one waiting, gets its turn
    await new Promise((r) => setImmediate(r));
    expect(drains).toBe(1);
    expect(limited.queued()).toBe(0);
    releases.shift()!(); // no one waits: the slot is simply free
    await Promise.all(all);
    expect(drains).toBe(1);
  });
});
