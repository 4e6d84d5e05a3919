import type { Knex } from 'knex';
import { CACHE_STALENESS_BOUND_MS, type CacheEpoch } from '../../src/db/cache-epoch.js';

/**
 * Retries `attempt` (which asserts) until it passes: for a change that another instance, or a
 * hand edit of the database, makes, which the delivery path's caches honour within
 * CACHE_STALENESS_BOUND_MS. The slack covers a loaded test machine; the bound itself is proved
 * with a controlled clock in test/db/cache-epoch.test.ts.
 */
export async function withinCacheBound<T>(attempt: () => Promise<T>, slackMs = 5_000): Promise<T> {
  const deadline = Date.now() + CACHE_STALENESS_BOUND_MS + slackMs;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

/**
 * Waits until `instance`'s cache epoch has caught up with the database's (the instance's poll
 * has seen every change committed so far, by another instance or by hand), bounded by
 * CACHE_STALENESS_BOUND_MS plus slack. After it, that instance serves nothing cached from
 * before those changes.
 */
export async function cachesCaughtUp(instance: { broker: { services: { db: Knex; cacheEpoch: CacheEpoch } } }, slackMs = 5_000): Promise<void> {
  const { db, cacheEpoch } = instance.broker.services;
  const row = await db('cache_epoch').where({ id: 1 }).first();
  const target = Number(row.generation);
  const deadline = Date.now() + CACHE_STALENESS_BOUND_MS + slackMs;
  while ((cacheEpoch.current() ?? Number.NEGATIVE_INFINITY) < target) {
    if (Date.now() > deadline) throw new Error(`the instance's cache epoch did not reach generation ${target} within the bound`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
