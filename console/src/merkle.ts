/**
 * In-browser verification of an audit event's inclusion in the signed log, with WebCrypto only:
 * the browser recomputes the event's RFC 6962 leaf hash from the fields it shows, folds the
 * inclusion proof (RFC 9162 2.1.3.2) up to a root, and checks that root against a C2SP checkpoint
 * whose Ed25519 signed-note signature it verifies itself. The leaf data is
 * src/audit/audit-leaf-data.ts itself; the hashing and signature checks are a WebCrypto port of
 * the verifying half of src/audit/{merkle,signed-note}.ts; nothing here trusts the broker's
 * own claim that the proof is fine.
 */
import type { AuditEvent } from './api';
// the server's own definition of the leaf data (a Node-free module), so the two cannot drift
import { leafData } from '../../src/audit/audit-leaf-data';

const enc = new TextEncoder();

async function sha256(...parts: Uint8Array[]): Promise<Uint8Array> {
  const len = parts.reduce((n, p) => n + p.length, 0);
  const all = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return new Uint8Array(await crypto.subtle.digest('SHA-256', all));
}

export const leafHash = (data: string) => sha256(Uint8Array.of(0), enc.encode(data));
const nodeHash = (l: Uint8Array, r: Uint8Array) => sha256(Uint8Array.of(1), l, r);

export function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export function fromHex(s: string): Uint8Array | null {
  if (!/^([0-9a-f]{2})*$/i.test(s)) return null;
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** Standard base64, canonical only (re-encodes to the input). */
export function fromB64(s: string): Uint8Array | null {
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return null;
  let bin: string;
  try {
    bin = atob(s);
  } catch {
    return null;
  }
  const out = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return toB64(out) === s ? out : null;
}

function toB64(b: Uint8Array): string {
  return btoa(String.fromCharCode(...b));
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** RFC 9162 2.1.3.2: the root an inclusion proof leads to, or null when the proof has the wrong shape. */
export async function rootFromInclusionProof(leaf: Uint8Array, index: number, size: number, proof: Uint8Array[]): Promise<Uint8Array | null> {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size) return null;
  if (leaf.length !== 32 || proof.some((p) => p.length !== 32)) return null;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

export interface VerifierKey {
  name: string;
  keyId: Uint8Array;
  publicRaw: Uint8Array;
}

/** "<name>+<8 hex key id>+<base64(0x01 || Ed25519 public key)>"; throws on anything malformed. */
export async function parseVerifierKey(vkey: string): Promise<VerifierKey> {
  const first = vkey.indexOf('+');
  const second = first < 0 ? -1 : vkey.indexOf('+', first + 1);
  if (second < 0) throw new Error('malformed verifier key');
  const name = vkey.slice(0, first);
  const keyIdHex = vkey.slice(first + 1, second);
  const material = fromB64(vkey.slice(second + 1));
  if (name === '' || /\s/.test(name)) throw new Error('invalid key name');
  if (!/^[0-9a-f]{8}$/.test(keyIdHex)) throw new Error('malformed verifier key id');
  if (!material || material.length !== 33 || material[0] !== 0x01) throw new Error('not an Ed25519 verifier key');
  const publicRaw = material.subarray(1);
  const keyId = (await sha256(enc.encode(name + '\n'), Uint8Array.of(0x01), publicRaw)).subarray(0, 4);
  if (hex(keyId) !== keyIdHex) throw new Error('verifier key id does not match the key');
  return { name, keyId, publicRaw };
}

/** Opens a signed note with one Ed25519 key; returns the note's text when that key's signature verifies. */
export async function openNote(note: string, key: VerifierKey): Promise<string> {
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw new Error('malformed note');
  const text = note.slice(0, split + 1);
  const block = note.slice(split + 2);
  if (!block.endsWith('\n')) throw new Error('malformed note');
  for (const line of block.slice(0, -1).split('\n')) {
    if (!line.startsWith('\u2014 ')) throw new Error('malformed signature line');
    const [name, encoded = ''] = line.slice(2).split(' ');
    const raw = fromB64(encoded);
    if (!raw || raw.length <= 4) throw new Error('malformed signature line');
    if (name !== key.name || !equal(raw.subarray(0, 4), key.keyId)) continue;
    const sig = raw.subarray(4);
    if (sig.length !== 64) throw new Error('malformed Ed25519 signature');
    const pub = await crypto.subtle.importKey('raw', new Uint8Array(key.publicRaw), { name: 'Ed25519' }, false, ['verify']);
    const ok = await crypto.subtle.verify({ name: 'Ed25519' }, pub, new Uint8Array(sig), enc.encode(text));
    if (!ok) throw new Error(`the signature by ${key.name}+${hex(key.keyId)} does not verify`);
    return text;
  }
  throw new Error(`the note has no signature by ${key.name}+${hex(key.keyId)}`);
}

export interface Checkpoint {
  origin: string;
  size: number;
  rootHash: Uint8Array;
  extensions: string[];
}

export function parseCheckpoint(text: string): Checkpoint {
  if (!text.endsWith('\n')) throw new Error('malformed checkpoint');
  const lines = text.slice(0, -1).split('\n');
  if (lines.length < 3 || lines.some((l) => l === '')) throw new Error('malformed checkpoint');
  const [origin, sizeLine, hashLine, ...extensions] = lines as [string, string, string, ...string[]];
  if (!/^(0|[1-9][0-9]*)$/.test(sizeLine)) throw new Error('malformed checkpoint size');
  const size = Number(sizeLine);
  const rootHash = fromB64(hashLine);
  if (!Number.isSafeInteger(size) || !rootHash || rootHash.length !== 32) throw new Error('malformed checkpoint');
  return { origin, size, rootHash, extensions };
}

export interface Step {
  label: string;
  ok: boolean;
  detail: string;
}

export interface InclusionResult {
  ok: boolean;
  steps: Step[];
}

/**
 * Verifies that `event` (as the console shows it) is leaf `proof.leafIndex` of the tree whose
 * checkpoint `note` is signed by `verifierKey`.
 */
export async function verifyEventInclusion(
  event: AuditEvent,
  proof: { leafIndex: number; treeSize: number; hashes: string[] },
  note: string,
  verifierKey: string,
): Promise<InclusionResult> {
  const steps: Step[] = [];
  const done = (ok: boolean) => ({ ok: ok && steps.every((s) => s.ok), steps });
  try {
    const key = await parseVerifierKey(verifierKey);
    const text = await openNote(note, key);
    const cp = parseCheckpoint(text);
    steps.push({ label: 'Checkpoint signature', ok: true, detail: `Ed25519 signature by ${key.name}+${hex(key.keyId)} verified (tree size ${cp.size})` });
    if (cp.origin !== key.name) {
      steps.push({ label: 'Checkpoint origin', ok: false, detail: `origin ${cp.origin} is not the key's name ${key.name}` });
      return done(false);
    }
    if (cp.size !== proof.treeSize) {
      steps.push({ label: 'Tree size', ok: false, detail: `the proof is for size ${proof.treeSize}, the checkpoint for ${cp.size}` });
      return done(false);
    }
    if (event.leafIndex !== proof.leafIndex) {
      steps.push({ label: 'Leaf position', ok: false, detail: `the event is at leaf ${String(event.leafIndex)}, the proof for leaf ${proof.leafIndex}` });
      return done(false);
    }
    const leaf = await leafHash(leafData(event));
    steps.push({ label: 'Leaf hash', ok: true, detail: `SHA-256(0x00 ‖ event) = ${hex(leaf)}` });
    const path = proof.hashes.map(fromHex);
    if (path.some((p) => p === null)) {
      steps.push({ label: 'Inclusion proof', ok: false, detail: 'the proof has a malformed hash' });
      return done(false);
    }
    const root = await rootFromInclusionProof(leaf, proof.leafIndex, proof.treeSize, path as Uint8Array[]);
    const ok = root !== null && equal(root, cp.rootHash);
    steps.push({
      label: 'Inclusion proof',
      ok,
      detail: ok
        ? `${path.length} hashes lead from leaf ${proof.leafIndex} to the signed root ${hex(cp.rootHash)}`
        : `the proof does not lead to the signed root ${hex(cp.rootHash)}${root ? ` (got ${hex(root)})` : ''}`,
    });
    return done(ok);
  } catch (err) {
    steps.push({ label: 'Checkpoint', ok: false, detail: (err as Error).message });
    return done(false);
  }
}
