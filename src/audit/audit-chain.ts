import crypto from 'node:crypto';
import { canonicalJson } from './canonical-json.js';
import type { AuditEvent } from './audit-types.js';
import { recordedFields } from './audit-leaf-data.js';

/** An event of the hash chain the log was before migration 008 (and of format-1 exports). */
export type ChainedEvent = Omit<AuditEvent, 'leafIndex' | 'prevHash' | 'hash'> & { prevHash: string; hash: string };

/** Everything in an event except its own hash is covered by the hash. */
export function hashedFields(event: Omit<ChainedEvent, 'hash'>) {
  return { ...recordedFields(event), prevHash: event.prevHash };
}

export function chainHash(prevHash: string, event: Omit<ChainedEvent, 'hash'>): string {
  return crypto.createHash('sha256').update(prevHash, 'utf8').update(canonicalJson(hashedFields(event)), 'utf8').digest('hex');
}

export interface ChainVerification {
  ok: boolean;
  checked: number;
  firstBrokenSeq?: number;
  reason?: string;
}

/**
 * Verifies events in ascending order, one at a time, so a log of any size streams through it.
 * `anchor` is the trusted (seq, hash) just before the first event: the genesis, or a signed
 * checkpoint when older events were pruned.
 */
export class ChainVerifier {
  private prev: { seq: number; hash: string };
  checked = 0;
  failure?: { firstBrokenSeq: number; reason: string };

  constructor(anchor: { seq: number; hash: string }) {
    this.prev = anchor;
  }

  get last(): { seq: number; hash: string } {
    return this.prev;
  }

  /** Returns false once the chain is broken; later events are not examined. */
  push(event: ChainedEvent): boolean {
    if (this.failure) return false;
    const expected = this.prev.seq + 1;
    if (event.seq !== expected) {
      this.failure = { firstBrokenSeq: expected, reason: `sequence gap: expected ${expected}, found ${event.seq}` };
    } else if (event.prevHash !== this.prev.hash) {
      this.failure = { firstBrokenSeq: event.seq, reason: 'prev_hash does not match the previous event' };
    } else {
      const { hash, ...rest } = event;
      if (chainHash(event.prevHash, rest) !== hash) {
        this.failure = { firstBrokenSeq: event.seq, reason: 'event content does not match its hash' };
      }
    }
    if (this.failure) return false;
    this.checked++;
    this.prev = { seq: event.seq, hash: event.hash };
    return true;
  }

  result(): ChainVerification {
    return this.failure ? { ok: false, checked: this.checked, ...this.failure } : { ok: true, checked: this.checked };
  }
}
