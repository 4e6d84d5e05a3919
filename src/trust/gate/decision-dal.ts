import type { Database, Transaction } from '../../db/database.js';

export type ReleaseDecision = 'allow' | 'deny' | 'warn';

/** A row of release_decisions: every decision the gate made, cached or fresh. */
export interface DecisionRow {
  id: string;
  image: string;
  digest: string | null;
  policy: string | null;
  policy_version: number | null;
  decision: ReleaseDecision;
  /** JSON: the public checks. */
  checks: string;
  /** SQLite answers 0/1. */
  cached: boolean | number;
  cached_from: string | null;
  valid_until: number | null;
  decided_by: string;
  decided_at: number;
}

/** A row of release_gate_cache: a deterministic decision, reusable until valid_until. */
export interface GateCacheRow {
  cache_key: string;
  subject: string;
  digest: string;
  policy: string;
  policy_version: number;
  decision_id: string;
  decision: ReleaseDecision;
  checks: string;
  valid_until: number;
}

export type CacheEntry = Pick<GateCacheRow, 'decision_id' | 'decision' | 'checks' | 'valid_until'>;

export interface DecisionFilter {
  image?: string;
  digest?: string;
  decision?: string;
  policy?: string;
  /** Keyset: decisions older than (at, id). */
  after?: { at: number; id: string };
  limit: number;
}

/** The release_decisions and release_gate_cache tables; nothing else queries them. */
export class DecisionDal {
  constructor(private readonly db: Database) {}

  /** One primary-key lookup; an expired entry never matches. */
  async findCached(cacheKey: string, now: number): Promise<CacheEntry | undefined> {
    return this.db
      .reader<GateCacheRow>('release_gate_cache')
      .where('cache_key', cacheKey)
      .andWhere('valid_until', '>', now)
      .first('decision_id', 'decision', 'checks', 'valid_until');
  }

  async insert(trx: Transaction, row: DecisionRow): Promise<void> {
    await trx<DecisionRow>('release_decisions').insert(row);
  }

  /** Stores (or replaces) the cache entry for its key. */
  async cache(trx: Transaction, entry: GateCacheRow): Promise<void> {
    await trx<GateCacheRow>('release_gate_cache').insert(entry).onConflict('cache_key').merge();
  }

  async find(id: string): Promise<DecisionRow | undefined> {
    return this.db.reader<DecisionRow>('release_decisions').where({ id }).first();
  }

  /** Newest first; keyset pagination on (decided_at, id). */
  async list(q: DecisionFilter): Promise<DecisionRow[]> {
    const query = this.db.reader<DecisionRow>('release_decisions').orderBy([
      { column: 'decided_at', order: 'desc' },
      { column: 'id', order: 'desc' },
    ]);
    if (q.image) query.where('image', q.image);
    if (q.digest) query.where('digest', q.digest);
    if (q.decision) query.where('decision', q.decision);
    if (q.policy) query.where('policy', q.policy);
    if (q.after) {
      const { at, id } = q.after;
      query.where((w) => w.where('decided_at', '<', at).orWhere((w2) => w2.where('decided_at', '=', at).andWhere('id', '<', id)));
    }
    return query.limit(q.limit);
  }
}
