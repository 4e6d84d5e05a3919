import type { AuditQueryDal } from './audit-query-dal.js';
import type { AuditSequencer } from './audit-sequencer.js';
import type { AuditService } from './audit-service.js';

/**
 * Removes the content of events recorded before `before`. Only sequenced events go, and their
 * leaf hashes stay in the tree: signed heads, proofs and verification still cover them, and an
 * export starts with the hashes of the removed prefix. Retention removes the oldest leaves first,
 * which is what verification accepts as missing content (a gap anywhere else is tampering).
 */
export async function pruneAuditLog(
  deps: { dal: AuditQueryDal; sequencer: AuditSequencer; audit: AuditService },
  before: number,
): Promise<{ removed: number; throughLeaf: number }> {
  // events queued before the cut-off get their leaves first, so the cut-off is one leaf index
  await deps.sequencer.flush();
  const leafEnd = await deps.dal.leafEndBefore(before);
  if (leafEnd === 0) return { removed: 0, throughLeaf: -1 };
  // the removal and its event commit together: when the event cannot be written nothing is removed
  const removed = await deps.audit.transact(async (trx, record) => {
    const n = await deps.dal.deleteLeavesBefore(trx, leafEnd);
    await record({
      actor: { kind: 'system', name: 'keywarden-cli' },
      action: 'audit.prune',
      resource: { kind: 'audit-log', name: 'events' },
      outcome: 'allow',
      details: { removed: n, throughLeaf: leafEnd - 1, before: new Date(before).toISOString() },
    });
    return n;
  });
  return { removed, throughLeaf: leafEnd - 1 };
}
