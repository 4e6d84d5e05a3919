import { ConflictError, InvalidInputError, NotFoundError } from '../core/errors.js';
import type { AuditQueryDal } from './audit-query-dal.js';
import type { AuditTreeDal, StoredTreeHead } from './audit-tree-dal.js';
import { nodeKey } from './audit-tree-dal.js';
import type { AuditEvent } from './audit-types.js';
import { consistencyProofRanges, inclusionProofRanges, nodesForRanges, perfectSubtrees, rangeHash, EMPTY_ROOT, type NodeId } from './merkle.js';

export interface InclusionProof {
  leafIndex: number;
  treeSize: number;
  leafHash: string;
  /** The audit path, bottom up (RFC 9162 2.1.3.1), hex. */
  hashes: string[];
  rootHash: string;
  /** The event, unless retention removed it (the proof still holds for its leaf hash). */
  event: AuditEvent | null;
  /** The signed head of exactly this size, when one was signed. */
  checkpoint: string | null;
}

export interface ConsistencyProof {
  fromSize: number;
  toSize: number;
  hashes: string[];
  fromRoot: string;
  toRoot: string;
  fromCheckpoint: string | null;
  toCheckpoint: string | null;
}

/**
 * Inclusion and consistency proofs, computed from the stored perfect subtrees: every hash in a
 * proof is a stored node or a right edge folded from O(log n) stored nodes, fetched in one read.
 * Nothing is rehashed from the leaves.
 */
export class AuditProofs {
  constructor(private readonly deps: { tree: AuditTreeDal; events: AuditQueryDal }) {}

  /** The newest signed head (404 no_tree_head for a log that was never sequenced). */
  async latest(): Promise<StoredTreeHead> {
    const head = await this.deps.tree.latestHead();
    if (!head) throw new NotFoundError('signed tree head', { code: 'no_tree_head', detail: 'The audit log has no signed tree head yet' });
    return head;
  }

  /** A tree size the log has signed (defaults to the newest head). */
  private async resolveSize(treeSize: number | undefined, param: string): Promise<StoredTreeHead> {
    const latest = await this.latest();
    if (treeSize !== undefined && treeSize > latest.treeSize) {
      throw new InvalidInputError(`${param} ${treeSize} is beyond the newest signed tree head (size ${latest.treeSize})`, { code: 'tree_size_too_large' });
    }
    return latest;
  }

  private async hashes(ranges: Array<[number, number]>, extra: NodeId[] = []): Promise<{ lookup: (n: NodeId) => Buffer }> {
    const nodes = await this.deps.tree.nodes([...nodesForRanges(ranges), ...extra]);
    return {
      lookup: (n) => {
        const h = nodes.get(nodeKey(n));
        // a node the signed tree needs is gone: the log was tampered with, not a client error
        if (!h) throw new Error(`audit tree node ${nodeKey(n)} is missing`);
        return h;
      },
    };
  }

  /** MTH of the first `size` leaves, from stored nodes. */
  async rootAt(size: number): Promise<Buffer> {
    if (size === 0) return EMPTY_ROOT;
    const { lookup } = await this.hashes([[0, size]]);
    return rangeHash(0, size, lookup);
  }

  async inclusion(leaf: { leafIndex?: number; seq?: number }, treeSize?: number): Promise<InclusionProof> {
    const latest = await this.resolveSize(treeSize, 'treeSize');
    const size = treeSize ?? latest.treeSize;
    let event: AuditEvent | undefined;
    let index: number;
    if (leaf.seq !== undefined) {
      event = await this.deps.events.eventBySeq(leaf.seq);
      if (!event) throw new NotFoundError(`audit event ${leaf.seq}`, { code: 'event_not_found' });
      if (event.leafIndex === null) {
        throw new ConflictError(`audit event ${leaf.seq} is queued and not in the tree yet; it is sequenced within the sequencing interval`, 'not_yet_sequenced');
      }
      index = event.leafIndex;
    } else {
      index = leaf.leafIndex!;
      event = await this.deps.events.eventByLeaf(index);
    }
    if (index >= size) throw new InvalidInputError(`leaf ${index} is not in a tree of size ${size}`, { code: 'leaf_beyond_tree' });
    const ranges = inclusionProofRanges(index, size);
    const { lookup } = await this.hashes(ranges, [...perfectSubtrees(0, size), { level: 0, index }]);
    const head = size === latest.treeSize ? latest : await this.deps.tree.headAt(size);
    return {
      leafIndex: index,
      treeSize: size,
      leafHash: lookup({ level: 0, index }).toString('hex'),
      hashes: ranges.map(([a, b]) => rangeHash(a, b, lookup).toString('hex')),
      rootHash: rangeHash(0, size, lookup).toString('hex'),
      event: event ?? null,
      checkpoint: head?.note ?? null,
    };
  }

  async consistency(fromSize: number, toSize?: number): Promise<ConsistencyProof> {
    const latest = await this.resolveSize(toSize, 'to');
    const to = toSize ?? latest.treeSize;
    if (fromSize > to) throw new InvalidInputError(`from ${fromSize} is larger than to ${to}`, { code: 'invalid_range' });
    const ranges = fromSize > 0 ? consistencyProofRanges(fromSize, to) : [];
    const extra = [...(fromSize > 0 ? perfectSubtrees(0, fromSize) : []), ...(to > 0 ? perfectSubtrees(0, to) : [])];
    const { lookup } = await this.hashes(ranges, extra);
    const [fromHead, toHead] = await Promise.all([fromSize > 0 ? this.deps.tree.headAt(fromSize) : undefined, to === latest.treeSize ? latest : this.deps.tree.headAt(to)]);
    return {
      fromSize,
      toSize: to,
      hashes: ranges.map(([a, b]) => rangeHash(a, b, lookup).toString('hex')),
      fromRoot: (fromSize > 0 ? rangeHash(0, fromSize, lookup) : EMPTY_ROOT).toString('hex'),
      toRoot: (to > 0 ? rangeHash(0, to, lookup) : EMPTY_ROOT).toString('hex'),
      fromCheckpoint: fromHead?.note ?? null,
      toCheckpoint: toHead?.note ?? null,
    };
  }
}
