/**
 * Signature verification for TUF roles, following notary's verifiers:
 * - `ecdsa`: raw r||s (IEEE P1363), always over SHA-256, length 2*ceil(bits/8);
 * - `eddsa`: ed25519, 64-byte signatures;
 * - `rsapss`: RSASSA-PSS with SHA-256 and salt length 32 (= digest length);
 * - `rsapkcs1v15`: RSASSA-PKCS1-v1_5 with SHA-256;
 * - `pycrypto-pkcs#1 pss`: PSS as above, only for `rsa` keys.
 * RSA keys must be at least 2048 bits.
 */
import { constants, verify as cryptoVerify } from 'node:crypto';
import { canonicalJsonBytes } from './canonical-json.js';
import { certificateProblem, decodeBase64Strict, type ParsedTufKey } from './tuf-keys.js';
import type { TufSignatureJson } from './notary-types.js';

const CURVE_BITS: Record<string, number> = {
  prime256v1: 256,
  'P-256': 256,
  secp384r1: 384,
  'P-384': 384,
  secp521r1: 521,
  'P-521': 521,
};

/** Verify one signature over `msg`. Never throws; returns false for anything invalid. */
export function verifySignature(key: ParsedTufKey, method: string, sig: Buffer, msg: Buffer): boolean {
  try {
    const m = method.toLowerCase();
    switch (m) {
      case 'ecdsa': {
        if (key.keytype !== 'ecdsa' && key.keytype !== 'ecdsa-x509') return false;
        const curve = key.publicKey.asymmetricKeyDetails?.namedCurve ?? '';
        const bits = CURVE_BITS[curve];
        if (!bits || sig.length !== 2 * Math.ceil(bits / 8)) return false;
        return cryptoVerify('sha256', msg, { key: key.publicKey, dsaEncoding: 'ieee-p1363' }, sig);
      }
      case 'eddsa':
        if (key.keytype !== 'ed25519' || sig.length !== 64) return false;
        return cryptoVerify(null, msg, key.publicKey, sig);
      case 'rsapss':
      case 'pycrypto-pkcs#1 pss':
        if (m === 'pycrypto-pkcs#1 pss' ? key.keytype !== 'rsa' : key.keytype !== 'rsa' && key.keytype !== 'rsa-x509') {
          return false;
        }
        if (sig.length < 256) return false;
        return cryptoVerify(
          'sha256',
          msg,
          { key: key.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
          sig,
        );
      case 'rsapkcs1v15':
        if (key.keytype !== 'rsa' && key.keytype !== 'rsa-x509') return false;
        if (sig.length < 256) return false;
        return cryptoVerify('sha256', msg, { key: key.publicKey, padding: constants.RSA_PKCS1_PADDING }, sig);
      default:
        return false;
    }
  } catch {
    return false;
  }
}

export interface RoleVerificationInput {
  role: string;
  /** The generic `signed` value; it is canonicalised before verification. */
  signedValue: unknown;
  signatures: TufSignatureJson[];
  /** Keys available to the role, by the id the metadata uses; a string is a parse error for that key. */
  keys: Map<string, ParsedTufKey | string>;
  keyids: string[];
  threshold: number;
  now: Date;
}

export interface RoleVerificationResult {
  /** Distinct key ids with a valid signature. */
  validKeyIds: string[];
  threshold: number;
  /** Why individual signatures / keys did not count. */
  problems: string[];
  met: boolean;
}

/**
 * Count valid signatures of distinct role keys. May throw CanonicalJsonError when `signed`
 * cannot be canonicalised (callers map that to bad metadata).
 */
export function verifyRoleSignatures(input: RoleVerificationInput): RoleVerificationResult {
  const msg = canonicalJsonBytes(input.signedValue);
  const allowed = new Set(input.keyids);
  const valid = new Set<string>();
  const problems: string[] = [];
  for (const s of input.signatures) {
    if (!allowed.has(s.keyid) || valid.has(s.keyid)) continue;
    const key = input.keys.get(s.keyid);
    if (key === undefined) {
      problems.push(`key ${s.keyid.slice(0, 12)} of role ${input.role} is not defined`);
      continue;
    }
    if (typeof key === 'string') {
      problems.push(`key ${s.keyid.slice(0, 12)}: ${key}`);
      continue;
    }
    if (key.id !== s.keyid) {
      problems.push(`key id ${s.keyid.slice(0, 12)} does not match its key material (${key.id.slice(0, 12)})`);
      continue;
    }
    const certIssue = certificateProblem(key, input.now);
    if (certIssue) {
      problems.push(certIssue);
      continue;
    }
    const sig = decodeBase64Strict(s.sig);
    if (!sig || !verifySignature(key, s.method, sig, msg)) {
      problems.push(`invalid ${s.method} signature by key ${s.keyid.slice(0, 12)}`);
      continue;
    }
    valid.add(s.keyid);
  }
  return {
    validKeyIds: [...valid],
    threshold: input.threshold,
    problems,
    met: input.threshold >= 1 && valid.size >= input.threshold,
  };
}
