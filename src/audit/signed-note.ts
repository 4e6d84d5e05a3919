/**
 * C2SP signed notes (https://c2sp.org/signed-note) with Ed25519 signatures, and the C2SP transparency-log
 * checkpoint body (https://c2sp.org/tlog-checkpoint). Behaviour follows the reference implementation,
 * golang.org/x/mod/sumdb/note (note.go), so that notes signed here open there and vice versa.
 *
 * Kept free of project imports on purpose: witnesses and offline verifiers can vendor this one file.
 */
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';

/** Ed25519 signature type byte of signed notes. */
export const ED25519_ALG = 0x01;

/** The reference implementation refuses notes with more than 100 signature lines (the spec asks for at least 16). */
const MAX_SIGNATURES = 100;
const SIGNATURE_PREFIX = '\u2014 '; // em dash, space
const ED25519_PUBLIC_KEY_BYTES = 32;
const ED25519_SIGNATURE_BYTES = 64;
const KEY_ID_BYTES = 4;
const CHECKPOINT_HASH_BYTES = 32;

// DER wrappers that turn a raw 32-byte Ed25519 seed / public key into PKCS#8 / SPKI (RFC 8410).
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export class NoteError extends Error {
  constructor(readonly reason: string) {
    super(`signed note: ${reason}`);
    this.name = 'NoteError';
  }
}

// Code units, not code points, so a lone surrogate (what invalid UTF-8 would have been) is caught.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const CONTROL_EXCEPT_NEWLINE = /[\u0000-\u0009\u000B-\u001F]/;
const UNICODE_SPACE = /\p{White_Space}/u;

/** Key names: non-empty, valid UTF-8, no Unicode spaces, no "+" (signed-note "Format"); no control characters. */
function isValidKeyName(name: string): boolean {
  return (
    typeof name === 'string' &&
    name !== '' &&
    !name.includes('+') &&
    !UNICODE_SPACE.test(name) &&
    !LONE_SURROGATE.test(name) &&
    !/[\u0000-\u001F]/.test(name)
  );
}

/** Valid UTF-8 with no ASCII control character other than newline (the whole-note rule of signed-note). */
function isValidNoteText(text: string): boolean {
  return !LONE_SURROGATE.test(text) && !CONTROL_EXCEPT_NEWLINE.test(text);
}

/**
 * Standard base64 (RFC 4648 section 4), canonical only. Buffer.from(..., 'base64') silently skips junk and
 * accepts URL-safe letters, so the shape is checked first and the decoding must re-encode to the input.
 */
function decodeStdBase64(s: string): Buffer | null {
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return null;
  const bytes = Buffer.from(s, 'base64');
  return bytes.toString('base64') === s ? bytes : null;
}

function hex8(keyId: Buffer): string {
  return keyId.toString('hex');
}

function requireEd25519PublicRaw(publicRaw: Buffer): void {
  if (!Buffer.isBuffer(publicRaw) || publicRaw.length !== ED25519_PUBLIC_KEY_BYTES) {
    throw new NoteError(`Ed25519 public key must be ${ED25519_PUBLIC_KEY_BYTES} bytes`);
  }
}

function ed25519PublicRaw(key: KeyObject): Buffer {
  const publicKey = key.type === 'private' ? createPublicKey(key) : key;
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  return Buffer.from(spki.subarray(SPKI_ED25519_PREFIX.length));
}

/** Ed25519 private key from a 32-byte seed (so the seed can be stored wrapped by the root key). */
export function ed25519KeyFromSeed(seed: Buffer): { privateKey: KeyObject; publicKey: KeyObject; publicRaw: Buffer } {
  if (!Buffer.isBuffer(seed) || seed.length !== 32) throw new NoteError('Ed25519 seed must be 32 bytes');
  const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const publicKey = createPublicKey(privateKey);
  return { privateKey, publicKey, publicRaw: ed25519PublicRaw(publicKey) };
}

/** First 4 bytes of SHA-256(name || "\n" || 0x01 || 32-byte public key). */
export function noteKeyId(name: string, publicRaw: Buffer): Buffer {
  if (!isValidKeyName(name)) throw new NoteError('invalid key name');
  requireEd25519PublicRaw(publicRaw);
  const digest = createHash('sha256').update(name, 'utf8').update('\n').update(Buffer.of(ED25519_ALG)).update(publicRaw).digest();
  return digest.subarray(0, KEY_ID_BYTES);
}

/** "<name>+<8 hex keyid>+<base64(0x01 || public key)>" (the note verifier key encoding). */
export function verifierKeyString(name: string, publicRaw: Buffer): string {
  const keyId = noteKeyId(name, publicRaw);
  return `${name}+${hex8(keyId)}+${Buffer.concat([Buffer.of(ED25519_ALG), publicRaw]).toString('base64')}`;
}

export interface NoteVerifier {
  name: string;
  keyId: Buffer;
  publicKey: KeyObject;
  verify(message: Buffer, signature: Buffer): boolean;
}

/** Parses a verifier key string; throws NoteError on anything malformed (wrong alg, bad base64, keyid mismatch, bad name). */
export function parseVerifierKey(vkey: string): NoteVerifier {
  if (typeof vkey !== 'string') throw new NoteError('malformed verifier key');
  // Same split as the Go reference: name and key id end at the first two "+", the base64 may itself contain "+".
  const first = vkey.indexOf('+');
  const second = first < 0 ? -1 : vkey.indexOf('+', first + 1);
  if (second < 0) throw new NoteError('malformed verifier key');
  const name = vkey.slice(0, first);
  const keyIdHex = vkey.slice(first + 1, second);
  const material = decodeStdBase64(vkey.slice(second + 1));
  if (!isValidKeyName(name)) throw new NoteError('invalid key name');
  // The spec's hex encoding is fixed-length lowercase.
  if (!/^[0-9a-f]{8}$/.test(keyIdHex)) throw new NoteError('malformed verifier key id');
  if (material === null || material.length === 0) throw new NoteError('malformed verifier key base64');
  if (material[0] !== ED25519_ALG) throw new NoteError(`unsupported signature type 0x${material[0].toString(16).padStart(2, '0')}`);
  const publicRaw = material.subarray(1);
  if (publicRaw.length !== ED25519_PUBLIC_KEY_BYTES) throw new NoteError('malformed Ed25519 verifier key');
  const keyId = noteKeyId(name, publicRaw);
  if (hex8(keyId) !== keyIdHex) throw new NoteError('verifier key id does not match key');
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, publicRaw]), format: 'der', type: 'spki' });
  } catch {
    throw new NoteError('malformed Ed25519 verifier key');
  }
  return {
    name,
    keyId,
    publicKey,
    verify(message: Buffer, signature: Buffer): boolean {
      if (signature.length !== ED25519_SIGNATURE_BYTES) return false;
      try {
        return verify(null, message, publicKey, signature);
      } catch {
        return false;
      }
    },
  };
}

/**
 * Signs `text` and returns the full signed note. The text must be a valid note text: UTF-8, no control character
 * but newline, ending in "\n". Empty lines inside the text are allowed by the spec (its own example has one), so
 * they are not refused here; checkpoint bodies, which must not have them, are policed by formatCheckpoint.
 */
export function signNote(text: string, name: string, privateKey: KeyObject): string {
  if (typeof text !== 'string' || !text.endsWith('\n') || !isValidNoteText(text)) throw new NoteError('malformed note text');
  if (!isValidKeyName(name)) throw new NoteError('invalid key name');
  if (privateKey?.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') {
    throw new NoteError('signing key must be an Ed25519 private key');
  }
  const keyId = noteKeyId(name, ed25519PublicRaw(privateKey));
  const signature = sign(null, Buffer.from(text, 'utf8'), privateKey);
  return `${text}\n${SIGNATURE_PREFIX}${name} ${Buffer.concat([keyId, signature]).toString('base64')}\n`;
}

/**
 * Parses a signed note and checks signatures by the given verifiers. Returns the body text and the names of the
 * verifiers whose signature verified. Throws NoteError when the note is malformed, when a signature line for a
 * known key (name+keyid) does not verify, or when no known key signed it. Unknown signatures are ignored (spec).
 */
export function openNote(note: string, verifiers: NoteVerifier[]): { text: string; verifiedBy: string[] } {
  if (typeof note !== 'string' || !isValidNoteText(note)) throw new NoteError('malformed note');
  // The text is separated from the signatures by the last empty line; signature lines never contain "\n\n".
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw new NoteError('malformed note');
  const text = note.slice(0, split + 1);
  const block = note.slice(split + 2);
  if (block === '' || !block.endsWith('\n')) throw new NoteError('malformed note');
  const lines = block.slice(0, -1).split('\n');
  if (lines.length > MAX_SIGNATURES) throw new NoteError('malformed note: too many signatures');

  const message = Buffer.from(text, 'utf8');
  const checked = new Set<string>();
  const verifiedBy: string[] = [];
  for (const line of lines) {
    if (!line.startsWith(SIGNATURE_PREFIX)) throw new NoteError('malformed note: bad signature line');
    const rest = line.slice(SIGNATURE_PREFIX.length);
    const space = rest.indexOf(' ');
    const name = space < 0 ? rest : rest.slice(0, space);
    const encoded = space < 0 ? '' : rest.slice(space + 1);
    const raw = decodeStdBase64(encoded);
    if (!isValidKeyName(name) || raw === null || raw.length <= KEY_ID_BYTES) {
      throw new NoteError('malformed note: bad signature line');
    }
    const keyId = raw.subarray(0, KEY_ID_BYTES);
    const ident = `${name}+${hex8(keyId)}`;
    const known = (verifiers ?? []).filter((v) => v.name === name && v.keyId.equals(keyId));
    if (known.length === 0) continue; // someone else's key (a witness, a rotated-out key): the spec says ignore
    if (known.length > 1) throw new NoteError(`ambiguous key ${ident}`);
    // Like the reference: the first signature by a key decides, repeats are skipped.
    if (checked.has(ident)) continue;
    checked.add(ident);
    if (!known[0].verify(message, raw.subarray(KEY_ID_BYTES))) throw new NoteError(`invalid signature for key ${ident}`);
    verifiedBy.push(name);
  }
  if (verifiedBy.length === 0) throw new NoteError('note has no verifiable signatures');
  return { text, verifiedBy };
}

export interface TreeCheckpoint {
  origin: string;
  size: number;
  rootHash: Buffer;
  extensions: string[];
}

function isValidCheckpointLine(line: string): boolean {
  return typeof line === 'string' && line !== '' && !line.includes('\n') && isValidNoteText(line);
}

/** tlog-checkpoint body: origin line, decimal size, std base64 root hash, then extension lines; ends with "\n". */
export function formatCheckpoint(cp: TreeCheckpoint): string {
  if (!isValidCheckpointLine(cp.origin)) throw new NoteError('malformed checkpoint origin');
  if (!Number.isSafeInteger(cp.size) || cp.size < 0) throw new NoteError('malformed checkpoint size');
  if (!Buffer.isBuffer(cp.rootHash) || cp.rootHash.length !== CHECKPOINT_HASH_BYTES) {
    throw new NoteError('malformed checkpoint root hash');
  }
  if (!Array.isArray(cp.extensions) || !cp.extensions.every(isValidCheckpointLine)) {
    throw new NoteError('malformed checkpoint extension line');
  }
  return [cp.origin, String(cp.size), cp.rootHash.toString('base64'), ...cp.extensions].map((l) => `${l}\n`).join('');
}

/** Strict parse (no leading zeros in size, 32-byte hash, non-empty origin, size a safe integer); throws NoteError. */
export function parseCheckpoint(text: string): TreeCheckpoint {
  if (typeof text !== 'string' || !text.endsWith('\n') || !isValidNoteText(text)) throw new NoteError('malformed checkpoint');
  const lines = text.slice(0, -1).split('\n');
  if (lines.length < 3) throw new NoteError('malformed checkpoint: fewer than three lines');
  if (lines.some((l) => l === '')) throw new NoteError('malformed checkpoint: empty line');
  const [origin, sizeLine, hashLine, ...extensions] = lines;
  if (!/^(0|[1-9][0-9]*)$/.test(sizeLine)) throw new NoteError('malformed checkpoint size');
  const size = Number(sizeLine);
  if (!Number.isSafeInteger(size)) throw new NoteError('checkpoint size too large');
  const rootHash = decodeStdBase64(hashLine);
  if (rootHash === null || rootHash.length !== CHECKPOINT_HASH_BYTES) throw new NoteError('malformed checkpoint root hash');
  return { origin, size, rootHash, extensions };
}
