import type { SystemKeys } from '../crypto/system-keys.js';
import type { TreeHeadOpener, TreeHeadSigner } from './audit-tree-dal.js';
import {
  ed25519KeyFromSeed,
  formatCheckpoint,
  NoteError,
  noteKeyId,
  openNote,
  parseCheckpoint,
  parseVerifierKey,
  signNote,
  verifierKeyString,
  type NoteVerifier,
} from './signed-note.js';

/** The audit log's signing identity: what witnesses and auditors pin. */
export interface AuditLogSigner {
  /** The tlog-checkpoint origin line, also the signed-note key name. */
  origin: string;
  /** 8 hex digits: the signed-note key id. */
  keyId: string;
  /** `<origin>+<keyid>+<base64 public key>`, the C2SP note verifier key. */
  verifierKey: string;
  verifier: NoteVerifier;
  sign: TreeHeadSigner;
  /** Opens a signed head of this log (signature, origin); throws NoteError otherwise. */
  open: TreeHeadOpener;
}

/**
 * Rekor-style extension line: the time the head was signed, in Unix nanoseconds. The checkpoint
 * format has no time field of its own; extension lines are where logs put one.
 */
export const TIMESTAMP_PREFIX = 'Timestamp: ';

export function timestampLine(ms: number): string {
  return `${TIMESTAMP_PREFIX}${BigInt(Math.floor(ms)) * 1_000_000n}`;
}

/** The signing time (ms) from a checkpoint's extension lines, when it has one. */
export function checkpointTime(extensions: string[]): number | undefined {
  const line = extensions.find((e) => e.startsWith(TIMESTAMP_PREFIX));
  if (!line || !/^\d{1,25}$/.test(line.slice(TIMESTAMP_PREFIX.length))) return undefined;
  return Number(BigInt(line.slice(TIMESTAMP_PREFIX.length)) / 1_000_000n);
}

/**
 * The tree-head key: an Ed25519 key whose 32-byte seed is a system key, random at first use,
 * wrapped by the root key in the database like the others, so every instance signs with the same
 * key and root-key rotation rewraps it with the rest.
 */
export async function loadAuditLogSigner(systemKeys: SystemKeys, origin: string): Promise<AuditLogSigner> {
  const { privateKey, publicRaw } = ed25519KeyFromSeed(await systemKeys.get('audit-log-signing'));
  const verifierKey = verifierKeyString(origin, publicRaw);
  const verifier = parseVerifierKey(verifierKey);
  return {
    origin,
    keyId: noteKeyId(origin, publicRaw).toString('hex'),
    verifierKey,
    verifier,
    open: (note) => {
      const cp = parseCheckpoint(openNote(note, [verifier]).text);
      if (cp.origin !== origin) throw new NoteError(`checkpoint origin "${cp.origin}" is not this log's origin`);
      return { treeSize: cp.size, rootHash: cp.rootHash.toString('hex') };
    },
    sign: (treeSize, rootHash, now) => ({
      note: signNote(formatCheckpoint({ origin, size: treeSize, rootHash, extensions: [timestampLine(now)] }), origin, privateKey),
      keyId: noteKeyId(origin, publicRaw).toString('hex'),
    }),
  };
}

/**
 * The log's origin. It is fixed when the log's first head is signed: heads are signed under it,
 * so a log whose name changed would no longer verify. The configured origin (or, for a new log,
 * the default from the issuer) names a new log; an existing log keeps the origin it has, and a
 * configured origin that contradicts it is refused rather than silently starting a second log.
 */
export function resolveAuditOrigin(options: { configured?: string; stored?: string; issuer: string }): { origin: string } | { conflict: string } {
  if (options.stored && options.configured && options.configured !== options.stored) {
    return { conflict: `KEYWARDEN_AUDIT_ORIGIN is "${options.configured}", but the audit log in this database was created as "${options.stored}"; a log's origin cannot change (unset the variable, or set it to the log's origin)` };
  }
  return { origin: options.stored ?? options.configured ?? defaultAuditOrigin(options.issuer) };
}

/** A default origin unique to a deployment: the issuer's host and path, without the scheme (C2SP origin lines are schema-less URLs). */
export function defaultAuditOrigin(issuer: string): string {
  const url = new URL(issuer);
  return `${url.host}${url.pathname.replace(/\/$/, '')}/audit-log`;
}
