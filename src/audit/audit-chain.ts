import crypto from 'node:crypto';
import { canonicalJson } from './canonical-json.js';
import type { AuditEvent } from './audit-types.js';

/** Everything in an event except its own hash is covered by the hash. */
export function hashedFields(event: Omit<AuditEvent, 'hash'>) {
  return {
    seq: event.seq,
    ts: event.ts,
    actorKind: event.actorKind,
    actorId: event.actorId,
    actorName: event.actorName,
    action: event.action,
    resourceKind: event.resourceKind,
    resourceName: event.resourceName,
    outcome: event.outcome,
    reason: event.reason,
    requestId: event.requestId,
    sourceIp: event.sourceIp,
    userAgent: event.userAgent,
    details: event.details,
    prevHash: event.prevHash,
  };
}

export function chainHash(prevHash: string, event: Omit<AuditEvent, 'hash'>): string {
  return crypto.createHash('sha256').update(prevHash, 'utf8').update(canonicalJson(hashedFields(event)), 'utf8').digest('hex');
}

export interface ChainVerification {
  ok: boolean;
  checked: number;
  firstBrokenSeq?: number;
  reason?: string;
}

/**
 * Verifies events in ascending order. `anchor` is the trusted (seq, hash) just before the first
 * event: the genesis, or a signed checkpoint when older events were pruned.
 */
export function verifyChain(events: Iterable<AuditEvent>, anchor: { seq: number; hash: string }): ChainVerification {
  let prev = anchor;
  let checked = 0;
  for (const event of events) {
    if (event.seq !== prev.seq + 1) {
      return { ok: false, checked, firstBrokenSeq: prev.seq + 1, reason: `sequence gap: expected ${prev.seq + 1}, found ${event.seq}` };
    }
    if (event.prevHash !== prev.hash) {
      return { ok: false, checked, firstBrokenSeq: event.seq, reason: 'prev_hash does not match the previous event' };
    }
    const { hash, ...rest } = event;
    if (chainHash(event.prevHash, rest) !== hash) {
      return { ok: false, checked, firstBrokenSeq: event.seq, reason: 'event content does not match its hash' };
    }
    checked++;
    prev = { seq: event.seq, hash };
  }
  return { ok: true, checked };
}
