import crypto from 'node:crypto';
import type { Knex } from 'knex';
import type { SystemKeys } from '../crypto/system-keys.js';
import { ProblemError } from '../http/problem.js';

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
export interface VersionRowState {
  secretId: number | string;
  version: number | string;
  checksum: string;
  size: number | string;
}

export interface IntegrityViolation {
  table: 'secrets' | 'access_grants' | 'secret_versions';
  /** Which row, e.g. "secret 12 (db-password)", "grant group 3 → secret 12". */
  row: string;
  reason: 'missing' | 'mismatch';
}

/** The same failure the envelope reports for a ciphertext that does not authenticate. */
export function integrityFailure(detail: string): ProblemError {
  return new ProblemError(503, 'integrity_failure', 'Stored secret failed its integrity check', detail);
}

const MAC_HEX = /^[0-9a-f]{64}$/;

/** The bound columns of a raw secrets row. */
export function secretRowState(row: { id: number; name: string; current_version: number; latest_version: number; deleted_at?: number | string | null }): SecretRowState {
  return { id: row.id, name: row.name, currentVersion: row.current_version, latestVersion: row.latest_version, deletedAt: row.deleted_at ?? null };
}
const num = (v: number | string) => String(Number(v));

/**
 * HMAC-SHA256 over the security-relevant columns of secrets, access_grants and secret_versions
 * rows, kept in their `row_mac` column. Someone who can write the database but does not hold the
 * root key can neither forge a MAC nor move one to another row (the row's own key columns are
 * inside it), so a silent rollback of `current_version`, an undelete, an edited checksum or a
 * grant row inserted by hand is found on the next read and by the background scan.
 *
 * The key is derived (HKDF) from the broker's checksum system key, which every instance unwraps
 * with the root key at startup; it never changes with root key rotation.
 */
export class RowIntegrity {
  private constructor(private readonly key: Buffer) {}

  static async load(systemKeys: SystemKeys): Promise<RowIntegrity> {
    const base = await systemKeys.get('checksum');
    return new RowIntegrity(Buffer.from(crypto.hkdfSync('sha256', base, Buffer.alloc(0), 'keywarden:row-mac:v1', 32)));
  }

  private mac(kind: string, fields: Array<string | null>): string {
    return crypto.createHmac('sha256', this.key).update(`${kind}\n${JSON.stringify(fields)}`).digest('hex');
  }

  secretMac(s: SecretRowState): string {
    return this.mac('secret', [num(s.id), s.name, num(s.currentVersion), num(s.latestVersion), s.deletedAt === null || s.deletedAt === undefined ? null : num(s.deletedAt)]);
  }

  grantMac(g: GrantRowState): string {
    return this.mac('grant', [num(g.groupId), num(g.secretId)]);
  }

  versionMac(v: VersionRowState): string {
    return this.mac('version', [num(v.secretId), num(v.version), v.checksum, num(v.size)]);
  }

  /** undefined when `stored` is the MAC of `expected`; otherwise why not. */
  private judge(stored: string | null | undefined, expected: string): IntegrityViolation['reason'] | undefined {
    if (typeof stored !== 'string' || !MAC_HEX.test(stored)) return 'missing';
    return crypto.timingSafeEqual(Buffer.from(stored, 'hex'), Buffer.from(expected, 'hex')) ? undefined : 'mismatch';
  }

  checkSecret(s: SecretRowState, stored: string | null | undefined) {
    return this.judge(stored, this.secretMac(s));
  }

  checkGrant(g: GrantRowState, stored: string | null | undefined) {
    return this.judge(stored, this.grantMac(g));
  }

  checkVersion(v: VersionRowState, stored: string | null | undefined) {
    return this.judge(stored, this.versionMac(v));
  }

  /**
   * Throws the integrity problem when the rows a read depends on do not carry valid MACs.
   * Microseconds: three HMACs over a few short fields, no I/O, so it sits on the delivery path.
   */
  assertReadable(found: {
    secret: { id: number; name: string; currentVersion: number; latestVersion: number; rowMac?: string | null };
    version: { secretId: number; version: number; checksum: string; size: number; rowMac?: string | null };
    grant?: { groupId: number; rowMac: string | null };
    /** The highest stored version: a replayed older row state points behind it. */
    newestVersion?: number;
  }): void {
    const { secret, version, grant, newestVersion } = found;
    const failed =
      (this.checkSecret({ ...secret, deletedAt: null }, secret.rowMac) && 'the secret row (its current version or deletion state)') ||
      (newestVersion !== undefined && Number(newestVersion) !== Number(secret.latestVersion) && 'the secret row (it is older than its newest version)') ||
      (this.checkVersion(version, version.rowMac) && 'the version row (its checksum or size)') ||
      (grant && this.checkGrant({ groupId: grant.groupId, secretId: secret.id }, grant.rowMac) && 'the access grant');
    if (failed) throw integrityFailure(`${failed} of secret ${secret.name} was changed outside the broker; it is not delivered until an operator repairs it`);
  }

  /**
   * One-time MACs for rows that existed before migration 007, in the first start after it.
   * Afterwards a row without a MAC is a forgery: state row says the backfill ran.
   */
  async backfillOnce(db: Knex, clock: () => number): Promise<number> {
    return db.transaction(async (trx) => {
      const q = trx('row_integrity_state').where({ id: 1 });
      const state = trx.client.dialect === 'postgresql' ? await q.forUpdate().first() : await q.first();
      if (!state || state.backfilled_at !== null) return 0;
      let rows = 0;
      for (const s of await trx('secrets').whereNull('row_mac').select('id', 'name', 'current_version', 'latest_version', 'deleted_at')) {
        await trx('secrets').where({ id: s.id }).update({ row_mac: this.secretMac(secretRowState(s)) });
        rows++;
      }
      for (const g of await trx('access_grants').whereNull('row_mac').select('group_id', 'secret_id')) {
        await trx('access_grants').where({ group_id: g.group_id, secret_id: g.secret_id }).update({ row_mac: this.grantMac({ groupId: g.group_id, secretId: g.secret_id }) });
        rows++;
      }
      for (const v of await trx('secret_versions').whereNull('row_mac').select('id', 'secret_id', 'version', 'checksum', 'size')) {
        await trx('secret_versions').where({ id: v.id }).update({ row_mac: this.versionMac({ secretId: v.secret_id, version: v.version, checksum: v.checksum, size: v.size }) });
        rows++;
      }
      await trx('row_integrity_state').where({ id: 1 }).update({ backfilled_at: clock(), backfilled_rows: rows });
      return rows;
    });
  }

  /**
   * Checks every bound row, in pages. Also finds a live secret whose current version does not
   * exist. Cost is one indexed pass over three small tables (no decryption, no key provider).
   */
  async scan(db: Knex, page = 1000): Promise<IntegrityViolation[]> {
    const found: IntegrityViolation[] = [];
    const add = (v: IntegrityViolation) => {
      if (found.length < 1000) found.push(v);
    };
    for (let after = 0; ; ) {
      const rows = await db('secrets').where('id', '>', after).orderBy('id').limit(page).select('id', 'name', 'current_version', 'latest_version', 'deleted_at', 'row_mac');
      for (const s of rows) {
        const reason = this.checkSecret(secretRowState(s), s.row_mac);
        if (reason) add({ table: 'secrets', row: `secret ${s.id} (${s.name})`, reason });
      }
      if (rows.length < page) break;
      after = Number(rows[rows.length - 1].id);
    }
    for (let after: [number, number] = [0, 0]; ; ) {
      const [g0, s0] = after;
      const rows = await db('access_grants')
        .where((w) => w.where('group_id', '>', g0).orWhere((x) => x.where('group_id', g0).andWhere('secret_id', '>', s0)))
        .orderBy([{ column: 'group_id' }, { column: 'secret_id' }])
        .limit(page)
        .select('group_id', 'secret_id', 'row_mac');
      for (const g of rows) {
        const reason = this.checkGrant({ groupId: g.group_id, secretId: g.secret_id }, g.row_mac);
        if (reason) add({ table: 'access_grants', row: `grant group ${g.group_id} → secret ${g.secret_id}`, reason });
      }
      if (rows.length < page) break;
      const last = rows[rows.length - 1];
      after = [Number(last.group_id), Number(last.secret_id)];
    }
    for (let after = 0; ; ) {
      const rows = await db('secret_versions').where('id', '>', after).orderBy('id').limit(page).select('id', 'secret_id', 'version', 'checksum', 'size', 'row_mac');
      for (const v of rows) {
        const reason = this.checkVersion({ secretId: v.secret_id, version: v.version, checksum: v.checksum, size: v.size }, v.row_mac);
        if (reason) add({ table: 'secret_versions', row: `version ${v.version} of secret ${v.secret_id}`, reason });
      }
      if (rows.length < page) break;
      after = Number(rows[rows.length - 1].id);
    }
    // a replayed older state of a secret row (with its then valid MAC) lags behind its versions
    const behind = await db('secrets as s')
      .join(db('secret_versions').groupBy('secret_id').select('secret_id').max('version as newest').as('n'), 'n.secret_id', 's.id')
      .whereRaw('n.newest <> s.latest_version')
      .select('s.id', 's.name');
    for (const s of behind) add({ table: 'secrets', row: `secret ${s.id} (${s.name}): older than its newest version`, reason: 'mismatch' });
    const dangling = await db('secrets as s')
      .leftJoin('secret_versions as v', function () {
        this.on('v.secret_id', '=', 's.id').andOn('v.version', '=', 's.current_version');
      })
      .whereNull('s.deleted_at')
      .whereNull('v.id')
      .select('s.id', 's.name');
    for (const s of dangling) add({ table: 'secrets', row: `secret ${s.id} (${s.name}): its current version does not exist`, reason: 'mismatch' });
    return found;
  }
}
