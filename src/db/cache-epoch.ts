import type { Logger } from 'pino';
import type { Database } from './database.js';

/** How often each instance reads the epoch. */
export const CACHE_EPOCH_POLL_MS = 250;
/**
 * The documented bound: a change committed on any instance (or written into the database by
 * hand) stops being served from any instance's cache within this time. An entry is only used
 * while the epoch was confirmed by a read that *started* less than `CACHE_STALENESS_BOUND_MS -
 * CACHE_EPOCH_POLL_MS` ago, so a read that began after the change saw it, whatever the poll's
 * own timing; when polls fail (the database is down) or fall behind (a stalled loop), the
 * caches are bypassed and reads go to the database.
 */
export const CACHE_STALENESS_BOUND_MS = 1000;

const SELECT_EPOCH_SQL = 'SELECT generation FROM cache_epoch WHERE id = 1';

/** Reads the delivery path's epoch (migration 012), the table this module owns. */
export function deliveryEpochReader(db: Pick<Database, 'readOne'>): () => Promise<number> {
  return async () => {
    const row = await db.readOne<{ generation: number | string }>(SELECT_EPOCH_SQL, []);
    return Number(row?.generation);
  };
}

/**
 * One number that says "something cached reads depend on has changed", read with `read`:
 * the delivery path's (table cache_epoch, migration 012: triggers move it on every write to
 * clients, groups, memberships, access_grants, secrets, secret_versions and revoked_tokens) and the
 * release gate's (gate_trust_epoch, migration 013). Each instance polls it; when it moves, every
 * `EpochCache` on it drops what it holds and every `onChange` listener is told.
 */
export class CacheEpoch {
  private generation: number | undefined;
  /** performance.now() at the start of the newest read that confirmed `generation`. */
  private confirmedAt = Number.NEGATIVE_INFINITY;
  /** performance.now() of the newest `expire`: a read that started before it confirms nothing. */
  private expiredAt = Number.NEGATIVE_INFINITY;
  private readonly listeners = new Set<() => void>();
  /** Whether the caches were emptied when the last confirmation lapsed (and nothing was confirmed since). */
  private emptiedAtLapse = false;
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private readonly usableForMs: number;

  constructor(
    /** Reads the generation (one primary-key row). */
    private readonly read: () => Promise<number>,
    private readonly options: { pollMs?: number; boundMs?: number; logger?: Logger; now?: () => number; name?: string } = {},
  ) {
    this.usableForMs = (options.boundMs ?? CACHE_STALENESS_BOUND_MS) - (options.pollMs ?? CACHE_EPOCH_POLL_MS);
  }

  private now(): number {
    return this.options.now ? this.options.now() : performance.now();
  }

  /**
   * The generation to stamp a read with, taken before the read; undefined when the caches may
   * not be used now (never confirmed, not confirmed recently enough, or expired here).
   */
  current(): number | undefined {
    if (this.now() - this.confirmedAt < this.usableForMs) return this.generation;
    // While unconfirmed, reads go to the database and may see newer rows than the caches hold. A
    // confirmation that began before a change and answers late would make those entries usable
    // again, and a client would see a version go back: they go now.
    if (!this.emptiedAtLapse) {
      this.emptiedAtLapse = true;
      this.changed();
    }
    return undefined;
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }

  /** The confirmed generation, reading the epoch first when it is not (rejects when the database does). */
  async confirmed(): Promise<number> {
    const generation = this.current();
    if (generation !== undefined) return generation;
    await this.refresh();
    return this.generation!;
  }

  register(cache: { clear(): void }): void {
    this.listeners.add(() => cache.clear());
  }

  /** Called whenever the generation moves. */
  onChange(listener: () => void): void {
    this.listeners.add(listener);
  }

  /**
   * This instance committed a change: until the epoch is read again, nothing read under the old
   * generation is used. Synchronous, so it takes effect before the writer's caller is answered.
   */
  expire(): void {
    this.expiredAt = this.now();
    this.confirmedAt = Number.NEGATIVE_INFINITY;
  }

  /**
   * Reads the epoch now. Called by the poll, and by this instance after it committed a change,
   * so that its own caches drop the old state before its caller answers.
   */
  async refresh(): Promise<void> {
    const started = this.now();
    const generation = await this.read();
    if (!Number.isSafeInteger(generation)) throw new Error(`${this.options.name ?? 'cache epoch'}: no generation row`);
    // reads can finish out of order: an older generation must not replace a newer one
    if (this.generation === undefined || generation > this.generation) {
      this.generation = generation;
      this.changed();
    }
    // a read that started before an `expire` may have missed the change it announced
    if (started > this.confirmedAt && started >= this.expiredAt) {
      this.confirmedAt = started;
      this.emptiedAtLapse = false;
    }
  }

  /**
   * A generation read together with rows (a repository's statement): a newer one than this
   * instance knew empties the caches at once. It confirms nothing (the bound's clock runs on polls).
   */
  observe(generation: number): void {
    if (this.generation !== undefined && Number.isSafeInteger(generation) && generation > this.generation) {
      this.generation = generation;
      this.changed();
    }
  }

  /**
   * After this instance committed a change: reads the epoch before the caller answers, so its
   * own caches drop what the change made stale. When the epoch cannot be read now, `expire`
   * keeps them unused until a read that starts later succeeds; the change stands either way.
   */
  async refreshAfterChange(): Promise<void> {
    try {
      await this.refresh();
    } catch (err) {
      this.expire();
      this.options.logger?.warn({ err: { message: (err as Error).message } }, `${this.options.name ?? 'cache epoch'} could not be read after a change; its caches are unused until it is`);
    }
  }

  start(): void {
    if (this.timer) return;
    const tick = () => {
      this.polling ??= this.refresh()
        .catch((err: unknown) => {
          // the caches stop being used by themselves once the last confirmation is too old
          this.options.logger?.debug({ err: { message: (err as Error).message } }, `${this.options.name ?? 'cache epoch'} poll failed`);
        })
        .finally(() => {
          this.polling = undefined;
        });
    };
    tick();
    this.timer = setInterval(tick, this.options.pollMs ?? CACHE_EPOCH_POLL_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.polling;
  }
}

/**
 * A bounded map whose entries live only as long as the epoch they were read under. A repository
 * reads the epoch's generation in the same statement as the rows (`epochGeneration`), so an
 * entry holds exactly the database's state at that generation: one read at an older generation
 * is never stored, and one at a newer generation tells the epoch at once (`observe`), so this
 * instance never serves, from here, anything older than what it has already read.
 */
export class EpochCache<K, V> {
  private readonly entries = new Map<K, { generation: number; value: V }>();

  constructor(
    private readonly epoch: CacheEpoch,
    private readonly maxEntries: number,
  ) {
    epoch.register(this);
  }

  /** The entry stored under the current generation, if any: wrapped, so that a stored undefined (a refusal) is told apart from a miss. */
  get(key: K): { value: V } | undefined {
    const generation = this.epoch.current();
    if (generation === undefined) return undefined;
    const entry = this.entries.get(key);
    return entry && entry.generation === generation ? entry : undefined;
  }

  /** `generation`: the epoch's generation read with `value`, in the same statement. */
  set(key: K, value: V, generation: number): void {
    this.epoch.observe(generation);
    if (generation !== this.epoch.current()) return;
    if (this.entries.size >= this.maxEntries && !this.entries.has(key)) {
      // the oldest insertion goes first (a Map iterates in insertion order)
      this.entries.delete(this.entries.keys().next().value as K);
    }
    this.entries.set(key, { generation, value });
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
