/**
 * Shared types for the Notary v1 / Docker Content Trust (TUF) verifier.
 */

/** Stable machine-readable result codes. */
export type NotaryResultCode =
  | 'ok'
  | 'root_untrusted'
  | 'signature_invalid'
  | 'threshold_not_met'
  | 'expired'
  | 'hash_mismatch'
  | 'tag_missing'
  | 'digest_mismatch'
  | 'ambiguous_digest'
  | 'delegation_missing'
  | 'unreachable'
  | 'bad_metadata'
  | 'version_rollback';

export interface NotaryCheckInput {
  /** Notary server base URL, e.g. http://127.0.0.1:4443 */
  server: string;
  /** Globally unique name, e.g. 127.0.0.1:5000/team/app */
  gun: string;
  /** Tag to look up. */
  tag: string;
  /** 'sha256:<hex>' - when given, a mismatch is a failure. */
  expectedDigest?: string;
  /** Pinned root keys: PEM public keys, PEM certificates, base64 of those (as in root.json keyval.public), or hex key ids. */
  rootKeys: string[];
  /** Required delegation roles, e.g. ['targets/releases'] ('releases' is accepted as shorthand). */
  delegations?: string[];
  /** How many of the required delegations must contain the tag (default: all of them). */
  threshold?: number;
  /** Test clock; default new Date(). */
  now?: Date;
  /** Per request timeout, default 5000 ms. */
  timeoutMs?: number;
  /** Default: global fetch. */
  fetchImpl?: typeof fetch;
  /** Credentials for the registry token flow (sent to the token realm only). */
  credentials?: { username: string; password: string };
  /**
   * Optional anti-rollback floor: minimum acceptable `signed.version` per role
   * (e.g. versions remembered from a previous successful check).
   */
  minVersions?: Record<string, number>;
}

export interface NotaryCheckResult {
  ok: boolean;
  /** 'sha256:<hex>' found for the tag. */
  digest?: string;
  /** Human-readable reason. */
  reason: string;
  /** Stable machine code. */
  code: NotaryResultCode;
  /** Earliest expiry among the metadata used (for decision caching). */
  expires?: Date;
  /** Roles that were consulted. */
  roles?: string[];
  /** `signed.version` of every role that was verified (usable as `minVersions` next time). */
  versions?: Record<string, number>;
}

/** Internal error carrying a result code; never escapes verifyNotaryTrust. */
export class NotaryVerificationError extends Error {
  readonly code: NotaryResultCode;
  constructor(code: NotaryResultCode, reason: string) {
    super(reason);
    this.name = 'NotaryVerificationError';
    this.code = code;
  }
}

export type TufKeyType = 'ecdsa' | 'ecdsa-x509' | 'rsa' | 'rsa-x509' | 'ed25519';

/** A key as it appears in root.json / targets.json delegations. */
export interface TufKeyJson {
  keytype: string;
  keyval: { public: string; private?: string | null };
}

export interface TufSignatureJson {
  keyid: string;
  method: string;
  sig: string;
}

export interface TufRoleKeysJson {
  keyids: string[];
  threshold: number;
}

export interface TufFileMeta {
  hashes: Record<string, string>;
  length: number;
  version?: number;
}

export interface TufSignedCommon {
  _type: string;
  expires: string;
  version: number;
}

export interface TufRootSigned extends TufSignedCommon {
  keys: Record<string, TufKeyJson>;
  roles: Record<string, TufRoleKeysJson>;
  consistent_snapshot?: boolean;
}

export interface TufTimestampSigned extends TufSignedCommon {
  meta: Record<string, TufFileMeta>;
}

export type TufSnapshotSigned = TufTimestampSigned;

export interface TufDelegationRole extends TufRoleKeysJson {
  name: string;
  paths?: string[];
  path_hash_prefixes?: string[];
}

export interface TufTargetsSigned extends TufSignedCommon {
  targets: Record<string, TufFileMeta>;
  delegations?: {
    keys: Record<string, TufKeyJson>;
    roles: TufDelegationRole[];
  };
}

/** A parsed metadata document together with the raw bytes it came from. */
export interface TufEnvelope<T> {
  raw: Buffer;
  signed: T;
  /** The `signed` value exactly as parsed (generic), used for canonicalisation. */
  signedValue: unknown;
  signatures: TufSignatureJson[];
}
