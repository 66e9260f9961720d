import { releaseWhenPossible } from '../../src/http/idempotency';

describe("a failed request's idempotency-ref is freed even when the database is away then", () => {
  afterEach(() => jest.useRealTimers());

  test('tried again in the background, backing off, until it goes through', async () => {
    jest.useFakeTimers({ now: 0 });
    let calls = 0;
    const release = jest.fn(async () => {
      calls += 1;
      if (calls < 4) throw new Error('connect ECONNREFUSED');
    });
    await releaseWhenPossible(release, 60_000);
    expect(calls).toBe(1);
    await jest.advanceTimersByTimeAsync(500);
    expect(calls).toBe(2);
    await jest.advanceTimersByTimeAsync(1000);
    expect(calls).toBe(3);
    await jest.advanceTimersByTimeAsync(2000);
    expect(calls).toBe(4); // through: no more tries
    await jest.advanceTimersByTimeAsync(60_000);
    expect(calls).toBe(4);
  });

  test('given up once the record would count as abandoned anyway', async () => {
    jest.useFakeTimers({ now: 0 });
    const release = jest.fn(async () => {
      throw new Error('connect ECONNREFUSED');
    });
    await releaseWhenPossible(release, 5_000);
    await jest.advanceTimersByTimeAsync(60_000);
    expect(release.mock.calls.length).toBe(4); // at 0, 0.5, 1.5 and 3.5 s; the next (7.5 s) would be past 5 s
  });
});
