/**
 * Parsing and structural validation of TUF metadata documents served by notary,
 * plus hash/length checks of raw bytes against snapshot/timestamp meta.
 */
import { createHash } from 'node:crypto';
import { decodeBase64Strict } from './tuf-keys.js';
import {
  NotaryVerificationError,
  type TufDelegationRole,
  type TufEnvelope,
  type TufFileMeta,
  type TufRoleKeysJson,
  type TufRootSigned,
  type TufSignatureJson,
  type TufSnapshotSigned,
  type TufTargetsSigned,
  type TufTimestampSigned,
} from './notary-types.js';

function bad(reason: string): never {
  throw new NotaryVerificationError('bad_metadata', reason);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

const RFC3339_RE = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$/;

/** Parse an RFC 3339 timestamp (Go's time.Time JSON format, with up to nanosecond precision). */
export function parseRfc3339(text: unknown): Date | undefined {
  if (typeof text !== 'string') return undefined;
  const m = RFC3339_RE.exec(text);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, zone] = m;
  const ms = frac ? Number((frac + '00').slice(0, 3)) : 0;
  let t = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), ms);
  if (Number(mo) < 1 || Number(mo) > 12 || Number(d) < 1 || Number(d) > 31 || Number(h) > 23 || Number(mi) > 59 || Number(s) > 60) {
    return undefined;
  }
  if (zone !== 'Z' && zone !== 'z') {
    const sign = zone[0] === '-' ? -1 : 1;
    const [zh, zm] = zone.slice(1).split(':').map(Number);
    t -= sign * (zh * 60 + zm) * 60_000;
  }
  const date = new Date(t);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

function checkFileMeta(v: unknown, where: string): TufFileMeta {
  if (!isObject(v)) bad(`${where}: file meta is not an object`);
  if (!isObject(v.hashes)) bad(`${where}: file meta has no hashes`);
  for (const [alg, h] of Object.entries(v.hashes)) {
    if (typeof h !== 'string') bad(`${where}: hash ${alg} is not a string`);
  }
  if (!isNonNegInt(v.length)) bad(`${where}: length is not a non-negative integer`);
  if (v.version !== undefined && !isNonNegInt(v.version)) bad(`${where}: version is not an integer`);
  return v as unknown as TufFileMeta;
}

function checkRoleKeys(v: unknown, where: string): TufRoleKeysJson {
  if (!isObject(v)) bad(`${where} is not an object`);
  if (!Array.isArray(v.keyids) || !v.keyids.every((k) => typeof k === 'string')) bad(`${where}.keyids is not a list of strings`);
  if (!isNonNegInt(v.threshold) || v.threshold < 1) bad(`${where}.threshold must be an integer >= 1`);
  return v as unknown as TufRoleKeysJson;
}

function checkKeysObject(v: unknown, where: string): void {
  if (!isObject(v)) bad(`${where} is not an object`);
  for (const [id, k] of Object.entries(v)) {
    if (!isObject(k)) bad(`${where}.${id} is not an object`);
  }
}

const EXPECTED_TYPE: Record<string, string> = {
  root: 'Root',
  timestamp: 'Timestamp',
  snapshot: 'Snapshot',
};

export interface ParsedEnvelope<T> extends TufEnvelope<T> {
  expires: Date;
  version: number;
}

/** Parse the raw bytes of a role document and validate its structure. */
export function parseRoleDocument(role: string, raw: Buffer): ParsedEnvelope<unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(raw.toString('utf8'));
  } catch (err) {
    bad(`${role}.json is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(doc) || !isObject(doc.signed)) bad(`${role}.json has no "signed" object`);
  if (!Array.isArray(doc.signatures)) bad(`${role}.json has no "signatures" list`);
  const signatures: TufSignatureJson[] = [];
  for (const s of doc.signatures) {
    if (!isObject(s) || typeof s.keyid !== 'string' || typeof s.method !== 'string' || typeof s.sig !== 'string') {
      bad(`${role}.json has a malformed signature entry`);
    }
    signatures.push({ keyid: s.keyid, method: s.method, sig: s.sig });
  }
  const signed = doc.signed;
  const expectedType = EXPECTED_TYPE[role] ?? 'Targets';
  if (typeof signed._type !== 'string' || signed._type.toLowerCase() !== expectedType.toLowerCase()) {
    bad(`${role}.json has _type ${JSON.stringify(signed._type)}, expected ${expectedType}`);
  }
  const expires = parseRfc3339(signed.expires);
  if (!expires) bad(`${role}.json has an invalid expires value`);
  if (!isNonNegInt(signed.version)) bad(`${role}.json has an invalid version`);

  switch (expectedType) {
    case 'Root': {
      checkKeysObject(signed.keys, 'root.json keys');
      if (!isObject(signed.roles)) bad('root.json has no roles');
      for (const r of ['root', 'targets', 'snapshot', 'timestamp']) {
        checkRoleKeys((signed.roles as Record<string, unknown>)[r], `root.json roles.${r}`);
      }
      break;
    }
    case 'Timestamp':
    case 'Snapshot': {
      if (!isObject(signed.meta)) bad(`${role}.json has no meta`);
      for (const [name, meta] of Object.entries(signed.meta)) checkFileMeta(meta, `${role}.json meta.${name}`);
      break;
    }
    case 'Targets': {
      if (!isObject(signed.targets)) bad(`${role}.json has no targets object`);
      for (const [name, meta] of Object.entries(signed.targets)) checkFileMeta(meta, `${role}.json target ${JSON.stringify(name)}`);
      if (signed.delegations !== undefined && signed.delegations !== null) {
        const d = signed.delegations;
        if (!isObject(d)) bad(`${role}.json delegations is not an object`);
        checkKeysObject(d.keys ?? {}, `${role}.json delegations.keys`);
        if (d.roles !== undefined && d.roles !== null && !Array.isArray(d.roles)) bad(`${role}.json delegations.roles is not a list`);
        for (const r of (d.roles as unknown[] | null | undefined) ?? []) {
          const rr = checkRoleKeys(r, `${role}.json delegation role`) as unknown as Record<string, unknown>;
          if (typeof rr.name !== 'string') bad(`${role}.json delegation role has no name`);
          if (rr.paths !== undefined && rr.paths !== null && (!Array.isArray(rr.paths) || !rr.paths.every((p) => typeof p === 'string'))) {
            bad(`${role}.json delegation ${rr.name} has malformed paths`);
          }
          if (
            rr.path_hash_prefixes !== undefined &&
            rr.path_hash_prefixes !== null &&
            (!Array.isArray(rr.path_hash_prefixes) || !rr.path_hash_prefixes.every((p) => typeof p === 'string'))
          ) {
            bad(`${role}.json delegation ${rr.name} has malformed path_hash_prefixes`);
          }
        }
      }
      break;
    }
  }
  return { raw, signed, signedValue: signed, signatures, expires, version: signed.version as number };
}

export const asRoot = (e: ParsedEnvelope<unknown>) => e as ParsedEnvelope<TufRootSigned>;
export const asTimestamp = (e: ParsedEnvelope<unknown>) => e as ParsedEnvelope<TufTimestampSigned>;
export const asSnapshot = (e: ParsedEnvelope<unknown>) => e as ParsedEnvelope<TufSnapshotSigned>;
export const asTargets = (e: ParsedEnvelope<unknown>) => e as ParsedEnvelope<TufTargetsSigned>;

export function delegationRolesOf(t: TufTargetsSigned): TufDelegationRole[] {
  return t.delegations?.roles ?? [];
}

const HASH_ALGS: Record<string, { node: string; size: number }> = {
  sha256: { node: 'sha256', size: 32 },
  sha512: { node: 'sha512', size: 64 },
};

/**
 * Compare raw bytes with file meta: every known hash present must match, at least one
 * known hash must be present, and the length must match. Returns a problem or undefined.
 */
export function checkRawAgainstMeta(raw: Buffer, meta: TufFileMeta): string | undefined {
  let checked = 0;
  for (const [alg, b64] of Object.entries(meta.hashes)) {
    const spec = HASH_ALGS[alg];
    if (!spec) continue;
    const expected = decodeBase64Strict(b64);
    if (!expected || expected.length !== spec.size) return `${alg} hash is malformed`;
    const actual = createHash(spec.node).update(raw).digest();
    if (!actual.equals(expected)) return `${alg} hash does not match`;
    checked++;
  }
  if (checked === 0) return 'no supported hash (sha256/sha512) is listed';
  if (meta.length > 0 && raw.length !== meta.length) return `length is ${raw.length} bytes, expected ${meta.length}`;
  return undefined;
}
