import type { Knex } from 'knex';
import type { AuditCheckpoints } from './audit-checkpoints.js';
import type { AuditService } from './audit-service.js';

/**
 * Removes events older than `before`, but only after a signed checkpoint covering the last
 * removed event exists, so the remaining chain still verifies from that anchor.
 */
export async function pruneAuditLog(
  deps: { db: Knex; checkpoints: AuditCheckpoints; audit: AuditService },
  before: number,
): Promise<{ removed: number; throughSeq: number; checkpointId?: number }> {
  const row = await deps.db('audit_events').where('ts', '<', before).max('seq as s').first();
  const throughSeq = row?.s === null || row?.s === undefined ? 0 : Number(row.s);
  if (throughSeq === 0) return { removed: 0, throughSeq: 0 };
  const checkpoint = await deps.checkpoints.create('prune', throughSeq);
  if (!checkpoint) throw new Error(`could not checkpoint seq ${throughSeq}; nothing was removed`);
  // the removal and its event commit together: when the event cannot be written nothing is removed
  const removed = await deps.audit.transact(async (trx, record) => {
    const n = await trx('audit_events').where('seq', '<=', throughSeq).delete();
    await record({
      actor: { kind: 'system', name: 'keywarden-cli' },
      action: 'audit.prune',
      resource: { kind: 'audit-log', name: 'events' },
      outcome: 'allow',
      details: { removed: n, throughSeq, checkpointId: checkpoint.id, before: new Date(before).toISOString() },
    });
    return n;
  });
  return { removed, throughSeq, checkpointId: checkpoint.id };
}
