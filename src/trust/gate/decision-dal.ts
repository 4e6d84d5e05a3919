import type { Database, Statement, Transaction } from '../../db/database.js';

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

  /** The gate's trust epoch (migration 013): one primary-key row. */
  async trustEpoch(): Promise<number> {
    const row = await this.db.readOne<{ generation: number | string }>('SELECT generation FROM gate_trust_epoch WHERE id = 1', []);
    return Number(row?.generation);
  }

  /**
   * The decision row as a statement, for the audit's group commit (AuditService.recordWithRows):
   * it commits with its event, in one transaction shared with other callers'.
   */
  insertStatement(row: DecisionRow): Statement {
    return {
      sql: 'INSERT INTO release_decisions (id, image, digest, policy, policy_version, decision, checks, cached, cached_from, valid_until, decided_by, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      // a boolean column: SQLite stores 0/1 and PostgreSQL reads '1'/'0' as true/false
      params: [row.id, row.image, row.digest, row.policy, row.policy_version, row.decision, row.checks, row.cached ? 1 : 0, row.cached_from, row.valid_until, row.decided_by, row.decided_at],
    };
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
