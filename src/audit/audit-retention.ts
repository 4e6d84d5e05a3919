import { setImmediate as nextTurn } from 'node:timers/promises';
import type { AuditQueryDal } from './audit-query-dal.js';
import type { AuditSequencer } from './audit-sequencer.js';
import type { AuditService } from './audit-service.js';

/**
 * Leaves whose events one retention transaction removes. On SQLite a DELETE runs synchronously
 * on the event loop (and holds the one write lock, which a broker beside `keywarden audit prune`
 * waits for): about 3 µs per event, so 2,000 keep one step at a few milliseconds. PostgreSQL
 * deletes off the loop and without blocking writers; larger steps only save round trips.
 */
const LEAVES_PER_STEP = { sqlite: 2_000, postgres: 20_000 } as const;

/**
 * Removes the content of events recorded before `before`. Only sequenced events go, and their
 * leaf hashes stay in the tree: signed heads, proofs and verification still cover them, and an
 * export starts with the hashes of the removed prefix. Retention removes the oldest leaves first,
 * which is what verification accepts as missing content (a gap anywhere else is tampering).
 * It goes in steps, oldest first, each its own transaction with its own `audit.prune` event
 * (`removed`: the events of that step), with the event loop let in between: after every commit
 * the events removed are still a prefix of the log.
 */
export async function pruneAuditLog(
  deps: { dal: AuditQueryDal; sequencer: AuditSequencer; audit: AuditService },
  before: number,
  options: { leavesPerStep?: number } = {},
): Promise<{ removed: number; throughLeaf: number }> {
  // events queued before the cut-off get their leaves first, so the cut-off is one leaf index
  await deps.sequencer.flush();
  const leafEnd = await deps.dal.leafEndBefore(before);
  if (leafEnd === 0) return { removed: 0, throughLeaf: -1 };
  const step = options.leavesPerStep ?? LEAVES_PER_STEP[deps.dal.dialect];
  let removed = 0;
  for (let from = (await deps.dal.firstStoredLeaf()) ?? leafEnd; from < leafEnd; ) {
    const to = Math.min(from + step, leafEnd);
    // the removal and its event commit together: when the event cannot be written nothing is removed
    removed += await deps.audit.transact(async (trx, record) => {
      const n = await deps.dal.deleteLeavesBefore(trx, to);
      await record({
        actor: { kind: 'system', name: 'keywarden-cli' },
        action: 'audit.prune',
        resource: { kind: 'audit-log', name: 'events' },
        outcome: 'allow',
        details: { removed: n, throughLeaf: to - 1, before: new Date(before).toISOString() },
      });
      return n;
    });
    from = to;
    if (from < leafEnd) await nextTurn();
  }
  return { removed, throughLeaf: leafEnd - 1 };
}
