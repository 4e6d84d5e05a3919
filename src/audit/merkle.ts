/**
 * RFC 6962 / RFC 9162 Merkle tree for the transparency-log audit: hashing, proof shapes, the
 * append-only frontier the sequencer keeps, and the verifiers clients run.
 *
 * The database stores only perfect subtrees (they never change once complete), so every proof is
 * planned as a list of ranges (`inclusionProofRanges`, `consistencyProofRanges`), the perfect
 * subtrees they need are read in one batch (`nodesForRanges`), and each range's hash is folded
 * from them (`rangeHash`). The `reference*` functions follow the RFC recursion over all leaves and
 * exist to check that plan.
 *
 * Indexes and sizes are JS numbers and may exceed 2^32, so no 32-bit bitwise operator touches
 * them: halving is Math.floor(x / 2) and powers of two are built by doubling (exact up to 2^53).
 *
 * Bad arguments to the builders are programming errors of the caller (the sequencer validates
 * request input before it gets here), so they throw RangeError; this module stays free of
 * project imports. The verifiers never throw: they answer false.
 */
import crypto from 'node:crypto';

export const HASH_SIZE = 32;

/** SHA-256 of the empty string: the root of the empty tree (RFC 9162 2.1.1). */
export const EMPTY_ROOT: Buffer = crypto.createHash('sha256').digest();

const LEAF_PREFIX = Buffer.from([0x00]);
const NODE_PREFIX = Buffer.from([0x01]);

/** SHA-256(0x00 || data); strings as UTF-8. The prefix keeps a leaf from posing as an inner node. */
export function leafHash(data: Buffer | string): Buffer {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  return crypto.createHash('sha256').update(LEAF_PREFIX).update(bytes).digest();
}

/** SHA-256(0x01 || left || right). */
export function nodeHash(left: Buffer, right: Buffer): Buffer {
  return crypto.createHash('sha256').update(NODE_PREFIX).update(left).update(right).digest();
}

/** A perfect subtree: level L, index i covers leaves [i*2^L, (i+1)*2^L). Level 0 is a leaf. */
export interface NodeId {
  level: number;
  index: number;
}

type Range = [number, number];

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function requireCount(name: string, x: number): void {
  if (!isCount(x)) throw new RangeError(`${name} must be a non-negative safe integer, got ${String(x)}`);
}

/** The largest power of two strictly below n (n >= 2): the RFC's split point k. */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function isPowerOfTwo(n: number): boolean {
  if (n < 1) return false;
  while (n % 2 === 0) n /= 2;
  return n === 1;
}

function isHash(x: unknown): x is Buffer {
  return Buffer.isBuffer(x) && x.length === HASH_SIZE;
}

/** [begin, end) split into maximal aligned perfect subtrees, left to right (begin < end, both safe integers). */
export function perfectSubtrees(begin: number, end: number): NodeId[] {
  requireCount('begin', begin);
  requireCount('end', end);
  if (begin >= end) throw new RangeError(`empty range [${begin}, ${end})`);
  const nodes: NodeId[] = [];
  let at = begin;
  while (at < end) {
    // Grow the subtree while `at` stays aligned to it and it still fits before `end`.
    let level = 0;
    let width = 1;
    while (at % (width * 2) === 0 && at + width * 2 <= end) {
      width *= 2;
      level += 1;
    }
    nodes.push({ level, index: at / width });
    at += width;
  }
  return nodes;
}

/**
 * The subtree ranges [start, end) whose hashes make up the RFC 9162 inclusion proof (2.1.3.1, PATH)
 * of leaf `index` in a tree of `size` leaves, in proof order (the order a verifier consumes them).
 * Every range is either a perfect aligned subtree or the right edge [a, size) of the tree.
 */
export function inclusionProofRanges(index: number, size: number): Array<[number, number]> {
  requireCount('index', index);
  requireCount('size', size);
  if (index >= size) throw new RangeError(`leaf ${index} is not in a tree of size ${size}`);
  // PATH descends from the root; each step's sibling is appended after the deeper part of the
  // path, so siblings collected top-down are emitted bottom-up.
  const siblings: Range[] = [];
  let lo = 0;
  let hi = size;
  while (hi - lo > 1) {
    const mid = lo + splitPoint(hi - lo);
    if (index < mid) {
      siblings.push([mid, hi]);
      hi = mid;
    } else {
      siblings.push([lo, mid]);
      lo = mid;
    }
  }
  return siblings.reverse();
}

/** Same for the consistency proof (2.1.4.1, PROOF/SUBPROOF) from tree size m to n, 0 < m <= n (empty when m == n). */
export function consistencyProofRanges(m: number, n: number): Array<[number, number]> {
  requireCount('m', m);
  requireCount('n', n);
  if (m < 1 || m > n) throw new RangeError(`no consistency proof from size ${m} to size ${n}`);
  const siblings: Range[] = [];
  let lo = 0;
  let hi = n;
  // SUBPROOF's b: true while [lo, hi) is still a prefix the verifier knows the root of (it has
  // MTH(D[0:m]) itself), so that node is left out of the proof.
  let knownPrefix = true;
  let terminal: Range | undefined;
  for (;;) {
    if (m === hi) {
      if (!knownPrefix) terminal = [lo, hi];
      break;
    }
    const mid = lo + splitPoint(hi - lo);
    if (m <= mid) {
      siblings.push([mid, hi]);
      hi = mid;
    } else {
      siblings.push([lo, mid]);
      lo = mid;
      knownPrefix = false;
    }
  }
  const proof = siblings.reverse();
  return terminal ? [terminal, ...proof] : proof;
}

/**
 * MTH of the leaves [begin, end), where that range is a node of the RFC tree (perfect, or a right edge
 * whose start is aligned), computed from perfect-subtree hashes only: right fold of perfectSubtrees(begin, end).
 * `lookup` returns the stored hash of a perfect subtree.
 */
export function rangeHash(begin: number, end: number, lookup: (node: NodeId) => Buffer): Buffer {
  const parts = perfectSubtrees(begin, end);
  // The right fold equals the RFC's MTH only when the parts shrink strictly from left to right
  // (the RFC splits at the largest power of two). Anything else would be a hash no verifier can
  // reproduce, so refuse it rather than hand out a proof that silently fails.
  for (let i = 1; i < parts.length; i++) {
    if (parts[i].level >= parts[i - 1].level) {
      throw new RangeError(`[${begin}, ${end}) is not a node of an RFC 6962 tree`);
    }
  }
  let hash = lookup(parts[parts.length - 1]);
  for (let i = parts.length - 2; i >= 0; i--) hash = nodeHash(lookup(parts[i]), hash);
  return hash;
}

/** The set of perfect subtrees needed to compute all of `ranges` (deduplicated), for one batched database read. */
export function nodesForRanges(ranges: Array<[number, number]>): NodeId[] {
  const seen = new Set<string>();
  const nodes: NodeId[] = [];
  for (const [begin, end] of ranges) {
    for (const node of perfectSubtrees(begin, end)) {
      const key = `${node.level}:${node.index}`;
      if (seen.has(key)) continue;
      seen.add(key);
      nodes.push(node);
    }
  }
  return nodes;
}

type NodeCallback = (node: NodeId, hash: Buffer) => void;

/**
 * The right edge of a tree (a "compact range" starting at 0): the hashes of perfectSubtrees(0, size), left to right.
 * Appending leaves emits every perfect subtree that becomes complete (leaf level included), which the
 * sequencer stores; root() is the RFC 6962 MTH of the whole tree (EMPTY_ROOT when size is 0).
 */
export class TreeFrontier {
  private constructor(
    private treeSize: number,
    // Levels strictly decrease left to right: they are the set bits of treeSize.
    private readonly stack: Array<{ node: NodeId; hash: Buffer }>,
  ) {}

  static empty(): TreeFrontier {
    return new TreeFrontier(0, []);
  }

  /** `hashes` are the hashes of perfectSubtrees(0, size) in order; throws when the count does not match. */
  static fromNodes(size: number, hashes: Buffer[]): TreeFrontier {
    requireCount('size', size);
    const nodes = size === 0 ? [] : perfectSubtrees(0, size);
    if (hashes.length !== nodes.length) {
      throw new RangeError(`a tree of size ${size} has ${nodes.length} frontier nodes, got ${hashes.length} hashes`);
    }
    hashes.forEach((hash, i) => {
      if (!isHash(hash)) throw new RangeError(`frontier hash ${i} is not a ${HASH_SIZE}-byte buffer`);
    });
    return new TreeFrontier(
      size,
      nodes.map((node, i) => ({ node, hash: Buffer.from(hashes[i]) })),
    );
  }

  get size(): number {
    return this.treeSize;
  }

  /** The current perfect-subtree hashes, in perfectSubtrees(0, size) order (copy). */
  nodes(): Array<{ node: NodeId; hash: Buffer }> {
    return this.stack.map(({ node, hash }) => ({ node: { ...node }, hash: Buffer.from(hash) }));
  }

  appendLeafHash(hash: Buffer, onNode?: NodeCallback): void {
    this.appendSubtree({ level: 0, index: this.treeSize }, hash, onNode);
  }

  /**
   * Appends a whole perfect subtree at the right edge; throws unless `size` is a multiple of 2^node.level
   * and node.index*2^level == size. `onNode` sees the appended subtree first, then every parent it completes.
   */
  appendSubtree(node: NodeId, hash: Buffer, onNode?: NodeCallback): void {
    requireCount('level', node.level);
    requireCount('index', node.index);
    if (!isHash(hash)) throw new RangeError(`subtree hash is not a ${HASH_SIZE}-byte buffer`);
    const width = 2 ** node.level;
    const newSize = this.treeSize + width;
    if (this.treeSize % width !== 0 || node.index * width !== this.treeSize || !Number.isSafeInteger(newSize)) {
      throw new RangeError(
        `cannot append subtree (level ${node.level}, index ${node.index}) to a tree of size ${this.treeSize}`,
      );
    }
    let current: { node: NodeId; hash: Buffer } = { node: { ...node }, hash: Buffer.from(hash) };
    onNode?.(current.node, current.hash);
    // Alignment guarantees every node on the stack is at least as high as the new one, so merging
    // equal levels (binary carry) keeps the levels strictly decreasing.
    for (;;) {
      const top = this.stack[this.stack.length - 1];
      if (!top || top.node.level !== current.node.level) break;
      this.stack.pop();
      current = {
        node: { level: current.node.level + 1, index: top.node.index / 2 },
        hash: nodeHash(top.hash, current.hash),
      };
      onNode?.(current.node, current.hash);
    }
    this.stack.push(current);
    this.treeSize = newSize;
  }

  root(): Buffer {
    if (this.stack.length === 0) return Buffer.from(EMPTY_ROOT);
    let hash = this.stack[this.stack.length - 1].hash;
    for (let i = this.stack.length - 2; i >= 0; i--) hash = nodeHash(this.stack[i].hash, hash);
    return Buffer.from(hash);
  }

  clone(): TreeFrontier {
    return new TreeFrontier(this.treeSize, this.nodes());
  }
}

/** RFC 9162 2.1.3.2. Returns false on any mismatch or malformed input, never throws for bad input. */
export function verifyInclusion(leaf: Buffer, index: number, size: number, proof: Buffer[], root: Buffer): boolean {
  if (!isCount(index) || !isCount(size) || index >= size) return false;
  if (!isHash(leaf) || !isHash(root) || !Array.isArray(proof) || !proof.every(isHash)) return false;
  let fn = index;
  let sn = size - 1;
  let r: Buffer = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      // Skip the levels where this node is the right edge with no sibling.
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && r.equals(root);
}

/** RFC 9162 2.1.4.2 (m == n requires an empty proof and equal roots; m == 0 is accepted only with an empty proof). */
export function verifyConsistency(m: number, n: number, proof: Buffer[], rootM: Buffer, rootN: Buffer): boolean {
  if (!isCount(m) || !isCount(n) || m > n) return false;
  if (!isHash(rootM) || !isHash(rootN) || !Array.isArray(proof) || !proof.every(isHash)) return false;
  if (m === n) return proof.length === 0 && rootM.equals(rootN);
  // Every tree extends the empty one, but only the empty tree's own root stands for it.
  if (m === 0) return proof.length === 0 && rootM.equals(EMPTY_ROOT);
  if (proof.length === 0) return false;
  // When m is a power of two, the old root is itself a node of the new tree and is left out of
  // the proof; the verifier supplies it.
  const path = isPowerOfTwo(m) ? [rootM, ...proof] : proof;
  let fn = m - 1;
  let sn = n - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr: Buffer = path[0];
  let sr: Buffer = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && fr.equals(rootM) && sr.equals(rootN);
}

/** RFC 9162 algorithms that compute the proof directly from all leaf hashes (O(n)): used by tests and tiny logs only. */
export function referenceInclusionProof(leaves: Buffer[], index: number): Buffer[] {
  requireCount('index', index);
  if (index >= leaves.length) throw new RangeError(`leaf ${index} is not in a tree of size ${leaves.length}`);
  return path(index, leaves);
}

export function referenceConsistencyProof(leaves: Buffer[], m: number): Buffer[] {
  requireCount('m', m);
  if (m < 1 || m > leaves.length) throw new RangeError(`no consistency proof from size ${m} to size ${leaves.length}`);
  return subproof(m, leaves, true);
}

export function referenceRoot(leaves: Buffer[]): Buffer {
  if (leaves.length === 0) return Buffer.from(EMPTY_ROOT);
  if (leaves.length === 1) return Buffer.from(leaves[0]);
  const k = splitPoint(leaves.length);
  return nodeHash(referenceRoot(leaves.slice(0, k)), referenceRoot(leaves.slice(k)));
}

/** RFC 9162 2.1.3.1 PATH(m, D[n]). */
function path(m: number, leaves: Buffer[]): Buffer[] {
  if (leaves.length === 1) return [];
  const k = splitPoint(leaves.length);
  if (m < k) return [...path(m, leaves.slice(0, k)), referenceRoot(leaves.slice(k))];
  return [...path(m - k, leaves.slice(k)), referenceRoot(leaves.slice(0, k))];
}

/** RFC 9162 2.1.4.1 SUBPROOF(m, D[n], b). */
function subproof(m: number, leaves: Buffer[], b: boolean): Buffer[] {
  const n = leaves.length;
  if (m === n) return b ? [] : [referenceRoot(leaves)];
  const k = splitPoint(n);
  if (m <= k) return [...subproof(m, leaves.slice(0, k), b), referenceRoot(leaves.slice(k))];
  return [...subproof(m - k, leaves.slice(k), false), referenceRoot(leaves.slice(0, k))];
}
