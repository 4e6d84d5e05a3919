import { NoteError, openNote, parseCheckpoint, type TreeCheckpoint } from './signed-note.js';
import type { AuditLogSigner } from './audit-log-key.js';
import type { AuditTreeDal, StoredTreeHead } from './audit-tree-dal.js';
import { nodeKey } from './audit-tree-dal.js';
import { eventLeafHash } from './audit-leaf.js';
import { chainHash } from './audit-chain.js';
import { perfectSubtrees, TreeFrontier, type NodeId } from './merkle.js';
import { InvalidInputError } from '../core/errors.js';
import { LoopSlicer } from '../core/loop-slicer.js';

/** What a verification pass established, up to `treeSize`. */
export interface TreeVerification {
  ok: boolean;
  /** The newest signed tree head's size (what was verified, when ok). */
  treeSize: number;
  rootHash: string;
  /** Leaves whose hash was recomputed from their event in this pass. */
  leavesChecked: number;
  /** Leaves whose event retention removed: only their stored hash is checked, as part of the tree. */
  leavesWithoutEvent: number;
  /** Signed tree heads whose signature and root were checked in this pass. */
  headsChecked: number;
  firstBadLeaf?: number;
  reason?: string;
  /** Set when the caller supplied a checkpoint and the log extends it. */
  consistentWith?: { treeSize: number; rootHash: string };
  /** Set for a range verification: the leaves [fromLeaf, toLeaf) whose events were checked. */
  range?: { fromLeaf: number; toLeaf: number };
}

/** The point a verification reached: the next pass (the background watch) starts from here. */
export interface VerifiedState {
  frontier: TreeFrontier;
  rootHash: string;
  /** The newest signed head, verified up to: what the broker keeps outside the database. */
  head?: { treeSize: number; rootHash: string; note: string };
}

type Failure = { firstBadLeaf?: number; reason: string };

/** The signed heads of a pass in size order, read a page at a time as the pass reaches them. */
class HeadQueue {
  private page: StoredTreeHead[] = [];
  private pos = 0;
  private done = false;

  constructor(private readonly pages: AsyncGenerator<StoredTreeHead[]>) {}

  async peek(): Promise<StoredTreeHead | undefined> {
    while (this.pos >= this.page.length && !this.done) {
      const next = await this.pages.next();
      if (next.done) this.done = true;
      else {
        this.page = next.value;
        this.pos = 0;
      }
    }
    return this.page[this.pos];
  }

  skip(): void {
    this.pos++;
  }
}

/**
 * Re-derives the Merkle tree from stored rows and checks it against the signed tree heads:
 * each event against its leaf hash, each stored perfect subtree against its children, every
 * signed head's signature (with the log key) and root, and the leaves past the newest head
 * (there must be none). Editing an event, a node or a head, deleting or reordering rows, or
 * cutting the tail together with its heads (against a state verified before, or a checkpoint
 * the caller kept) all fail it. Runs in batches: memory stays O(batch + log n), and it gives
 * the event loop a turn every few milliseconds (LoopSlicer), so a pass over a million leaves
 * slows other requests down a little instead of stopping them.
 */
export class AuditVerifyService {
  constructor(private readonly deps: { tree: AuditTreeDal; signer: () => Promise<AuditLogSigner> }) {}

  /** Opens a signed checkpoint with the log's key; a NoteError names what is wrong with it. */
  async openCheckpoint(note: string): Promise<TreeCheckpoint> {
    const signer = await this.deps.signer();
    const { text } = openNote(note, [signer.verifier]);
    const cp = parseCheckpoint(text);
    if (cp.origin !== signer.origin) throw new NoteError(`checkpoint origin "${cp.origin}" is not this log's origin`);
    return cp;
  }

  /**
   * Verifies leaves from `from` (a state verified earlier; the empty tree when absent) to the
   * newest signed head. `checkpoint` (a signed note the caller kept) must be a prefix of the log,
   * and so must `extending` (a state verified earlier, for a pass that starts again from leaf 0:
   * the watch's periodic full pass, which must still find the tree it vouched for before).
   * An aborted `signal` stops the pass: it rejects with the signal's reason.
   */
  async verify(options: { from?: VerifiedState; checkpoint?: string; extending?: VerifiedState; signal?: AbortSignal } = {}): Promise<TreeVerification & { state?: VerifiedState }> {
    const { tree } = this.deps;
    const slicer = new LoopSlicer(options.signal);
    const seen = options.from ? undefined : options.extending;
    const latest = await tree.latestHead();
    const start = options.from?.frontier.clone() ?? TreeFrontier.empty();
    const base = { treeSize: latest?.treeSize ?? 0, rootHash: latest?.rootHash ?? '', leavesChecked: 0, leavesWithoutEvent: 0, headsChecked: 0 };
    const fail = (f: Failure, counts: Partial<TreeVerification> = {}) => ({ ...base, ...counts, ok: false, ...f });

    let kept: TreeCheckpoint | undefined;
    if (options.checkpoint !== undefined) {
      try {
        kept = await this.openCheckpoint(options.checkpoint);
      } catch (err) {
        if (err instanceof NoteError) return fail({ reason: `the checkpoint given does not verify: ${err.reason}` });
        throw err;
      }
      if (kept.size > base.treeSize) {
        return fail({ firstBadLeaf: base.treeSize, reason: `the checkpoint given has ${kept.size} leaves, but the newest signed head has ${base.treeSize}: the log was cut back` });
      }
    }

    if (!latest) {
      if (start.size > 0) return fail({ firstBadLeaf: 0, reason: `every signed tree head is gone, but ${start.size} leaves were verified before` });
      const orphans = await tree.leavesBeyondNewestHead();
      return orphans > 0 ? fail({ firstBadLeaf: 0, reason: `${orphans} events have leaf indexes but no signed tree head covers them` }) : { ...base, ok: true };
    }
    const verifiedBefore = Math.max(start.size, seen?.frontier.size ?? 0);
    if (verifiedBefore > latest.treeSize) {
      return fail({ firstBadLeaf: latest.treeSize, reason: `the newest signed head has ${latest.treeSize} leaves, but ${verifiedBefore} were verified before: the log was cut back` });
    }
    const latestProblem = await this.checkHead(latest);
    if (latestProblem) return fail({ reason: latestProblem });

    // a full pass checks every head, the size-0 head of an empty log included
    const heads = new HeadQueue(tree.headPages(options.from ? start.size : -1, latest.treeSize));
    let headsChecked = 0;
    let leavesChecked = 0;
    let leavesWithoutEvent = 0;
    let consistentWith: TreeVerification['consistentWith'];
    const frontier = start;
    const checkKept = (): Failure | undefined => {
      if (seen && frontier.size === seen.frontier.size && frontier.root().toString('hex') !== seen.rootHash) {
        return { firstBadLeaf: Math.max(seen.frontier.size - 1, 0), reason: `the log's first ${seen.frontier.size} leaves no longer hash to the root this instance verified before: the log was rewritten` };
      }
      if (!kept || frontier.size !== kept.size) return undefined;
      const root = frontier.root();
      if (!root.equals(kept.rootHash)) return { firstBadLeaf: kept.size - 1, reason: `the log's first ${kept.size} leaves do not hash to the root of the checkpoint given: the log was rewritten` };
      consistentWith = { treeSize: kept.size, rootHash: root.toString('hex') };
      return undefined;
    };
    const checkHeadsAtSize = async (): Promise<Failure | undefined> => {
      for (let head = await heads.peek(); head !== undefined && head.treeSize === frontier.size; head = await heads.peek()) {
        heads.skip();
        const problem = await this.checkHead(head);
        if (problem) return { firstBadLeaf: head.treeSize - 1, reason: problem };
        if (frontier.root().toString('hex') !== head.rootHash) {
          return { firstBadLeaf: head.treeSize - 1, reason: `the leaves do not hash to the root signed in tree head ${head.id} (size ${head.treeSize})` };
        }
        headsChecked++;
      }
      return undefined;
    };
    const counts = () => ({ leavesChecked, leavesWithoutEvent, headsChecked });

    if (options.from && frontier.root().toString('hex') !== options.from.rootHash) {
      return fail({ reason: 'the verified state given does not match its own root' });
    }
    const early = checkKept() ?? (await checkHeadsAtSize());
    if (early) return fail(early);

    // events may be missing only below the lowest one still stored (retention removes the oldest);
    // an incremental pass starts past leaves already verified, so the last of them tells whether
    // retention has reached this far (else deleting the first new events would pass as pruning)
    let sawEvent = false;
    const removedByRetention = prunedSince(tree);
    if (options.from && frontier.size > 0) {
      for await (const [last] of tree.leaves(frontier.size - 1, frontier.size)) sawEvent = last?.event !== undefined;
    }
    // events from before migration 008 also carry their hash chain: checked as well, so a chain
    // edited before the upgrade is not vouched for by the tree built on it
    let chainPrev: string | undefined;
    for await (const batch of tree.leaves(frontier.size, latest.treeSize)) {
      const emitted: Array<{ node: NodeId; hash: Buffer }> = [];
      for (const leaf of batch) {
        await slicer.pause();
        if (leaf.index !== frontier.size) {
          return fail({ firstBadLeaf: frontier.size, reason: `leaf ${frontier.size} is missing from the tree` }, counts());
        }
        if (leaf.event) {
          sawEvent = true;
          if (eventLeafHash(leaf.event) !== leaf.hash) {
            return fail({ firstBadLeaf: leaf.index, reason: `event ${leaf.event.seq} (leaf ${leaf.index}) does not match its leaf hash: it was edited` }, counts());
          }
          const { prevHash, hash } = leaf.event;
          if (prevHash !== undefined && hash !== undefined) {
            const { leafIndex: _position, ...chained } = { ...leaf.event, prevHash, hash };
            if (chainHash(prevHash, chained) !== hash || (chainPrev !== undefined && chainPrev !== prevHash)) {
              return fail({ firstBadLeaf: leaf.index, reason: `event ${leaf.event.seq} (leaf ${leaf.index}) breaks the hash chain it was recorded in before the upgrade` }, counts());
            }
            chainPrev = hash;
          }
          leavesChecked++;
        } else if (sawEvent && !(await removedByRetention(leaf.index))) {
          return fail({ firstBadLeaf: leaf.index, reason: `the event of leaf ${leaf.index} was deleted` }, counts());
        } else {
          leavesWithoutEvent++;
        }
        frontier.appendLeafHash(Buffer.from(leaf.hash, 'hex'), (node, hash) => {
          if (node.level > 0) emitted.push({ node, hash });
        });
        const problem = checkKept() ?? (await checkHeadsAtSize());
        if (problem) return fail(problem, counts());
      }
      if (batch.length === 0) break;
      const stored = await tree.nodes(emitted.map((e) => e.node));
      for (const e of emitted) {
        const got = stored.get(nodeKey(e.node));
        if (!got || !got.equals(e.hash)) {
          const first = e.node.index * 2 ** e.node.level;
          return fail({ firstBadLeaf: first, reason: `stored subtree ${nodeKey(e.node)} ${got ? 'does not match its leaves' : 'is missing'}` }, counts());
        }
      }
    }
    if (frontier.size !== latest.treeSize) {
      return fail({ firstBadLeaf: frontier.size, reason: `leaves ${frontier.size} to ${latest.treeSize - 1} are missing from the tree` }, counts());
    }
    const root = frontier.root().toString('hex');
    if (root !== latest.rootHash) {
      return fail({ firstBadLeaf: latest.treeSize - 1, reason: `the leaves do not hash to the newest signed root (size ${latest.treeSize})` }, counts());
    }
    const beyond = await tree.leavesBeyondNewestHead();
    if (beyond > 0) {
      return fail({ firstBadLeaf: latest.treeSize, reason: `${beyond} events have leaf indexes beyond the newest signed head: later heads were removed` }, counts());
    }
    if (kept && !consistentWith) {
      return fail({ reason: `the checkpoint given (size ${kept.size}) is older than the state this pass started from; verify from the start` }, counts());
    }
    return { ...base, ...counts(), ok: true, consistentWith, state: { frontier, rootHash: root, head: { treeSize: latest.treeSize, rootHash: latest.rootHash, note: latest.note } } };
  }

  /**
   * Verifies the leaves [fromLeaf, toLeaf) of the newest signed tree: each event in the range
   * against its leaf hash, and the root of the newest head recomputed from those leaves plus the
   * stored perfect subtrees left and right of the range (every subtree the range completes is
   * compared with the stored one, as is every signed head whose size falls in [fromLeaf, toLeaf]).
   * The newest head's signature is checked. What lies outside the range is trusted as stored:
   * an edited event there is found by the whole-log pass, not by this one. Throws
   * InvalidInputError unless 0 <= fromLeaf < toLeaf <= the newest head's size.
   */
  async verifyRange(fromLeaf: number, toLeaf: number): Promise<TreeVerification> {
    const { tree } = this.deps;
    const slicer = new LoopSlicer();
    const latest = await tree.latestHead();
    const size = latest?.treeSize ?? 0;
    if (!(Number.isSafeInteger(fromLeaf) && Number.isSafeInteger(toLeaf) && fromLeaf >= 0 && fromLeaf < toLeaf)) {
      throw new InvalidInputError(`the range must have 0 <= fromLeaf < toLeaf, got [${fromLeaf}, ${toLeaf})`, { code: 'invalid_range' });
    }
    if (!latest || toLeaf > size) {
      throw new InvalidInputError(`toLeaf ${toLeaf} is beyond the newest signed tree head (size ${size})`, { code: 'leaf_beyond_tree' });
    }
    const range = { fromLeaf, toLeaf };
    const base = { treeSize: size, rootHash: latest.rootHash, leavesChecked: 0, leavesWithoutEvent: 0, headsChecked: 0, range };
    let leavesChecked = 0;
    let leavesWithoutEvent = 0;
    let headsChecked = 0;
    const counts = () => ({ leavesChecked, leavesWithoutEvent, headsChecked });
    const fail = (f: Failure) => ({ ...base, ...counts(), ok: false, ...f });

    const latestProblem = await this.checkHead(latest);
    if (latestProblem) return fail({ reason: latestProblem });
    headsChecked++;

    // the left of the range as stored: its perfect subtrees, which the range's leaves extend
    const left = fromLeaf > 0 ? perfectSubtrees(0, fromLeaf) : [];
    const leftStored = await tree.nodes(left);
    const missingLeft = left.find((n) => !leftStored.has(nodeKey(n)));
    if (missingLeft) return fail({ firstBadLeaf: missingLeft.index * 2 ** missingLeft.level, reason: `stored subtree ${nodeKey(missingLeft)} is missing` });
    const frontier = TreeFrontier.fromNodes(fromLeaf, left.map((n) => leftStored.get(nodeKey(n))!));

    const heads = new HeadQueue(tree.headPages(fromLeaf - 1, toLeaf));
    const checkHeadsAtSize = async (): Promise<Failure | undefined> => {
      for (let head = await heads.peek(); head !== undefined && head.treeSize === frontier.size; head = await heads.peek()) {
        heads.skip();
        // the newest head was checked first, on its own
        if (head.id === latest.id) continue;
        const problem = await this.checkHead(head);
        if (problem) return { firstBadLeaf: Math.max(head.treeSize - 1, 0), reason: problem };
        if (frontier.root().toString('hex') !== head.rootHash) {
          return { firstBadLeaf: Math.max(head.treeSize - 1, 0), reason: `the leaves do not hash to the root signed in tree head ${head.id} (size ${head.treeSize})` };
        }
        headsChecked++;
      }
      return undefined;
    };
    const compare = async (emitted: Array<{ node: NodeId; hash: Buffer }>): Promise<Failure | undefined> => {
      const stored = await tree.nodes(emitted.map((e) => e.node));
      for (const e of emitted) {
        const got = stored.get(nodeKey(e.node));
        if (!got || !got.equals(e.hash)) {
          const first = Math.max(e.node.index * 2 ** e.node.level, fromLeaf);
          return { firstBadLeaf: first, reason: `stored subtree ${nodeKey(e.node)} ${got ? 'does not match its leaves' : 'is missing'}` };
        }
      }
      return undefined;
    };
    const early = await checkHeadsAtSize();
    if (early) return fail(early);

    // as in the whole-log pass: an event may be missing only where retention removed it, i.e.
    // below the lowest event still stored; the leaf before the range tells whether it reached here
    let sawEvent = false;
    const removedByRetention = prunedSince(tree);
    if (fromLeaf > 0) {
      for await (const [last] of tree.leaves(fromLeaf - 1, fromLeaf)) sawEvent = last?.event !== undefined;
    }
    let chainPrev: string | undefined;
    for await (const batch of tree.leaves(fromLeaf, toLeaf)) {
      const emitted: Array<{ node: NodeId; hash: Buffer }> = [];
      for (const leaf of batch) {
        await slicer.pause();
        if (leaf.index !== frontier.size) return fail({ firstBadLeaf: frontier.size, reason: `leaf ${frontier.size} is missing from the tree` });
        if (leaf.event) {
          sawEvent = true;
          if (eventLeafHash(leaf.event) !== leaf.hash) {
            return fail({ firstBadLeaf: leaf.index, reason: `event ${leaf.event.seq} (leaf ${leaf.index}) does not match its leaf hash: it was edited` });
          }
          const { prevHash, hash } = leaf.event;
          if (prevHash !== undefined && hash !== undefined) {
            const { leafIndex: _position, ...chained } = { ...leaf.event, prevHash, hash };
            if (chainHash(prevHash, chained) !== hash || (chainPrev !== undefined && chainPrev !== prevHash)) {
              return fail({ firstBadLeaf: leaf.index, reason: `event ${leaf.event.seq} (leaf ${leaf.index}) breaks the hash chain it was recorded in before the upgrade` });
            }
            chainPrev = hash;
          }
          leavesChecked++;
        } else if (sawEvent && !(await removedByRetention(leaf.index))) {
          return fail({ firstBadLeaf: leaf.index, reason: `the event of leaf ${leaf.index} was deleted` });
        } else {
          leavesWithoutEvent++;
        }
        frontier.appendLeafHash(Buffer.from(leaf.hash, 'hex'), (node, hash) => {
          if (node.level > 0) emitted.push({ node, hash });
        });
        const problem = await checkHeadsAtSize();
        if (problem) return fail(problem);
      }
      if (batch.length === 0) break;
      const problem = await compare(emitted);
      if (problem) return fail(problem);
    }
    if (frontier.size !== toLeaf) {
      return fail({ firstBadLeaf: frontier.size, reason: `leaves ${frontier.size} to ${toLeaf - 1} are missing from the tree` });
    }

    // the right of the range as stored, up to the newest head: the subtrees it completes are checked too
    const right = toLeaf < size ? perfectSubtrees(toLeaf, size) : [];
    const rightStored = await tree.nodes(right);
    const emitted: Array<{ node: NodeId; hash: Buffer }> = [];
    for (const node of right) {
      const hash = rightStored.get(nodeKey(node));
      if (!hash) return fail({ firstBadLeaf: node.index * 2 ** node.level, reason: `stored subtree ${nodeKey(node)} is missing` });
      frontier.appendSubtree(node, hash, (n, h) => {
        if (n.level > node.level || n.index !== node.index) emitted.push({ node: n, hash: h });
      });
    }
    const rightProblem = await compare(emitted);
    if (rightProblem) return fail(rightProblem);
    if (frontier.root().toString('hex') !== latest.rootHash) {
      return fail({ firstBadLeaf: fromLeaf, reason: `the leaves ${fromLeaf} to ${toLeaf - 1} and the stored subtrees around them do not hash to the newest signed root (size ${size})` });
    }
    return { ...base, ...counts(), ok: true };
  }

  /** Why a stored head is not a valid signed head of this log (undefined when it is). */
  private async checkHead(head: StoredTreeHead): Promise<string | undefined> {
    let cp: TreeCheckpoint;
    try {
      cp = await this.openCheckpoint(head.note);
    } catch (err) {
      if (err instanceof NoteError) return `tree head ${head.id} (size ${head.treeSize}): ${err.reason}`;
      throw err;
    }
    if (cp.size !== head.treeSize || cp.rootHash.toString('hex') !== head.rootHash) {
      return `tree head ${head.id}: its columns differ from what its signed checkpoint says`;
    }
    return undefined;
  }
}

/**
 * Whether the event of a leaf is missing because retention removed it while the pass ran: the
 * pass read events below it, and retention (which removes the oldest first, in steps) has since
 * removed every event up to it. A pass over a large log and `keywarden audit prune` may run at
 * the same time; what is accepted is what the pass accepts at its start, a missing prefix of
 * the log, so a deletion anywhere else is still found. Asks the database once per advance of
 * the removed prefix.
 */
function prunedSince(tree: AuditTreeDal): (leafIndex: number) => Promise<boolean> {
  let removedBelow = 0;
  return async (leafIndex) => {
    if (leafIndex < removedBelow) return true;
    removedBelow = (await tree.firstStoredEventLeaf()) ?? Infinity;
    return leafIndex < removedBelow;
  };
}
