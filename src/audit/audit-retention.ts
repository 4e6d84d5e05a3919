import type { AuditCheckpoints } from './audit-checkpoints.js';
import type { AuditQueryDal } from './audit-query-dal.js';
import type { AuditService } from './audit-service.js';

/**
 * Removes events older than `before`, but only after a signed checkpoint covering the last
 * removed event exists, so the remaining chain still verifies from that anchor.
 */
export async function pruneAuditLog(
  deps: { dal: AuditQueryDal; checkpoints: AuditCheckpoints; audit: AuditService },
  before: number,
): Promise<{ removed: number; throughSeq: number; checkpointId?: number }> {
  const throughSeq = await deps.dal.lastSeqBefore(before);
  if (throughSeq === 0) return { removed: 0, throughSeq: 0 };
  const checkpoint = await deps.checkpoints.create('prune', throughSeq);
  if (!checkpoint) throw new Error(`could not checkpoint seq ${throughSeq}; nothing was removed`);
  // the removal and its event commit together: when the event cannot be written nothing is removed
  const removed = await deps.audit.transact(async (trx, record) => {
    const n = await deps.dal.deleteThrough(trx, throughSeq);
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
