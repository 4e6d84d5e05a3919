import type { Knex } from 'knex';
import { rowToEvent } from './audit-dal.js';
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

export class AuditQueryDal {
  constructor(private readonly db: Knex) {}

  async query(q: AuditQuery): Promise<AuditEvent[]> {
    const b = this.db('audit_events').orderBy('seq', q.order).limit(q.limit);
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
    return (await b).map(rowToEvent);
  }

  /** Ascending batches for export and verification, without loading the whole log. */
  async *range(fromSeq: number, toSeq: number | undefined, batch = 1000): AsyncGenerator<AuditEvent> {
    let next = fromSeq;
    for (;;) {
      const q = this.db('audit_events').where('seq', '>=', next).orderBy('seq', 'asc').limit(batch);
      if (toSeq !== undefined) q.where('seq', '<=', toSeq);
      const rows = await q;
      for (const row of rows) yield rowToEvent(row);
      if (rows.length < batch) return;
      next = Number(rows[rows.length - 1].seq) + 1;
    }
  }

  async firstSeq(): Promise<number | undefined> {
    const row = await this.db('audit_events').min('seq as s').first();
    return row?.s === null || row?.s === undefined ? undefined : Number(row.s);
  }

  async head(): Promise<{ seq: number; hash: string }> {
    const row = await this.db('audit_head').where({ id: 1 }).first();
    return { seq: Number(row.seq), hash: row.hash };
  }

  async eventAt(seq: number): Promise<AuditEvent | undefined> {
    const row = await this.db('audit_events').where({ seq }).first();
    return row ? rowToEvent(row) : undefined;
  }
}
