import type { Dialect } from '../db/connection.js';
import type { Database, Transaction } from '../db/database.js';
import { rowToEvent, type AuditEventRow } from './audit-dal.js';
import type { AuditEvent } from './audit-types.js';

export interface AuditQuery {
  actor?: string;
  actorKind?: string;
  action?: string;
  resourceKind?: string;
  resource?: string;
  outcome?: string;
  /** The recorded source address: exact, or a prefix when it ends in `*`. */
  sourceIp?: string;
  since?: number;
  until?: number;
  cursor?: number;
  order: 'asc' | 'desc';
  limit: number;
}

/** One bucket of activityCounts(); buckets without events are absent. */
export interface ActivityBucketRow {
  bucket: number;
  secret_reads: number;
  denials: number;
  token_issuances: number;
  signatures: number;
  releases_allow: number;
  releases_warn: number;
  releases_deny: number;
}

/**
 * Reads of audit_events, audit_head and audit_checkpoints, and pruning. Appends go through
 * appendEventsProgram (audit-dal.ts), never through here.
 */
export class AuditQueryDal {
  private readonly db: Database['reader'];
  /** Which database: retention sizes its steps by it. */
  readonly dialect: Dialect;

  constructor(database: Database) {
    this.db = database.reader;
    this.dialect = database.dialect;
  }

  /**
   * Activity counts per time bucket, counted by the database: `buckets` buckets of `bucketMs`
   * from `from` (events with from <= ts < from + buckets * bucketMs). Secret reads, denials of
   * anything, token issuances, signatures, and release decisions by their decision.
   */
  async activityCounts(from: number, bucketMs: number, buckets: number): Promise<ActivityBucketRow[]> {
    const to = from + bucketMs * buckets;
    // the release decision is in the event's details; SQLite and PostgreSQL read JSON differently
    const decision = this.dialect === 'postgres' ? "(details::jsonb ->> 'decision')" : "json_extract(details, '$.decision')";
    const rows = (await this.db('audit_events')
      .select(
        this.db.raw('CAST((ts - CAST(? AS BIGINT)) / CAST(? AS BIGINT) AS INTEGER) AS bucket', [from, bucketMs]),
        this.db.raw("SUM(CASE WHEN action = 'secret.read' AND outcome = 'allow' THEN 1 ELSE 0 END) AS secret_reads"),
        this.db.raw("SUM(CASE WHEN outcome = 'deny' THEN 1 ELSE 0 END) AS denials"),
        this.db.raw("SUM(CASE WHEN action = 'auth.token.issue' AND outcome = 'allow' THEN 1 ELSE 0 END) AS token_issuances"),
        this.db.raw("SUM(CASE WHEN action = 'image.sign' AND outcome = 'allow' THEN 1 ELSE 0 END) AS signatures"),
        this.db.raw(`SUM(CASE WHEN action = 'release.decide' AND ${decision} = 'allow' THEN 1 ELSE 0 END) AS releases_allow`),
        this.db.raw(`SUM(CASE WHEN action = 'release.decide' AND ${decision} = 'warn' THEN 1 ELSE 0 END) AS releases_warn`),
        this.db.raw(`SUM(CASE WHEN action = 'release.decide' AND ${decision} = 'deny' THEN 1 ELSE 0 END) AS releases_deny`),
      )
      .where('ts', '>=', from)
      .andWhere('ts', '<', to)
      .andWhere((w) => w.whereIn('action', ['secret.read', 'auth.token.issue', 'image.sign', 'release.decide']).orWhere('outcome', 'deny'))
      .groupBy('bucket')
      .orderBy('bucket', 'asc')) as Array<Record<keyof ActivityBucketRow, number | string | null>>;
    return rows.map((r) => ({
      bucket: Number(r.bucket),
      secret_reads: Number(r.secret_reads ?? 0),
      denials: Number(r.denials ?? 0),
      token_issuances: Number(r.token_issuances ?? 0),
      signatures: Number(r.signatures ?? 0),
      releases_allow: Number(r.releases_allow ?? 0),
      releases_warn: Number(r.releases_warn ?? 0),
      releases_deny: Number(r.releases_deny ?? 0),
    }));
  }

  async query(q: AuditQuery): Promise<AuditEvent[]> {
    const b = this.db<AuditEventRow>('audit_events').orderBy('seq', q.order).limit(q.limit);
    if (q.actor) b.where((w) => w.where('actor_name', q.actor!).orWhere('actor_id', q.actor!));
    if (q.actorKind) b.where('actor_kind', q.actorKind);
    if (q.action) {
      // a trailing * selects a family of actions, e.g. secret.*
      // (LIKE wildcards in the prefix are escaped, not dropped: secret_* must not match secret.read)
      if (q.action.endsWith('*')) b.whereRaw("action LIKE ? ESCAPE '!'", [`${q.action.slice(0, -1).replace(/[!%_]/g, '!$&')}%`]);
      else b.where('action', q.action);
    }
    if (q.resourceKind) b.where('resource_kind', q.resourceKind);
    if (q.resource) b.where('resource_name', q.resource);
    if (q.outcome) b.where('outcome', q.outcome);
    if (q.sourceIp) {
      if (q.sourceIp.endsWith('*')) b.whereRaw("source_ip LIKE ? ESCAPE '!'", [`${q.sourceIp.slice(0, -1).replace(/[!%_]/g, '!$&')}%`]);
      else b.where('source_ip', q.sourceIp);
    }
    if (q.since !== undefined) b.where('ts', '>=', q.since);
    if (q.until !== undefined) b.where('ts', '<', q.until);
    if (q.cursor !== undefined) b.where('seq', q.order === 'desc' ? '<' : '>', q.cursor);
    const rows: AuditEventRow[] = await b;
    return rows.map(rowToEvent);
  }

  /** Sequenced events with leaf indexes in [from, to), ascending, in batches (export; small ones on SQLite, which reads synchronously). */
  async *leafRange(from: number, to: number, batch = this.dialect === 'sqlite' ? 250 : 1000): AsyncGenerator<AuditEvent> {
    let next = from;
    while (next < to) {
      const rows: AuditEventRow[] = await this.db<AuditEventRow>('audit_events').where('leaf_index', '>=', next).andWhere('leaf_index', '<', to).orderBy('leaf_index', 'asc').limit(batch);
      for (const row of rows) yield rowToEvent(row);
      if (rows.length < batch) return;
      next = Number(rows[rows.length - 1].leaf_index) + 1;
    }
  }

  async eventBySeq(seq: number): Promise<AuditEvent | undefined> {
    const row: AuditEventRow | undefined = await this.db<AuditEventRow>('audit_events').where({ seq }).first();
    return row ? rowToEvent(row) : undefined;
  }

  async eventByLeaf(leafIndex: number): Promise<AuditEvent | undefined> {
    const row: AuditEventRow | undefined = await this.db<AuditEventRow>('audit_events').where({ leaf_index: leafIndex }).first();
    return row ? rowToEvent(row) : undefined;
  }

  /** The lowest leaf index whose event is still stored (retention removes the oldest first). */
  async firstStoredLeaf(): Promise<number | undefined> {
    const row = (await this.db('audit_events').min('leaf_index as l').first()) as { l: number | string | null } | undefined;
    return row?.l === null || row?.l === undefined ? undefined : Number(row.l);
  }

  /** One past the highest leaf index of the sequenced events recorded before `ts` (0 when none). */
  async leafEndBefore(ts: number): Promise<number> {
    const row = (await this.db('audit_events').where('ts', '<', ts).whereNotNull('leaf_index').max('leaf_index as l').first()) as { l: number | string | null } | undefined;
    return row?.l === null || row?.l === undefined ? 0 : Number(row.l) + 1;
  }

  /**
   * Removes the events of leaves below `leafEnd`. Their leaf hashes stay in the tree, so proofs
   * and verification still cover them; only their content is gone.
   */
  async deleteLeavesBefore(trx: Transaction, leafEnd: number): Promise<number> {
    return trx('audit_events').where('leaf_index', '<', leafEnd).delete();
  }
}
