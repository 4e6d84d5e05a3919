import type { JWK } from 'jose';
import { verifyChain, type ChainVerification } from './audit-chain.js';
import { verifyCheckpointJws, type AuditCheckpoints } from './audit-checkpoints.js';
import type { AuditQueryDal } from './audit-query-dal.js';
import { GENESIS_HASH } from './audit-types.js';

export interface VerifyResult extends ChainVerification {
  fromSeq: number;
  toSeq: number;
  head: { seq: number; hash: string };
  checkpointsChecked: number;
}

/**
 * Re-derives the hash chain from stored rows. Edited rows break their own hash, deleted rows
 * leave a sequence gap, swapped rows break both, truncation shows against the head row, and
 * pruned history must be anchored by a signed checkpoint.
 */
export class AuditVerifyService {
  constructor(private readonly deps: { dal: AuditQueryDal; checkpoints: AuditCheckpoints; jwks: () => Promise<{ keys: JWK[] }> }) {}

  async verify(range: { fromSeq?: number; toSeq?: number } = {}): Promise<VerifyResult> {
    const { last: _last, ...result } = await this.verifyDetailed(range);
    return result;
  }

  /**
   * verify(), plus the last (seq, hash) it checked. `trusted` replaces the stored event before
   * `fromSeq` as the anchor: the background watch passes what it verified earlier, so an event
   * rewritten since then breaks the link instead of becoming the new anchor.
   */
  async verifyDetailed(
    range: { fromSeq?: number; toSeq?: number } = {},
    trusted?: { seq: number; hash: string },
  ): Promise<VerifyResult & { last: { seq: number; hash: string } }> {
    const head = await this.deps.dal.head();
    const first = (await this.deps.dal.firstSeq()) ?? head.seq + 1;
    const fromSeq = Math.max(range.fromSeq ?? first, 1);
    const toSeq = Math.min(range.toSeq ?? head.seq, head.seq);
    const base = { fromSeq, toSeq, head, checkpointsChecked: 0 };
    const jwks = await this.deps.jwks();

    if (toSeq === head.seq) {
      // Truncating events and rewinding the head row together leaves a consistent chain; a
      // signed checkpoint beyond the head still shows that later events existed.
      const [latest] = await this.deps.checkpoints.list(1);
      if (latest && latest.seq > head.seq) {
        const verified = await verifyCheckpointJws(latest.jws, jwks);
        const current = await this.deps.dal.head(); // not a checkpoint of events appended meanwhile
        if (verified.ok && verified.payload.seq > current.seq) {
          return { ...base, last: head, ok: false, checked: 0, firstBrokenSeq: head.seq + 1, reason: `signed checkpoint ${latest.id} covers seq ${verified.payload.seq}, but the log ends at seq ${current.seq}` };
        }
      }
    }

    let anchor = { seq: 0, hash: GENESIS_HASH };
    if (trusted && trusted.seq === fromSeq - 1) {
      anchor = trusted;
    } else if (fromSeq > 1) {
      const before = await this.deps.dal.eventAt(fromSeq - 1);
      if (before) {
        anchor = { seq: before.seq, hash: before.hash };
      } else {
        const checkpoint = await this.deps.checkpoints.covering(fromSeq - 1);
        const verified = checkpoint ? await verifyCheckpointJws(checkpoint.jws, jwks) : undefined;
        if (!checkpoint || !verified?.ok || verified.payload.seq !== fromSeq - 1) {
          return { ...base, last: anchor, ok: false, checked: 0, firstBrokenSeq: fromSeq, reason: `no valid signed checkpoint anchors the history before seq ${fromSeq}` };
        }
        anchor = { seq: verified.payload.seq, hash: verified.payload.headHash };
      }
    }
    if (fromSeq > toSeq) {
      if (trusted && toSeq === head.seq && head.seq === anchor.seq && head.hash !== anchor.hash) {
        return { ...base, last: anchor, ok: false, checked: 0, firstBrokenSeq: head.seq, reason: `the head at seq ${head.seq} no longer has the hash verified before` };
      }
      return { ...base, last: anchor, ok: true, checked: 0 };
    }

    const { last, ...result } = await verifyChain(this.deps.dal.range(fromSeq, toSeq), anchor);
    if (!result.ok) return { ...base, last, ...result };
    if (last.seq !== toSeq) {
      return { ...base, last, ...result, ok: false, firstBrokenSeq: last.seq + 1, reason: `events after seq ${last.seq} are missing (the head is at ${head.seq})` };
    }
    if (toSeq === head.seq && last.hash !== head.hash) {
      return { ...base, last, ...result, ok: false, firstBrokenSeq: head.seq, reason: 'the last event does not match the recorded head hash' };
    }
    let checkpointsChecked = 0;
    for (const checkpoint of await this.deps.checkpoints.list(1000)) {
      if (checkpoint.seq < fromSeq || checkpoint.seq > toSeq) continue;
      const verified = await verifyCheckpointJws(checkpoint.jws, jwks);
      const event = await this.deps.dal.eventAt(checkpoint.seq);
      if (!verified.ok || verified.payload.headHash !== event?.hash) {
        return { ...base, last, ...result, ok: false, firstBrokenSeq: checkpoint.seq, checkpointsChecked, reason: verified.ok ? `event ${checkpoint.seq} differs from signed checkpoint ${checkpoint.id}` : `checkpoint ${checkpoint.id}: ${verified.reason}` };
      }
      checkpointsChecked++;
    }
    return { ...base, last, ...result, checkpointsChecked };
  }
}
