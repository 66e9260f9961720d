import { createLookupCache, createLookupCaches } from '../../src/cache/lookups';

function counted<V>(values: Record<string, V>) {
  const calls: string[] = [];
  const load = async (id: string) => {
    calls.push(id);
    return values[id];
  };
  return { calls, load };
}

describe('lookup cache', () => {
  test('a hit within the TTL does not load; after it, it loads again', async () => {
    let now = 1000;
    const cache = createLookupCache<string>({ ttlMs: 5000, maxEntries: 10, enabled: () => true, now: () => now });
    const { calls, load } = counted({ a: 'A' });
    expect(await cache.get('a', load)).toBe('A');
    expect(await cache.get('a', load)).toBe('A');
    expect(calls).toEqual(['a']);
    now += 5001;
    expect(await cache.get('a', load)).toBe('A');
    expect(calls).toEqual(['a', 'a']);
  });

  test('misses are not remembered', async () => {
    const cache = createLookupCache<string>({ ttlMs: 5000, maxEntries: 10, enabled: () => true });
    const { calls, load } = counted<string>({});
    expect(await cache.get('nope', load)).toBeUndefined();
    expect(await cache.get('nope', load)).toBeUndefined();
    expect(calls).toEqual(['nope', 'nope']);
    expect(cache.size).toBe(0);
  });

  test('evict: the next get loads; a load under way when its id was evicted is not remembered', async () => {
    const cache = createLookupCache<string>({ ttlMs: 5000, maxEntries: 10, enabled: () => true });
    const values: Record<string, string> = { a: 'old' };
    const { calls, load } = counted(values);
    await cache.get('a', load);
    cache.evict('a');
    values.a = 'new';
    expect(await cache.get('a', load)).toBe('new');

    // A load that read the row before the change, and returns after the eviction.
    let release!: (v: string) => void;
    const slow = () => new Promise<string>((r) => (release = r));
    cache.evict('a');
    const pending = cache.get('a', slow);
    cache.evict('a'); // the change lands while that load is in flight
    release('stale');
    expect(await pending).toBe('stale'); // its caller gets what it read…
    expect(await cache.get('a', load)).toBe('new'); // …but nobody after it
    expect(calls).toEqual(['a', 'a', 'a']);
  });

  test('disabled (not listening for changes): every get loads, nothing is kept', async () => {
    let on = false;
    const cache = createLookupCache<string>({ ttlMs: 5000, maxEntries: 10, enabled: () => on });
    const { calls, load } = counted({ a: 'A' });
    await cache.get('a', load);
    await cache.get('a', load);
    expect(calls).toHaveLength(2);
    expect(cache.size).toBe(0);
    on = true;
    await cache.get('a', load);
    await cache.get('a', load);
    expect(calls).toHaveLength(3);
  });

  test('a TTL of 0 turns caching off', async () => {
    const cache = createLookupCache<string>({ ttlMs: 0, maxEntries: 10, enabled: () => true });
    const { calls, load } = counted({ a: 'A' });
    await cache.get('a', load);
    await cache.get('a', load);
    expect(calls).toHaveLength(2);
  });

  test('bounded: beyond maxEntries the oldest entry goes', async () => {
    const cache = createLookupCache<string>({ ttlMs: 5000, maxEntries: 3, enabled: () => true });
    const { calls, load } = counted({ a: 'A', b: 'B', c: 'C', d: 'D' });
    for (const id of ['a', 'b', 'c', 'd']) await cache.get(id, load);
    expect(cache.size).toBe(3);
    await cache.get('a', load);
    expect(calls).toEqual(['a', 'b', 'c', 'd', 'a']);
  });

  test('the pair: turning listening off empties both caches and stops caching; changed() evicts one kind', async () => {
    const caches = createLookupCaches({ ttlSeconds: 60, listening: true });
    const { calls, load } = counted<unknown>({ x: { id: 'x' } });
    await caches.clients.get('x', load);
    await caches.tenants.get('x', load);
    caches.changed('client', 'x');
    await caches.clients.get('x', load);
    await caches.tenants.get('x', load); // still cached
    expect(calls).toHaveLength(3);
    caches.listening = false;
    expect(caches.clients.size + caches.tenants.size).toBe(0);
    await caches.clients.get('x', load);
    await caches.clients.get('x', load);
    expect(calls).toHaveLength(5);
  });
});
