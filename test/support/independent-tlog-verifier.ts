/*
 * An independent verifier of Keywarden's audit transparency log, written from RFC 9162
 * (sections 2.1.1, 2.1.3.2 and 2.1.4.2) and the C2SP signed-note / tlog-checkpoint
 * specifications. It imports nothing from src/: it is what an auditor's own tooling would do with
 * the broker's answers, so the tests that use it do not check the broker against itself.
 */
import crypto from 'node:crypto';

const sha256 = (...parts: Buffer[]) => crypto.createHash('sha256').update(Buffer.concat(parts)).digest();
export const rfcLeaf = (data: string) => sha256(Buffer.from([0]), Buffer.from(data, 'utf8'));
export const rfcNode = (l: Buffer, r: Buffer) => sha256(Buffer.from([1]), l, r);

/** JSON with keys sorted, no whitespace: the leaf encoding the README documents. */
export function canonical(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
    .join(',')}}`;
}

/** The leaf of an event as published: every field but its position. */
export function eventLeaf(event: Record<string, unknown>): Buffer {
  const { leafIndex: _position, ...fields } = event;
  return rfcLeaf(canonical(fields));
}

/** RFC 9162 2.1.3.2 */
export function verifyInclusionRfc(leafIndex: number, treeSize: number, leaf: Buffer, proof: Buffer[], root: Buffer): boolean {
  if (leafIndex >= treeSize) return false;
  let fn = leafIndex;
  let sn = treeSize - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = rfcNode(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = rfcNode(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && r.equals(root);
}

/** RFC 9162 2.1.4.2 */
export function verifyConsistencyRfc(first: number, second: number, proof: Buffer[], firstHash: Buffer, secondHash: Buffer): boolean {
  if (first === second) return proof.length === 0 && firstHash.equals(secondHash);
  if (first > second || first === 0) return false;
  let path = [...proof];
  // a power of two: its root is where the path starts
  if ((first & (first - 1)) === 0) path = [firstHash, ...path];
  if (path.length === 0) return false;
  let fn = first - 1;
  let sn = second - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = rfcNode(c, fr);
      sr = rfcNode(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = rfcNode(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return fr.equals(firstHash) && sr.equals(secondHash) && sn === 0;
}

/** Opens a C2SP signed note with an Ed25519 verifier key: the checkpoint's origin, size and root, or throws. */
export function openCheckpoint(note: string, verifierKey: string): { origin: string; size: number; root: Buffer } {
  // <name>+<hex key id>+<base64 key>: the name and the key id hold no '+', the base64 key may
  const [name, keyIdHex] = verifierKey.split('+', 2);
  const keyBytes = Buffer.from(verifierKey.slice(name.length + keyIdHex.length + 2), 'base64');
  if (keyBytes[0] !== 0x01 || keyBytes.length !== 33) throw new Error('not an Ed25519 verifier key');
  const publicKey = crypto.createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), keyBytes.subarray(1)]), format: 'der', type: 'spki' });
  const split = note.lastIndexOf('\n\n');
  const text = note.slice(0, split + 1);
  const mine = note
    .slice(split + 2)
    .split('\n')
    .find((l) => l.startsWith(`— ${name} `));
  if (!mine) throw new Error('not signed by the log key');
  const sig = Buffer.from(mine.slice(`— ${name} `.length), 'base64');
  if (sig.subarray(0, 4).toString('hex') !== keyIdHex) throw new Error('key id differs');
  if (!crypto.verify(null, Buffer.from(text, 'utf8'), publicKey, sig.subarray(4))) throw new Error('bad signature');
  const [origin, size, root] = text.split('\n');
  return { origin, size: Number(size), root: Buffer.from(root, 'base64') };
}
