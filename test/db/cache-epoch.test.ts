import { describe, expect, it } from 'vitest';
import { CACHE_EPOCH_POLL_MS, CACHE_STALENESS_BOUND_MS, CacheEpoch, deliveryEpochReader, EpochCache } from '../../src/db/cache-epoch.js';

/** A database whose cache_epoch row the test moves, and a clock the test moves. */
function harness() {
  const state = { generation: 1, now: 0, reads: 0, failing: false };
  const db = {
    async readOne<T>(sql: string): Promise<T | undefined> {
      expect(sql).toMatch(/FROM cache_epoch/);
      state.reads++;
      if (state.failing) throw new Error('connection refused');
      return { generation: String(state.generation) } as T;
    },
  };
  const epoch = new CacheEpoch(deliveryEpochReader(db), { now: () => state.now });
  return { state, epoch, cache: new EpochCache<string, string | undefined>(epoch, 3) };
}

describe('CacheEpoch and EpochCache', () => {
  it('serve nothing before the epoch was first read', async () => {
    const { state, epoch, cache } = harness();
    expect(epoch.current()).toBeUndefined();
    cache.set('k', 'v', state.generation);
    expect(cache.get('k')).toBeUndefined();
    await epoch.refresh();
    expect(epoch.current()).toBe(1);
    expect(cache.get('k')).toBeUndefined();
  });

  it('keep a value (a stored undefined too) while the generation it was read under holds', async () => {
    const { state, epoch, cache } = harness();
    await epoch.refresh();
    cache.set('k', 'v', state.generation);
    cache.set('missing', undefined, state.generation);
    expect(cache.get('k')).toEqual({ generation: 1, value: 'v' });
    expect(cache.get('missing')).toEqual({ generation: 1, value: undefined });
  });

  it('drop everything when the generation moves, and refuse a value read before the move', async () => {
    const { state, epoch, cache } = harness();
    await epoch.refresh();
    const readBeforeTheChange = state.generation;
    cache.set('k', 'v', readBeforeTheChange);
    // a change commits while another read is in flight; the poll sees it before that read returns
    state.generation = 2;
    await epoch.refresh();
    expect(cache.get('k')).toBeUndefined();
    expect(cache.size).toBe(0);
    cache.set('late', 'read-before-the-change', readBeforeTheChange);
    expect(cache.get('late')).toBeUndefined();
    cache.set('fresh', 'v2', state.generation);
    expect(cache.get('fresh')?.value).toBe('v2');
  });

  it('never go back to an older generation when reads finish out of order', async () => {
    const { state, epoch, cache } = harness();
    state.generation = 5;
    await epoch.refresh();
    cache.set('k', 'v', state.generation);
    state.generation = 4; // an older read's answer, arriving late
    await epoch.refresh();
    expect(epoch.current()).toBe(5);
    expect(cache.get('k')?.value).toBe('v');
  });

  it('stop serving once the epoch has not been confirmed for the bound less one poll: a change is never served stale past CACHE_STALENESS_BOUND_MS', async () => {
    const { state, epoch, cache } = harness();
    await epoch.refresh();
    cache.set('k', 'v', state.generation);
    // a change commits at t=10 and the database then stops answering
    state.now = 10;
    state.generation = 2;
    state.failing = true;
    await expect(epoch.refresh()).rejects.toThrow(/connection refused/);
    state.now = CACHE_STALENESS_BOUND_MS - CACHE_EPOCH_POLL_MS - 1;
    expect(cache.get('k')?.value).toBe('v');
    state.now = CACHE_STALENESS_BOUND_MS - CACHE_EPOCH_POLL_MS;
    expect(epoch.current()).toBeUndefined();
    expect(cache.get('k')).toBeUndefined();
    // the lapse emptied the cache, and nothing is stored while it lasts
    cache.set('k2', 'v', 1);
    expect(cache.size).toBe(0);
    // the database answers again: the change is seen, the old entries are gone
    state.failing = false;
    await epoch.refresh();
    expect(epoch.current()).toBe(2);
    expect(cache.get('k')).toBeUndefined();
  });

  it('a confirmation counts from when its read started, not when it answered', async () => {
    const { state } = harness();
    let release: () => void = () => undefined;
    const slow = new CacheEpoch(
      async () => {
        await new Promise<void>((resolve) => (release = resolve));
        return state.generation;
      },
      { now: () => state.now },
    );
    state.now = 100;
    const pending = slow.refresh();
    state.now = 100 + CACHE_STALENESS_BOUND_MS;
    release();
    await pending;
    // confirmed by a read that began a whole bound ago: not usable
    expect(slow.current()).toBeUndefined();
  });

  it('expire(): nothing is served until a read that began after it, and a read begun before it confirms nothing', async () => {
    const { state, epoch, cache } = harness();
    await epoch.refresh();
    cache.set('k', 'v', state.generation);
    state.now = 5;
    epoch.expire();
    expect(cache.get('k')).toBeUndefined();
    // a poll that started at t=4 and answers now (the change it may have missed was committed at 5)
    const started = harness();
    const slowRead = new CacheEpoch(async () => state.generation, { now: () => started.state.now });
    await slowRead.refresh();
    started.state.now = 5;
    slowRead.expire();
    started.state.now = 4;
    await slowRead.refresh();
    started.state.now = 6;
    expect(slowRead.current()).toBeUndefined();
    // a read that starts after the expiry confirms again; what was cached before it is gone
    state.now = 6;
    await expect(epoch.confirmed()).resolves.toBe(1);
    expect(cache.get('k')).toBeUndefined();
    cache.set('k', 'v2', state.generation);
    expect(cache.get('k')?.value).toBe('v2');
  });

  it('refreshAfterChange(): when the epoch cannot be read after a change, nothing cached is served until it can', async () => {
    const { state, epoch, cache } = harness();
    await epoch.refresh();
    cache.set('k', 'v', state.generation);
    state.now = 10;
    state.failing = true;
    await expect(epoch.refreshAfterChange()).resolves.toBeUndefined();
    expect(cache.get('k')).toBeUndefined();
    state.failing = false;
    state.generation = 2;
    await epoch.refreshAfterChange();
    expect(epoch.current()).toBe(2);
    expect(cache.size).toBe(0);
  });

  it('empty the caches when the confirmation lapses: a late answer from a read that began before a change cannot bring old entries back', async () => {
    const { state } = harness();
    // a poll begins; a change commits; the poll's answer (the old generation) arrives late
    let answer: (g: number) => void = () => undefined;
    const slow = new CacheEpoch(() => new Promise<number>((resolve) => (answer = resolve)), { now: () => state.now });
    const slowCache = new EpochCache<string, string>(slow, 10);
    await Promise.all([slow.refresh(), Promise.resolve().then(() => answer(1))]);
    slowCache.set('k', 'version-18', 1);
    state.now = 500;
    const late = slow.refresh();
    state.now = CACHE_STALENESS_BOUND_MS; // lapsed: reads meanwhile go to the database (version 19)
    expect(slowCache.get('k')).toBeUndefined();
    answer(1);
    await late;
    // confirmed again (by the read that began at 500), but version 18 is gone
    expect(slow.current()).toBe(1);
    expect(slowCache.get('k')).toBeUndefined();
  });

  it('a value read at a newer generation than the instance knew empties the caches at once, and an older read is not stored after it', async () => {
    const { state, epoch, cache } = harness();
    await epoch.refresh();
    cache.set('k', 'version-10', 1);
    // another request's read (one statement: rows and generation) saw a change the poll has not seen yet
    cache.set('other', 'version-11', 2);
    expect(epoch.current()).toBe(2);
    expect(cache.get('k')).toBeUndefined();
    expect(cache.get('other')?.value).toBe('version-11');
    // a read that began earlier, at generation 1, finishes now: not stored over the newer state
    cache.set('k', 'version-10', 1);
    expect(cache.get('k')).toBeUndefined();
    expect(state.reads).toBe(1);
  });

  it('hold at most maxEntries, the oldest leaving first', async () => {
    const { state, epoch, cache } = harness();
    await epoch.refresh();
    for (const k of ['a', 'b', 'c', 'd']) cache.set(k, k, state.generation);
    expect(cache.size).toBe(3);
    expect(cache.get('a')).toBeUndefined();
    expect(cache.get('d')?.value).toBe('d');
  });

  it('start() keeps polling until stop()', async () => {
    const { state } = harness();
    const epoch = new CacheEpoch(
      async () => {
        state.reads++;
        return state.generation;
      },
      { pollMs: 5 },
    );
    epoch.start();
    try {
      await expect.poll(() => state.reads, { timeout: 5_000, interval: 5 }).toBeGreaterThanOrEqual(3);
      state.generation = 7;
      await expect.poll(() => epoch.current(), { timeout: 5_000, interval: 5 }).toBe(7);
    } finally {
      await epoch.stop();
    }
  });
});
