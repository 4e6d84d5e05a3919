import { describe, expect, it } from 'vitest';
import {
  EMPTY_ROOT,
  HASH_SIZE,
  TreeFrontier,
  consistencyProofRanges,
  inclusionProofRanges,
  leafHash,
  nodeHash,
  nodesForRanges,
  perfectSubtrees,
  rangeHash,
  referenceConsistencyProof,
  referenceInclusionProof,
  referenceRoot,
  verifyConsistency,
  verifyInclusion,
  type NodeId,
} from '../../src/audit/merkle.js';

const hex = (b: Buffer) => b.toString('hex');
const unhex = (s: string) => Buffer.from(s, 'hex');
const key = (n: NodeId) => `${n.level}:${n.index}`;

// Certificate Transparency reference data (transparency-dev/merkle proof/verify_test.go, the same
// vectors Trillian and the CT C++ log use): leaves, the root of every tree size 0..8, and a few
// proofs. Matching them is what makes our roots comparable with every other RFC 6962 log.
const CT_LEAVES = [
  '',
  '00',
  '10',
  '2021',
  '3031',
  '40414243',
  '5051525354555657',
  '606162636465666768696a6b6c6d6e6f',
].map((d) => leafHash(unhex(d)));
const CT_ROOTS = [
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
];
// Upstream lists leaves 1-based; these are 0-based indexes.
const CT_INCLUSION: Array<{ index: number; size: number; proof: string[] }> = [
  { index: 0, size: 1, proof: [] },
  {
    index: 0,
    size: 8,
    proof: [
      '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
    ],
  },
  {
    index: 5,
    size: 8,
    proof: [
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
      'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    ],
  },
  { index: 2, size: 3, proof: ['fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125'] },
  {
    index: 1,
    size: 5,
    proof: [
      '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    ],
  },
];
const CT_CONSISTENCY: Array<{ m: number; n: number; proof: string[] }> = [
  { m: 1, n: 1, proof: [] },
  {
    m: 1,
    n: 8,
    proof: [
      '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
    ],
  },
  {
    m: 6,
    n: 8,
    proof: [
      '0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a',
      'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    ],
  },
  {
    m: 2,
    n: 5,
    proof: [
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
    ],
  },
  {
    m: 6,
    n: 7,
    proof: [
      '0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a',
      'b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    ],
  },
];

const MAX = 70;
const LEAVES = Array.from({ length: MAX }, (_, i) => leafHash(`keywarden audit leaf ${i}`));
const ROOTS = Array.from({ length: MAX + 1 }, (_, n) => referenceRoot(LEAVES.slice(0, n)));

/** Every perfect subtree of the 70-leaf tree, as the sequencer would store them from onNode. */
const STORED = new Map<string, Buffer>();
const FRONTIER_ROOTS: Buffer[] = [];
{
  const frontier = TreeFrontier.empty();
  FRONTIER_ROOTS.push(frontier.root());
  for (const leaf of LEAVES) {
    frontier.appendLeafHash(leaf, (node, hash) => {
      if (STORED.has(key(node))) throw new Error(`node ${key(node)} emitted twice`);
      STORED.set(key(node), hash);
    });
    FRONTIER_ROOTS.push(frontier.root());
  }
}

/** A lookup over the stored nodes that also fails if a proof reaches past the tree it is for. */
function lookupFor(size: number) {
  return (node: NodeId): Buffer => {
    if ((node.index + 1) * 2 ** node.level > size) throw new Error(`node ${key(node)} is outside a tree of size ${size}`);
    const hash = STORED.get(key(node));
    if (!hash) throw new Error(`node ${key(node)} was never stored`);
    return hash;
  };
}

const buildProof = (ranges: Array<[number, number]>, size: number) =>
  ranges.map(([begin, end]) => rangeHash(begin, end, lookupFor(size)));

const flipped = (proof: Buffer[], i: number) =>
  proof.map((p, j) => (j === i ? Buffer.from(p.map((byte, k) => (k === 7 ? byte ^ 0x10 : byte))) : p));

// A proof does not bind the tree size by itself: two sizes whose proofs have the same shape (same
// length, siblings on the same sides) make the verifier do the same hashing, so a proof for one
// verifies under the other with the same root. The signed checkpoint binding size to root is what
// rules that out. The shapes are derived from the range planner, independently of the verifier's
// bit arithmetic, so these expectations still catch a verifier that accepts anything else.
const inclusionShape = (index: number, size: number) =>
  inclusionProofRanges(index, size)
    .map(([begin]) => (begin < index ? 'L' : 'R'))
    .join('');
const consistencyShape = (m: number, n: number) =>
  (Number.isInteger(Math.log2(m)) ? 'P' : 'N') +
  consistencyProofRanges(m, n)
    .map(([, end]) => (end <= m ? 'L' : 'R'))
    .join('');

describe('RFC 6962 known answers', () => {
  it('hashes the empty tree and the CT leaves to the published roots', () => {
    expect(HASH_SIZE).toBe(32);
    expect(hex(EMPTY_ROOT)).toBe(CT_ROOTS[0]);
    expect(hex(leafHash(''))).toBe(CT_ROOTS[1]);
    expect(hex(leafHash(Buffer.alloc(0)))).toBe(CT_ROOTS[1]);
    expect(hex(nodeHash(CT_LEAVES[0], CT_LEAVES[1]))).toBe(CT_ROOTS[2]);
    const frontier = TreeFrontier.empty();
    expect(hex(frontier.root())).toBe(CT_ROOTS[0]);
    for (let n = 0; n <= CT_LEAVES.length; n++) {
      expect(hex(referenceRoot(CT_LEAVES.slice(0, n))), `reference root of size ${n}`).toBe(CT_ROOTS[n]);
      if (n > 0) frontier.appendLeafHash(CT_LEAVES[n - 1]);
      expect(hex(frontier.root()), `frontier root of size ${n}`).toBe(CT_ROOTS[n]);
    }
  });

  it('hashes strings as UTF-8', () => {
    expect(leafHash('grün').equals(leafHash(Buffer.from('grün', 'utf8')))).toBe(true);
    expect(leafHash('grün').equals(leafHash(Buffer.from('grün', 'latin1')))).toBe(false);
  });

  it('builds and verifies the published inclusion proofs', () => {
    for (const { index, size, proof } of CT_INCLUSION) {
      const leaves = CT_LEAVES.slice(0, size);
      expect(referenceInclusionProof(leaves, index).map(hex), `reference ${index}/${size}`).toEqual(proof);
      const frontierNodes = new Map<string, Buffer>();
      const frontier = TreeFrontier.empty();
      for (const leaf of leaves) frontier.appendLeafHash(leaf, (node, hash) => frontierNodes.set(key(node), hash));
      const planned = inclusionProofRanges(index, size).map(([b, e]) => rangeHash(b, e, (n) => frontierNodes.get(key(n))!));
      expect(planned.map(hex), `planned ${index}/${size}`).toEqual(proof);
      expect(verifyInclusion(CT_LEAVES[index], index, size, proof.map(unhex), unhex(CT_ROOTS[size]))).toBe(true);
    }
  });

  it('builds and verifies the published consistency proofs', () => {
    for (const { m, n, proof } of CT_CONSISTENCY) {
      expect(referenceConsistencyProof(CT_LEAVES.slice(0, n), m).map(hex), `reference ${m}->${n}`).toEqual(proof);
      expect(verifyConsistency(m, n, proof.map(unhex), unhex(CT_ROOTS[m]), unhex(CT_ROOTS[n])), `${m}->${n}`).toBe(true);
    }
  });
});

describe('TreeFrontier', () => {
  it('has the reference root at every size', () => {
    for (let n = 0; n <= MAX; n++) expect(hex(FRONTIER_ROOTS[n]), `size ${n}`).toBe(hex(ROOTS[n]));
  });

  it('emits every perfect subtree exactly once, with its reference hash', () => {
    let expected = 0;
    for (let level = 0; 2 ** level <= MAX; level++) {
      const width = 2 ** level;
      for (let index = 0; (index + 1) * width <= MAX; index++) {
        expected += 1;
        const hash = STORED.get(key({ level, index }));
        expect(hash && hex(hash), key({ level, index })).toBe(hex(referenceRoot(LEAVES.slice(index * width, (index + 1) * width))));
      }
    }
    expect(STORED.size).toBe(expected);
  });

  it('round-trips through fromNodes and keeps appending identically', () => {
    const frontier = TreeFrontier.empty();
    for (let n = 0; n <= MAX; n++) {
      const nodes = frontier.nodes();
      expect(nodes.map((x) => x.node)).toEqual(n === 0 ? [] : perfectSubtrees(0, n));
      const restored = TreeFrontier.fromNodes(
        n,
        nodes.map((x) => x.hash),
      );
      expect(restored.size).toBe(n);
      expect(hex(restored.root())).toBe(hex(ROOTS[n]));
      if (n < MAX) {
        const emitted: string[] = [];
        restored.appendLeafHash(LEAVES[n], (node) => emitted.push(key(node)));
        frontier.appendLeafHash(LEAVES[n]);
        expect(hex(restored.root())).toBe(hex(ROOTS[n + 1]));
        // The restored frontier completes the same parents the original one did.
        expect(emitted).toEqual(nodesCompletedBy(n + 1));
      }
    }
  });

  it('refuses a frontier with the wrong number or size of hashes', () => {
    const hashes = TreeFrontier.fromNodes(7, [ROOTS[4], STORED.get('1:2')!, LEAVES[6]]).nodes().map((x) => x.hash);
    expect(() => TreeFrontier.fromNodes(7, hashes.slice(0, 2))).toThrow(RangeError);
    expect(() => TreeFrontier.fromNodes(8, hashes)).toThrow(RangeError);
    expect(() => TreeFrontier.fromNodes(0, [ROOTS[1]])).toThrow(RangeError);
    expect(() => TreeFrontier.fromNodes(7, [hashes[0], hashes[1], Buffer.alloc(31)])).toThrow(RangeError);
    expect(TreeFrontier.fromNodes(0, []).root().equals(EMPTY_ROOT)).toBe(true);
  });

  it('appendSubtree gives the same root and nodes as appending the leaves', () => {
    for (let start = 0; start < MAX; start++) {
      const base = TreeFrontier.empty();
      for (const leaf of LEAVES.slice(0, start)) base.appendLeafHash(leaf);
      for (let level = 0; start % 2 ** level === 0 && start + 2 ** level <= MAX; level++) {
        const width = 2 ** level;
        const node = { level, index: start / width };
        const frontier = base.clone();
        const emitted: Array<[string, string]> = [];
        frontier.appendSubtree(node, STORED.get(key(node))!, (n, h) => emitted.push([key(n), hex(h)]));
        expect(frontier.size).toBe(start + width);
        expect(hex(frontier.root()), `size ${start} + level ${level}`).toBe(hex(ROOTS[start + width]));
        // The appended subtree first, then each parent it completes, all as stored.
        expect(emitted[0][0]).toBe(key(node));
        for (const [k, h] of emitted) expect(h, k).toBe(hex(STORED.get(k)!));
        expect(base.size).toBe(start); // clone() is independent
      }
    }
  });

  it('refuses a subtree that is not aligned at the right edge', () => {
    const frontier = TreeFrontier.empty();
    for (const leaf of LEAVES.slice(0, 6)) frontier.appendLeafHash(leaf);
    const hash = STORED.get('2:1')!;
    expect(() => frontier.appendSubtree({ level: 2, index: 1 }, hash)).toThrow(RangeError); // 6 is not a multiple of 4
    expect(() => frontier.appendSubtree({ level: 1, index: 2 }, hash)).toThrow(RangeError); // covers [4, 6), not [6, 8)
    expect(() => frontier.appendSubtree({ level: 1, index: 3 }, Buffer.alloc(16))).toThrow(RangeError);
    expect(() => frontier.appendLeafHash(Buffer.alloc(33))).toThrow(RangeError);
    expect(frontier.size).toBe(6);
    expect(hex(frontier.root())).toBe(hex(ROOTS[6]));
    frontier.appendSubtree({ level: 1, index: 3 }, STORED.get('1:3')!);
    expect(hex(frontier.root())).toBe(hex(ROOTS[8]));
  });
});

/** The perfect subtrees that end exactly at `size`, lowest first: what appending leaf size-1 completes. */
function nodesCompletedBy(size: number): string[] {
  const out: string[] = [];
  for (let level = 0; size % 2 ** level === 0; level++) out.push(key({ level, index: size / 2 ** level - 1 }));
  return out;
}

describe('inclusion proofs, every leaf of every size 1..70', () => {
  it('planned from stored subtrees equal the RFC reference proofs and verify', () => {
    for (let size = 1; size <= MAX; size++) {
      const leaves = LEAVES.slice(0, size);
      for (let index = 0; index < size; index++) {
        const ranges = inclusionProofRanges(index, size);
        const proof = buildProof(ranges, size);
        expect(proof.map(hex), `${index}/${size}`).toEqual(referenceInclusionProof(leaves, index).map(hex));
        expect(verifyInclusion(LEAVES[index], index, size, proof, ROOTS[size]), `${index}/${size}`).toBe(true);
      }
    }
  });

  it('are rejected when anything about them is wrong', () => {
    let sizeAmbiguities = 0;
    for (let size = 1; size <= MAX; size++) {
      const root = ROOTS[size];
      for (let index = 0; index < size; index++) {
        const proof = referenceInclusionProof(LEAVES.slice(0, size), index);
        const at = `${index}/${size}`;
        for (let i = 0; i < proof.length; i++) expect(verifyInclusion(LEAVES[index], index, size, flipped(proof, i), root), at).toBe(false);
        expect(verifyInclusion(Buffer.from(LEAVES[index].map((b, k) => (k === 0 ? b ^ 1 : b))), index, size, proof, root), at).toBe(false);
        expect(verifyInclusion(LEAVES[index], index, size, proof, ROOTS[size - 1]), at).toBe(false);
        for (const wrongIndex of [index - 1, index + 1, index ^ 2, size]) {
          if (wrongIndex !== index) expect(verifyInclusion(LEAVES[index], wrongIndex, size, proof, root), `${at} as ${wrongIndex}`).toBe(false);
        }
        for (const wrongSize of [size - 1, size + 1, size * 2, Math.floor(size / 2)]) {
          if (wrongSize === size) continue;
          const sameShape = wrongSize > index && inclusionShape(index, wrongSize) === inclusionShape(index, size);
          if (sameShape) sizeAmbiguities += 1;
          expect(verifyInclusion(LEAVES[index], index, wrongSize, proof, root), `${at} as size ${wrongSize}`).toBe(sameShape);
        }
        if (proof.length > 0) expect(verifyInclusion(LEAVES[index], index, size, proof.slice(0, -1), root), at).toBe(false);
        expect(verifyInclusion(LEAVES[index], index, size, [...proof, root], root), at).toBe(false);
        expect(verifyInclusion(LEAVES[index], index, size, [root, ...proof], root), at).toBe(false);
      }
    }
    // The shape rule is not vacuous: e.g. leaf 0's proof for size 3 (leaf 1, leaf 2) verifies as size 4.
    expect(sizeAmbiguities).toBeGreaterThan(0);
    expect(verifyInclusion(LEAVES[0], 0, 4, referenceInclusionProof(LEAVES.slice(0, 3), 0), ROOTS[3])).toBe(true);
  });

  it('answers false, never throws, on malformed input', () => {
    const proof = referenceInclusionProof(LEAVES.slice(0, 5), 2);
    const ok = (leaf: unknown, index: unknown, size: unknown, p: unknown, root: unknown) =>
      verifyInclusion(leaf as Buffer, index as number, size as number, p as Buffer[], root as Buffer);
    expect(ok(LEAVES[2], 2, 5, proof, ROOTS[5])).toBe(true);
    for (const [leaf, index, size, p, root] of [
      [LEAVES[2], 2, 0, proof, ROOTS[5]],
      [LEAVES[2], 5, 5, proof, ROOTS[5]],
      [LEAVES[2], -1, 5, proof, ROOTS[5]],
      [LEAVES[2], 2.5, 5, proof, ROOTS[5]],
      [LEAVES[2], Number.NaN, 5, proof, ROOTS[5]],
      [LEAVES[2], 2, Number.POSITIVE_INFINITY, proof, ROOTS[5]],
      [LEAVES[2], 2, 2 ** 60, proof, ROOTS[5]],
      [LEAVES[2], '2', 5, proof, ROOTS[5]],
      [LEAVES[2].subarray(1), 2, 5, proof, ROOTS[5]],
      [hex(LEAVES[2]), 2, 5, proof, ROOTS[5]],
      [LEAVES[2], 2, 5, proof, ROOTS[5].subarray(0, 31)],
      [LEAVES[2], 2, 5, [...proof.slice(0, 2), Buffer.concat([proof[2], Buffer.alloc(1)])], ROOTS[5]],
      [LEAVES[2], 2, 5, [proof[0], null, proof[2]], ROOTS[5]],
      [LEAVES[2], 2, 5, 'not a proof', ROOTS[5]],
      [LEAVES[2], 2, 5, undefined, ROOTS[5]],
      [undefined, 2, 5, proof, undefined],
    ]) {
      expect(ok(leaf, index, size, p, root)).toBe(false);
    }
  });
});

describe('consistency proofs, every m <= n of every size 1..70', () => {
  it('planned from stored subtrees equal the RFC reference proofs and verify', () => {
    for (let n = 1; n <= MAX; n++) {
      const leaves = LEAVES.slice(0, n);
      for (let m = 1; m <= n; m++) {
        const proof = buildProof(consistencyProofRanges(m, n), n);
        expect(proof.map(hex), `${m}->${n}`).toEqual(referenceConsistencyProof(leaves, m).map(hex));
        expect(verifyConsistency(m, n, proof, ROOTS[m], ROOTS[n]), `${m}->${n}`).toBe(true);
        if (m === n) expect(proof).toEqual([]);
      }
    }
  });

  it('are rejected when anything about them is wrong', () => {
    let sizeAmbiguities = 0;
    for (let n = 2; n <= MAX; n++) {
      for (let m = 1; m < n; m++) {
        const proof = referenceConsistencyProof(LEAVES.slice(0, n), m);
        const [rootM, rootN] = [ROOTS[m], ROOTS[n]];
        const at = `${m}->${n}`;
        for (let i = 0; i < proof.length; i++) expect(verifyConsistency(m, n, flipped(proof, i), rootM, rootN), at).toBe(false);
        expect(verifyConsistency(m, n, proof, ROOTS[m - 1], rootN), at).toBe(false);
        expect(verifyConsistency(m, n, proof, rootM, ROOTS[n - 1]), at).toBe(false);
        expect(verifyConsistency(m, n, proof, rootN, rootM), at).toBe(false);
        expect(verifyConsistency(m, n, [], rootM, rootN), at).toBe(false);
        expect(verifyConsistency(m, n, proof.slice(0, -1), rootM, rootN), at).toBe(false);
        expect(verifyConsistency(m, n, proof.slice(1), rootM, rootN), at).toBe(false);
        expect(verifyConsistency(m, n, [...proof, rootN], rootM, rootN), at).toBe(false);
        expect(verifyConsistency(m, n, [rootM, ...proof], rootM, rootN), at).toBe(false);
        expect(verifyConsistency(n, m, proof, rootN, rootM), at).toBe(false);
        for (const [wm, wn] of [
          [m - 1, n],
          [m + 1, n],
          [m, n - 1],
          [m, n + 1],
          [m, n * 2],
        ]) {
          const sameShape = wm >= 1 && wm < wn && consistencyShape(wm, wn) === consistencyShape(m, n);
          if (sameShape) sizeAmbiguities += 1;
          expect(verifyConsistency(wm, wn, proof, rootM, rootN), `${at} as ${wm}->${wn}`).toBe(sameShape);
        }
      }
    }
    expect(sizeAmbiguities).toBeGreaterThan(0);
  });

  it('treats equal and empty trees as the RFC says', () => {
    expect(verifyConsistency(5, 5, [], ROOTS[5], ROOTS[5])).toBe(true);
    expect(verifyConsistency(5, 5, [], ROOTS[5], ROOTS[6])).toBe(false);
    expect(verifyConsistency(5, 5, [ROOTS[5]], ROOTS[5], ROOTS[5])).toBe(false);
    expect(verifyConsistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)).toBe(true);
    expect(verifyConsistency(0, 7, [], EMPTY_ROOT, ROOTS[7])).toBe(true);
    expect(verifyConsistency(0, 7, [ROOTS[7]], EMPTY_ROOT, ROOTS[7])).toBe(false);
    expect(verifyConsistency(0, 7, [], ROOTS[1], ROOTS[7])).toBe(false);
    expect(() => consistencyProofRanges(0, 7)).toThrow(RangeError);
    expect(() => consistencyProofRanges(8, 7)).toThrow(RangeError);
    expect(() => referenceConsistencyProof(LEAVES.slice(0, 7), 0)).toThrow(RangeError);
  });

  it('answers false, never throws, on malformed input', () => {
    const proof = referenceConsistencyProof(LEAVES.slice(0, 7), 3);
    const ok = (m: unknown, n: unknown, p: unknown, a: unknown, b: unknown) =>
      verifyConsistency(m as number, n as number, p as Buffer[], a as Buffer, b as Buffer);
    expect(ok(3, 7, proof, ROOTS[3], ROOTS[7])).toBe(true);
    for (const [m, n, p, a, b] of [
      [-1, 7, proof, ROOTS[3], ROOTS[7]],
      [3.5, 7, proof, ROOTS[3], ROOTS[7]],
      [3, Number.NaN, proof, ROOTS[3], ROOTS[7]],
      [3, 2 ** 60, proof, ROOTS[3], ROOTS[7]],
      [3, 7, proof, ROOTS[3].subarray(2), ROOTS[7]],
      [3, 7, proof, ROOTS[3], 'root'],
      [3, 7, [proof[0], Buffer.alloc(0), ...proof.slice(1)], ROOTS[3], ROOTS[7]],
      [3, 7, [...proof, 42], ROOTS[3], ROOTS[7]],
      [3, 7, null, ROOTS[3], ROOTS[7]],
      [7, 7, [], ROOTS[7], undefined],
    ]) {
      expect(ok(m, n, p, a, b)).toBe(false);
    }
  });
});

describe('range planning', () => {
  it('splits every range into maximal aligned perfect subtrees', () => {
    for (let begin = 0; begin < MAX; begin++) {
      for (let end = begin + 1; end <= MAX; end++) {
        const nodes = perfectSubtrees(begin, end);
        let at = begin;
        for (const { level, index } of nodes) {
          const width = 2 ** level;
          expect(index * width, `[${begin}, ${end})`).toBe(at); // contiguous and aligned
          // Maximal: the parent would either start before `begin` or reach past `end`.
          const parentStart = Math.floor(index / 2) * width * 2;
          expect(parentStart < begin || parentStart + width * 2 > end, `[${begin}, ${end}) ${key({ level, index })}`).toBe(true);
          at += width;
        }
        expect(at).toBe(end);
        expect(nodes.length).toBeLessThanOrEqual(2 * Math.log2(end - begin + 1));
      }
    }
    expect(() => perfectSubtrees(5, 5)).toThrow(RangeError);
    expect(() => perfectSubtrees(-1, 5)).toThrow(RangeError);
    expect(() => perfectSubtrees(0, 2 ** 53)).toThrow(RangeError);
  });

  it('refuses to fold a range that is not a node of an RFC tree', () => {
    const lookup = lookupFor(MAX);
    expect(rangeHash(4, 7, lookup).equals(referenceRoot(LEAVES.slice(4, 7)))).toBe(true);
    expect(rangeHash(8, 16, lookup).equals(referenceRoot(LEAVES.slice(8, 16)))).toBe(true);
    // [1, 4) folds to H(l1, H(l2, l3)), but MTH(l1, l2, l3) is H(H(l1, l2), l3).
    expect(() => rangeHash(1, 4, lookup)).toThrow(RangeError);
    expect(() => rangeHash(2, 4 + 2, lookup)).toThrow(RangeError);
  });

  it('collects each needed subtree once for a batched read', () => {
    for (let n = 1; n <= MAX; n++) {
      for (let m = 1; m <= n; m++) {
        const ranges = [...inclusionProofRanges(m - 1, n), ...consistencyProofRanges(m, n)];
        const nodes = nodesForRanges(ranges);
        const keys = nodes.map(key);
        expect(new Set(keys).size).toBe(keys.length);
        expect(new Set(keys)).toEqual(new Set(ranges.flatMap(([b, e]) => perfectSubtrees(b, e).map(key))));
        // Reading exactly those nodes is enough to build the proofs.
        const batch = new Map(nodes.map((node) => [key(node), STORED.get(key(node))!]));
        for (const [b, e] of ranges) expect(() => rangeHash(b, e, (node) => batch.get(key(node)) ?? fail(node))).not.toThrow();
      }
    }
    expect(nodesForRanges([])).toEqual([]);
  });
});

function fail(node: NodeId): never {
  throw new Error(`node ${key(node)} was not in the batch`);
}

/** Checks that `ranges` are disjoint RFC nodes inside [0, size) and returns how many leaves they cover. */
function coveredLeaves(ranges: Array<[number, number]>, size: number): number {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  let covered = 0;
  let last = 0;
  for (const [begin, end] of sorted) {
    expect(begin).toBeGreaterThanOrEqual(last);
    expect(end).toBeLessThanOrEqual(size);
    expect(Number.isSafeInteger(begin) && Number.isSafeInteger(end)).toBe(true);
    const levels = perfectSubtrees(begin, end).map((n) => n.level);
    levels.slice(1).forEach((level, i) => expect(level).toBeLessThan(levels[i]));
    // A range that is not perfect must be a right edge of the tree.
    if (levels.length > 1) expect(end).toBe(size);
    covered += end - begin;
    last = end;
  }
  return covered;
}

describe('sizes beyond 2^32', () => {
  const size = 2 ** 40 + 12345;
  const indexes = [0, 1, 12344, 2 ** 32 - 1, 2 ** 32, 2 ** 39 + 7, 2 ** 40 - 1, 2 ** 40, 2 ** 40 + 6000, size - 1];

  it('plans inclusion proofs that cover every other leaf exactly once', () => {
    for (const index of indexes) {
      const ranges = inclusionProofRanges(index, size);
      expect(ranges.length).toBeLessThanOrEqual(Math.ceil(Math.log2(size)));
      expect(coveredLeaves([...ranges, [index, index + 1]], size)).toBe(size);
    }
    expect(inclusionProofRanges(2 ** 40 + 6000, size)[0]).toEqual([2 ** 40 + 6001, 2 ** 40 + 6002]);
  });

  it('plans consistency proofs of logarithmic length inside the new tree', () => {
    for (const m of [1, 2, 12345, 2 ** 32 + 1, 2 ** 39 + 7, 2 ** 40, 2 ** 40 + 1, size - 1, size]) {
      const ranges = consistencyProofRanges(m, size);
      expect(ranges.length).toBeLessThanOrEqual(2 * Math.log2(size));
      coveredLeaves(ranges, size);
      expect(nodesForRanges(ranges).length).toBeLessThanOrEqual(2 * Math.log2(size) * Math.log2(size));
    }
    expect(consistencyProofRanges(2 ** 40, size)).toEqual([[2 ** 40, size]]);
    const near = Number.MAX_SAFE_INTEGER;
    expect(coveredLeaves([...inclusionProofRanges(near - 1, near), [near - 1, near]], near)).toBe(near);
  });

  it('appends, proves and verifies in a tree of identical leaves', () => {
    // With every leaf equal, the hash of a perfect subtree depends only on its level, so a tree of
    // 2^40 leaves costs a few dozen hashes and still runs the real index arithmetic end to end.
    const byLevel = [leafHash('same')];
    for (let level = 1; level <= 53; level++) byLevel.push(nodeHash(byLevel[level - 1], byLevel[level - 1]));
    const lookup = (node: NodeId) => byLevel[node.level];
    const frontier = TreeFrontier.fromNodes(size - 1, perfectSubtrees(0, size - 1).map(lookup));
    const emitted: NodeId[] = [];
    frontier.appendLeafHash(byLevel[0], (node) => emitted.push(node));
    expect(emitted.map(key)).toEqual(nodesCompletedBy(size));
    expect(frontier.nodes().map((x) => x.node)).toEqual(perfectSubtrees(0, size));
    const root = frontier.root();
    for (const index of indexes) {
      const proof = inclusionProofRanges(index, size).map(([b, e]) => rangeHash(b, e, lookup));
      expect(verifyInclusion(byLevel[0], index, size, proof, root), `leaf ${index}`).toBe(true);
      expect(verifyInclusion(byLevel[1], index, size, proof, root), `leaf ${index}`).toBe(false);
    }
    for (const m of [1, 3, 2 ** 32 + 1, 2 ** 40, size - 1]) {
      const old = TreeFrontier.fromNodes(m, perfectSubtrees(0, m).map(lookup)).root();
      const proof = consistencyProofRanges(m, size).map(([b, e]) => rangeHash(b, e, lookup));
      expect(verifyConsistency(m, size, proof, old, root), `${m}->${size}`).toBe(true);
      expect(verifyConsistency(m, size, proof.slice(0, -1), old, root), `${m}->${size}`).toBe(false);
    }
  });
});
