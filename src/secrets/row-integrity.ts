import crypto from 'node:crypto';
import type { SystemKeys } from '../crypto/system-keys.js';
import { IntegrityFailureError } from '../core/errors.js';

/**
 * The columns of a row that decide who gets which bytes. Anything else on these rows
 * (descriptions, labels, timestamps) is presentation and is not bound.
 */
export interface SecretRowState {
  id: number | string;
  name: string;
  currentVersion: number | string;
  latestVersion: number | string;
  deletedAt: number | string | null;
}
export interface GrantRowState {
  groupId: number | string;
  secretId: number | string;
}
/** A client's membership in a group: the pair is the whole of what it grants. */
export interface MembershipRowState {
  clientId: number | string;
  groupId: number | string;
}
/** What a client may do beyond its own reads (migration 009): act for others, ask the release gate. */
export interface DelegationRowState {
  clientId: number | string;
  name: string;
  /** acts_for as stored: the JSON text of the names (bound byte for byte, never re-serialised). */
  actsFor: string;
  releaseGate: boolean;
}
export interface VersionRowState {
  secretId: number | string;
  version: number | string;
  checksum: string;
  size: number | string;
}

export interface IntegrityViolation {
  table: 'secrets' | 'access_grants' | 'secret_versions' | 'memberships' | 'clients';
  /** Which row, e.g. "secret 12 (db-password)", "grant group 3 → secret 12", "membership client 4 → group 3". */
  row: string;
  reason: 'missing' | 'mismatch';
}

/** The same failure the envelope reports for a ciphertext that does not authenticate. */
export function integrityFailure(detail: string): IntegrityFailureError {
  return new IntegrityFailureError(detail);
}

const MAC_HEX = /^[0-9a-f]{64}$/;

/** The bound columns of a raw secrets row. */
export function secretRowState(row: { id: number; name: string; current_version: number; latest_version: number; deleted_at?: number | string | null }): SecretRowState {
  return { id: row.id, name: row.name, currentVersion: row.current_version, latestVersion: row.latest_version, deletedAt: row.deleted_at ?? null };
}
const num = (v: number | string) => String(Number(v));

/**
 * HMAC-SHA256 over the security-relevant columns of secrets, access_grants, secret_versions and
 * memberships rows, kept in their `row_mac` column, and over a client's delegation (acts_for,
 * release_gate) in clients.delegation_mac. Someone who can write the database but does not hold
 * the root key can neither forge a MAC nor move one to another row (the row's own key columns are
 * inside it), so a silent rollback of `current_version`, an undelete, an edited checksum, or a
 * grant, membership or delegation added by hand is found on the next read and by the background
 * scan.
 *
 * The key is derived (HKDF) from the broker's checksum system key, which every instance unwraps
 * with the root key at startup; it never changes with root key rotation.
 */
export class RowIntegrity {
  /**
   * MACs already computed, by the exact message they cover. A MAC is a pure function of its
   * message, so a hit is the same answer as computing it again: every read still compares the
   * stored MAC with the MAC of the row as read, it just does not hash the same bytes twice.
   */
  private readonly computed = new Map<string, string>();
  private static readonly MAX_COMPUTED = 100_000;

  private constructor(private readonly key: Buffer) {}

  static async load(systemKeys: SystemKeys): Promise<RowIntegrity> {
    const base = await systemKeys.get('checksum');
    return new RowIntegrity(Buffer.from(crypto.hkdfSync('sha256', base, Buffer.alloc(0), 'keywarden:row-mac:v1', 32)));
  }

  private mac(kind: string, fields: Array<string | null>): string {
    const message = `${kind}\n${JSON.stringify(fields)}`;
    let mac = this.computed.get(message);
    if (mac === undefined) {
      mac = crypto.createHmac('sha256', this.key).update(message).digest('hex');
      if (this.computed.size >= RowIntegrity.MAX_COMPUTED) this.computed.clear();
      this.computed.set(message, mac);
    }
    return mac;
  }

  secretMac(s: SecretRowState): string {
    return this.mac('secret', [num(s.id), s.name, num(s.currentVersion), num(s.latestVersion), s.deletedAt === null || s.deletedAt === undefined ? null : num(s.deletedAt)]);
  }

  grantMac(g: GrantRowState): string {
    return this.mac('grant', [num(g.groupId), num(g.secretId)]);
  }

  membershipMac(m: MembershipRowState): string {
    return this.mac('membership', [num(m.clientId), num(m.groupId)]);
  }

  delegationMac(d: DelegationRowState): string {
    return this.mac('delegation', [num(d.clientId), d.name, d.actsFor, d.releaseGate ? '1' : '0']);
  }

  versionMac(v: VersionRowState): string {
    return this.mac('version', [num(v.secretId), num(v.version), v.checksum, num(v.size)]);
  }

  /** undefined when `stored` is the MAC of `expected`; otherwise why not. */
  private judge(stored: string | null | undefined, expected: string): IntegrityViolation['reason'] | undefined {
    if (typeof stored !== 'string' || !MAC_HEX.test(stored)) return 'missing';
    // constant time: whoever can write `stored` (the threat this guards against) might time reads
    return crypto.timingSafeEqual(Buffer.from(stored, 'hex'), Buffer.from(expected, 'hex')) ? undefined : 'mismatch';
  }

  checkSecret(s: SecretRowState, stored: string | null | undefined) {
    return this.judge(stored, this.secretMac(s));
  }

  checkGrant(g: GrantRowState, stored: string | null | undefined) {
    return this.judge(stored, this.grantMac(g));
  }

  checkMembership(m: MembershipRowState, stored: string | null | undefined) {
    return this.judge(stored, this.membershipMac(m));
  }

  checkDelegation(d: DelegationRowState, stored: string | null | undefined) {
    return this.judge(stored, this.delegationMac(d));
  }

  checkVersion(v: VersionRowState, stored: string | null | undefined) {
    return this.judge(stored, this.versionMac(v));
  }

  /**
   * Throws the integrity problem when the rows a read depends on do not carry valid MACs.
   * Microseconds: four HMACs over a few short fields, no I/O, so it sits on the delivery path.
   * `newestVersion` is required: every read that serves a value must also refuse a replayed
   * older row state (with its then valid MAC), which only the highest stored version reveals.
   */
  assertReadable(found: {
    secret: { id: number; name: string; currentVersion: number; latestVersion: number; rowMac?: string | null };
    version: { secretId: number; version: number; checksum: string; size: number; rowMac?: string | null };
    grant?: { groupId: number; rowMac: string | null };
    /** The reading client's membership in the grant's group (client reads). */
    membership?: { clientId: number; groupId: number; rowMac: string | null };
    /** The highest stored version: a replayed older row state points behind it. */
    newestVersion: number;
  }): void {
    const { secret, version, grant, membership, newestVersion } = found;
    const failed =
      (this.checkSecret({ ...secret, deletedAt: null }, secret.rowMac) && 'the secret row (its current version or deletion state)') ||
      (Number(newestVersion) !== Number(secret.latestVersion) && 'the secret row (it is older than its newest version)') ||
      (this.checkVersion(version, version.rowMac) && 'the version row (its checksum or size)') ||
      (grant && this.checkGrant({ groupId: grant.groupId, secretId: secret.id }, grant.rowMac) && 'the access grant') ||
      (membership && this.checkMembership(membership, membership.rowMac) && 'the group membership of the reading client');
    if (failed) throw integrityFailure(`${failed} of secret ${secret.name} was changed outside the broker; it is not delivered until an operator repairs it`);
  }
}
