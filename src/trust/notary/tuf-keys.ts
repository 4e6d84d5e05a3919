/**
 * TUF / notary key handling: key ids, parsing of `ecdsa`, `ecdsa-x509`, `rsa`,
 * `rsa-x509` and `ed25519` keys into node KeyObjects, and parsing of pinned root keys.
 */
import { createHash, createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import { canonicalJsonBytes } from './canonical-json.js';
import type { TufKeyJson, TufKeyType } from './notary-types.js';

export const SUPPORTED_KEY_TYPES: readonly TufKeyType[] = ['ecdsa', 'ecdsa-x509', 'rsa', 'rsa-x509', 'ed25519'];
const MIN_RSA_BITS = 2048;

export interface ParsedTufKey {
  /** Key id computed from the key material (sha256 of the canonical key object). */
  id: string;
  /** Notary's "canonical" key id: for x509 kinds, the id of the bare public key (what `notary key list` shows). */
  canonicalId: string;
  keytype: TufKeyType;
  publicKey: KeyObject;
  /** DER SubjectPublicKeyInfo of the public key. */
  spki: Buffer;
  /** For x509 kinds. */
  certificate?: { notBefore: Date; notAfter: Date; subject: string };
}

export class TufKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TufKeyError';
  }
}

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict standard base64 decoding (Buffer.from is lenient and ignores garbage). */
export function decodeBase64Strict(text: string): Buffer | undefined {
  if (typeof text !== 'string' || !BASE64_RE.test(text)) return undefined;
  return Buffer.from(text, 'base64');
}

/** Key id: hex SHA-256 of canonical JSON `{"keytype":T,"keyval":{"private":null,"public":base64(bytes)}}`. */
export function computeKeyId(keytype: string, publicBytes: Buffer): string {
  const canonical = canonicalJsonBytes({
    keytype,
    keyval: { private: null, public: publicBytes.toString('base64') },
  });
  return createHash('sha256').update(canonical).digest('hex');
}

interface PemBlock {
  label: string;
  der: Buffer;
}

/** Decode the first PEM block, tolerating RFC 1421 style headers (`role: root`) as notary writes them. */
export function decodePem(text: string): PemBlock | undefined {
  const m = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/.exec(text);
  if (!m) return undefined;
  const body = m[2]
    .split(/\r?\n/)
    .filter((line) => line.trim() !== '' && !line.includes(':'))
    .map((line) => line.trim())
    .join('');
  const der = decodeBase64Strict(body);
  if (!der || der.length === 0) return undefined;
  return { label: m[1], der };
}

/** Parse a date as printed by node's X509Certificate (`Nov 26 12:35:14 2027 GMT`). */
function parseCertDate(text: string): Date {
  const d = new Date(text);
  if (Number.isNaN(d.getTime())) throw new TufKeyError(`unparseable certificate date ${text}`);
  return d;
}

function spkiOf(key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'spki' }) as Buffer;
}

function checkAlgorithm(key: KeyObject, keytype: TufKeyType): void {
  const t = key.asymmetricKeyType;
  if (keytype.startsWith('ecdsa')) {
    if (t !== 'ec') throw new TufKeyError(`${keytype} key is not an EC key (${t})`);
  } else if (keytype.startsWith('rsa')) {
    if (t !== 'rsa' && t !== 'rsa-pss') throw new TufKeyError(`${keytype} key is not an RSA key (${t})`);
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) throw new TufKeyError(`RSA key is ${bits} bits, at least ${MIN_RSA_BITS} required`);
  } else if (keytype === 'ed25519') {
    if (t !== 'ed25519') throw new TufKeyError(`ed25519 key is ${t}`);
  }
}

function certificateFrom(pemOrDer: Buffer | string): X509Certificate {
  try {
    return new X509Certificate(pemOrDer);
  } catch (err) {
    throw new TufKeyError(`invalid X.509 certificate: ${(err as Error).message}`);
  }
}

/**
 * Parse a key object from TUF metadata. Throws TufKeyError for malformed or unsupported keys.
 * The key id is computed from the key material; callers must compare it with the id the
 * metadata uses for the key (notary rejects keys whose id does not match).
 */
export function parseTufKey(json: unknown): ParsedTufKey {
  if (!json || typeof json !== 'object') throw new TufKeyError('key is not an object');
  const k = json as Partial<TufKeyJson>;
  const keytype = typeof k.keytype === 'string' ? k.keytype.toLowerCase() : '';
  if (!(SUPPORTED_KEY_TYPES as readonly string[]).includes(keytype)) {
    throw new TufKeyError(`unsupported key type ${JSON.stringify(k.keytype)}`);
  }
  const type = keytype as TufKeyType;
  const pubText = k.keyval && typeof k.keyval === 'object' ? k.keyval.public : undefined;
  if (typeof pubText !== 'string') throw new TufKeyError('key has no keyval.public');
  const bytes = decodeBase64Strict(pubText);
  if (!bytes || bytes.length === 0) throw new TufKeyError('keyval.public is not valid base64');
  const id = computeKeyId(type, bytes);

  let publicKey: KeyObject;
  let certificate: ParsedTufKey['certificate'];
  try {
    switch (type) {
      case 'ed25519':
        if (bytes.length !== 32) throw new TufKeyError(`ed25519 public key must be 32 bytes, got ${bytes.length}`);
        publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: bytes.toString('base64url') }, format: 'jwk' });
        break;
      case 'ecdsa':
        publicKey = createPublicKey({ key: bytes, format: 'der', type: 'spki' });
        break;
      case 'rsa': {
        // notary's own rsa keys are DER SPKI; keys written by the python (pycrypto) signer are PEM.
        const pem = bytes.subarray(0, 11).toString('latin1') === '-----BEGIN ' ? decodePem(bytes.toString('utf8')) : undefined;
        publicKey = createPublicKey({ key: pem ? pem.der : bytes, format: 'der', type: 'spki' });
        break;
      }
      case 'ecdsa-x509':
      case 'rsa-x509': {
        const pem = decodePem(bytes.toString('utf8'));
        if (!pem || pem.label !== 'CERTIFICATE') throw new TufKeyError('keyval.public is not a PEM certificate');
        const cert = certificateFrom(pem.der);
        publicKey = cert.publicKey;
        certificate = {
          notBefore: parseCertDate(cert.validFrom),
          notAfter: parseCertDate(cert.validTo),
          subject: cert.subject,
        };
        break;
      }
    }
  } catch (err) {
    if (err instanceof TufKeyError) throw err;
    throw new TufKeyError(`cannot parse ${type} key: ${(err as Error).message}`);
  }
  checkAlgorithm(publicKey, type);
  const spki = spkiOf(publicKey);
  let canonicalId = id;
  if (type === 'ecdsa-x509' || type === 'rsa-x509') {
    canonicalId = computeKeyId(type === 'ecdsa-x509' ? 'ecdsa' : 'rsa', spki);
  }
  return { id, canonicalId, keytype: type, publicKey, spki, certificate };
}

/** Returns a problem description when an x509 key's certificate is not valid at `now`. */
export function certificateProblem(key: ParsedTufKey, now: Date): string | undefined {
  const c = key.certificate;
  if (!c) return undefined;
  if (now.getTime() < c.notBefore.getTime()) {
    return `certificate of key ${key.id.slice(0, 12)} is not valid before ${c.notBefore.toISOString()}`;
  }
  if (now.getTime() > c.notAfter.getTime()) {
    return `certificate of key ${key.id.slice(0, 12)} expired at ${c.notAfter.toISOString()}`;
  }
  return undefined;
}

/** A pinned root key, as configured by the operator. */
export type PinnedKey =
  | { kind: 'id'; id: string; source: string }
  | { kind: 'key'; spki: Buffer; source: string };

const HEX_ID_RE = /^[0-9a-f]{64}$/;

function pinnedFromDer(der: Buffer, label: string | undefined, source: string): PinnedKey {
  if (label === 'CERTIFICATE') {
    return { kind: 'key', spki: spkiOf(certificateFrom(der).publicKey), source };
  }
  if (label === undefined || label === 'PUBLIC KEY') {
    try {
      return { kind: 'key', spki: spkiOf(createPublicKey({ key: der, format: 'der', type: 'spki' })), source };
    } catch (err) {
      if (label !== undefined) throw new TufKeyError(`invalid public key: ${(err as Error).message}`);
    }
    // Bare DER: maybe a certificate.
    return { kind: 'key', spki: spkiOf(certificateFrom(der).publicKey), source };
  }
  if (label === 'RSA PUBLIC KEY') {
    return { kind: 'key', spki: spkiOf(createPublicKey({ key: der, format: 'der', type: 'pkcs1' })), source };
  }
  throw new TufKeyError(`unsupported PEM block ${label}`);
}

/**
 * Parse a pinned root key: a PEM public key, a PEM certificate, base64 of either (as in
 * root.json `keyval.public`), base64 DER SubjectPublicKeyInfo, or a hex key id.
 */
export function parsePinnedKey(input: string): PinnedKey {
  if (typeof input !== 'string') throw new TufKeyError('pinned root key is not a string');
  const text = input.trim();
  const source = text.length > 24 ? `${text.slice(0, 24)}…` : text;
  if (HEX_ID_RE.test(text.toLowerCase())) return { kind: 'id', id: text.toLowerCase(), source };
  if (text.includes('-----BEGIN ')) {
    const pem = decodePem(text);
    if (!pem) throw new TufKeyError('pinned root key: malformed PEM');
    return pinnedFromDer(pem.der, pem.label, source);
  }
  const bytes = decodeBase64Strict(text.replace(/\s+/g, ''));
  if (!bytes || bytes.length === 0) throw new TufKeyError('pinned root key is neither PEM, base64 nor a hex key id');
  const asText = bytes.toString('utf8');
  if (asText.includes('-----BEGIN ')) {
    const pem = decodePem(asText);
    if (!pem) throw new TufKeyError('pinned root key: malformed PEM inside base64');
    return pinnedFromDer(pem.der, pem.label, source);
  }
  return pinnedFromDer(bytes, undefined, source);
}

/** Does a pinned key designate this TUF key? */
export function pinnedKeyMatches(pinned: PinnedKey, key: ParsedTufKey): boolean {
  if (pinned.kind === 'id') return pinned.id === key.id || pinned.id === key.canonicalId;
  return pinned.spki.equals(key.spki);
}
