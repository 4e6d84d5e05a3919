import type { Database, Transaction } from '../db/database.js';
import { rowToEvent, type AuditEventRow, type AuditHeadRow } from './audit-dal.js';
import type { AuditEvent } from './audit-types.js';

export interface AuditQuery {
  actor?: string;
  actorKind?: string;
  action?: string;
  resourceKind?: string;
  resource?: string;
  outcome?: string;
  since?: number;
  until?: number;
  cursor?: number;
  order: 'asc' | 'desc';
  limit: number;
}

/** An audit_checkpoints row. */
export interface AuditCheckpointRow {
  id: number;
  seq: number;
  head_hash: string;
  created_at: number;
  /** compact JWS over the checkpoint payload */
  jws: string;
  kid: string;
  reason: string;
}

export type NewAuditCheckpointRow = Omit<AuditCheckpointRow, 'id'>;

/**
 * Reads of audit_events, audit_head and audit_checkpoints, and pruning. Appends go through
 * appendEventsProgram (audit-dal.ts), never through here.
 */
export class AuditQueryDal {
  private readonly db: Database['reader'];

  constructor(database: Database) {
    this.db = database.reader;
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
    if (q.since !== undefined) b.where('ts', '>=', q.since);
    if (q.until !== undefined) b.where('ts', '<', q.until);
    if (q.cursor !== undefined) b.where('seq', q.order === 'desc' ? '<' : '>', q.cursor);
    const rows: AuditEventRow[] = await b;
    return rows.map(rowToEvent);
  }

  /** Ascending batches for export and verification, without loading the whole log. */
  async *range(fromSeq: number, toSeq: number | undefined, batch = 1000): AsyncGenerator<AuditEvent> {
    let next = fromSeq;
    for (;;) {
      const q = this.db<AuditEventRow>('audit_events').where('seq', '>=', next).orderBy('seq', 'asc').limit(batch);
      if (toSeq !== undefined) q.where('seq', '<=', toSeq);
      const rows: AuditEventRow[] = await q;
      for (const row of rows) yield rowToEvent(row);
      if (rows.length < batch) return;
      next = Number(rows[rows.length - 1].seq) + 1;
    }
  }

  async firstSeq(): Promise<number | undefined> {
    const row = (await this.db('audit_events').min('seq as s').first()) as { s: number | string | null } | undefined;
    return row?.s === null || row?.s === undefined ? undefined : Number(row.s);
  }

  async head(): Promise<{ seq: number; hash: string }> {
    const row: AuditHeadRow | undefined = await this.db<AuditHeadRow & { id: number }>('audit_head').where({ id: 1 }).first();
    if (!row) throw new Error('audit head row is missing');
    return { seq: Number(row.seq), hash: row.hash };
  }

  async eventAt(seq: number): Promise<AuditEvent | undefined> {
    const row: AuditEventRow | undefined = await this.db<AuditEventRow>('audit_events').where({ seq }).first();
    return row ? rowToEvent(row) : undefined;
  }

  /** The highest sequence number of the events before `ts` (0 when none). */
  async lastSeqBefore(ts: number): Promise<number> {
    const row = (await this.db('audit_events').where('ts', '<', ts).max('seq as s').first()) as { s: number | string | null } | undefined;
    return row?.s === null || row?.s === undefined ? 0 : Number(row.s);
  }

  /** Removes the events up to `seq`; the number removed. */
  async deleteThrough(trx: Transaction, seq: number): Promise<number> {
    return trx('audit_events').where('seq', '<=', seq).delete();
  }

  async insertCheckpoint(row: NewAuditCheckpointRow): Promise<number> {
    const [inserted] = await this.db<AuditCheckpointRow>('audit_checkpoints').insert(row).returning('id');
    return typeof inserted === 'object' ? inserted.id : inserted;
  }

  /** Newest first. */
  async listCheckpoints(limit: number, beforeId?: number): Promise<AuditCheckpointRow[]> {
    const q = this.db<AuditCheckpointRow>('audit_checkpoints').orderBy('id', 'desc').limit(limit);
    if (beforeId !== undefined) q.where('id', '<', beforeId);
    return q;
  }

  /** The newest checkpoint at exactly `seq`. */
  async checkpointAt(seq: number): Promise<AuditCheckpointRow | undefined> {
    return this.db<AuditCheckpointRow>('audit_checkpoints').where({ seq }).orderBy('id', 'desc').first();
  }
}
