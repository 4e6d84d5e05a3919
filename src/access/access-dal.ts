import type { Database, Queryable, Transaction } from '../db/database.js';
import { rowToSecret, type SecretRecord, type SecretRow, type SecretVersionRecord, type SecretVersionRow } from '../secrets/secrets-types.js';

type SecretWithVersionRow = SecretRow & Pick<SecretVersionRow, 'checksum' | 'size'>;

/**
 * The one owner of groups, memberships (client ↔ group) and access_grants (group ↔ secret), as
 * Keywhiz's AclDAO is: every statement on those tables is here, the access rule a client's read
 * goes through (findForClient) included. Joins to clients and secrets only read them.
 */

export interface GroupRow {
  id: number;
  name: string;
  description: string;
  /** JSON object */
  labels: string;
  /** JSON array, or null for "no restriction" */
  allowed_audiences: string | null;
  created_by: string;
  created_at: number;
  updated_at: number;
}

export type NewGroupRow = Omit<GroupRow, 'id'>;

/** What PATCH /v1/groups/{name} may change. */
export type GroupChanges = Partial<Pick<GroupRow, 'description' | 'labels' | 'allowed_audiences'>>;

export interface GrantRow {
  group_id: number;
  secret_id: number;
  created_at: number;
  row_mac: string | null;
}

/** A memberships row: the client is in the group. */
export interface MembershipRow {
  client_id: number;
  group_id: number;
  created_at: number;
  /** MAC over (client, group), row-integrity.ts (migration 011). */
  row_mac: string | null;
}

export interface NamedId {
  id: number;
  name: string;
}

/** One (client, secret, granting group) with the client's last read of that secret. */
export interface AccessRowRecord {
  client: string;
  client_id: string;
  enabled: boolean | number;
  secret: string;
  grp: string;
  last_read_at: number | null;
  last_version: number | null;
}

export interface FoundSecret {
  secret: SecretRecord;
  version: SecretVersionRecord;
  /** The (alphabetically first) group through which the client may read it. */
  group: string;
  /** That group's grant row, the client's membership in it and the highest stored version, for the row integrity check. */
  grant: { groupId: number; rowMac: string | null };
  membership: { clientId: number; groupId: number; rowMac: string | null };
  newestVersion: number;
}

/** A live secret the client may list, through one (grant, membership) pair whose MACs the service checks. */
export type ListedSecretRow = SecretRecord & { checksum: string; size: number; grant: { groupId: number; rowMac: string | null }; membership: { clientId: number; groupId: number; rowMac: string | null } };

const FIND_FOR_CLIENT_SQL = `
  SELECT s.*, gr.name AS group_name,
         v.id AS v_id, v.iv AS v_iv, v.ciphertext AS v_ciphertext, v.wrapped_key AS v_wrapped_key,
         v.root_key_version AS v_root_key_version, v.checksum AS v_checksum, v.size AS v_size,
         v.created_by AS v_created_by, v.created_at AS v_created_at, v.row_mac AS v_row_mac,
         g.group_id AS g_group_id, g.row_mac AS g_row_mac, m.row_mac AS m_row_mac,
         (SELECT max(n.version) FROM secret_versions n WHERE n.secret_id = s.id) AS v_newest
    FROM secrets s
    JOIN access_grants g ON g.secret_id = s.id
    JOIN memberships m ON m.group_id = g.group_id AND m.client_id = ?
    JOIN "groups" gr ON gr.id = g.group_id
    JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.current_version
   WHERE s.name = ? AND s.deleted_at IS NULL
   ORDER BY gr.name
   LIMIT 1`;

/**
 * FIND_FOR_CLIENT_SQL with the cache epoch's generation read in the same statement (one row
 * even when nothing is found): the delivery cache files what it read under the generation it was
 * read at (src/db/cache-epoch.ts), not one taken before or after.
 */
const FIND_FOR_CLIENT_WITH_EPOCH_SQL = `
  SELECT e.generation AS epoch_generation, f.*
    FROM cache_epoch e LEFT JOIN (${FIND_FOR_CLIENT_SQL}) f ON 1 = 1
   WHERE e.id = 1`;

/** The row FIND_FOR_CLIENT_SQL returns: the secret, its current version (v_*) and the grant (g_*). */
interface FoundSecretRow extends SecretRow {
  group_name: string;
  v_id: number;
  v_iv: Buffer;
  v_ciphertext: Buffer;
  v_wrapped_key: Buffer;
  v_root_key_version: string;
  v_checksum: string;
  v_size: number;
  v_created_by: string;
  v_created_at: number;
  v_row_mac: string | null;
  g_group_id: number;
  g_row_mac: string | null;
  m_row_mac: string | null;
  v_newest: number | string;
}

export class AccessDal {
  constructor(private readonly db: Database) {}

  private q(trx?: Queryable): Queryable {
    return trx ?? this.db.reader;
  }

  // ---- groups

  async findGroup(name: string, trx?: Queryable): Promise<GroupRow | undefined> {
    return this.q(trx)<GroupRow>('groups').where({ name }).first();
  }

  async groupsByName(names: string[], trx?: Queryable): Promise<NamedId[]> {
    if (names.length === 0) return [];
    return this.q(trx)<GroupRow>('groups').whereIn('name', names).select('id', 'name');
  }

  async listGroups(after: string | undefined, limit: number): Promise<GroupRow[]> {
    const q = this.db.reader<GroupRow>('groups').orderBy('name').limit(limit);
    if (after !== undefined) q.where('name', '>', after);
    return q;
  }

  async insertGroup(trx: Transaction, row: NewGroupRow): Promise<void> {
    await trx<GroupRow>('groups').insert(row);
  }

  /**
   * Changes the group in one statement, compare-and-set on `updated_at` when `expectedUpdatedAt`
   * is given (the group's ETag). `updated_at` moves strictly forward (at least one millisecond
   * past its stored value, computed by the database from the row it updates), so it is a version
   * no two states of the row share, whichever instance wrote them. False when no row matched:
   * the group was deleted, or (with `expectedUpdatedAt`) changed since it was read.
   */
  async updateGroup(trx: Transaction, groupId: number, changes: GroupChanges, now: number, expectedUpdatedAt?: number): Promise<boolean> {
    const q = trx<GroupRow>('groups').where({ id: groupId });
    if (expectedUpdatedAt !== undefined) q.andWhere('updated_at', expectedUpdatedAt);
    const count = await q.update({
      ...changes,
      updated_at: trx.raw('CASE WHEN updated_at >= CAST(? AS BIGINT) THEN updated_at + 1 ELSE CAST(? AS BIGINT) END', [now, now]) as unknown as number,
    });
    return Number(count) > 0;
  }

  /** The group, its grants and its memberships. */
  async deleteGroup(trx: Transaction, groupId: number): Promise<void> {
    await trx<GrantRow>('access_grants').where({ group_id: groupId }).delete();
    await trx('memberships').where({ group_id: groupId }).delete();
    await trx<GroupRow>('groups').where({ id: groupId }).delete();
  }

  /** allowed_audiences of every group the client is in, with the membership row (its MAC is checked by the service). */
  async audiencesOfClientGroups(clientId: number): Promise<Array<Pick<GroupRow, 'allowed_audiences'> & Pick<MembershipRow, 'group_id' | 'row_mac'>>> {
    return this.db
      .reader('memberships as m')
      .join('groups as g', 'g.id', 'm.group_id')
      .where('m.client_id', clientId)
      .select('g.allowed_audiences', 'm.group_id', 'm.row_mac');
  }

  // ---- grants

  /** Names of the live secrets granted to the group, sorted. */
  async secretNamesOfGroup(groupId: number, trx?: Queryable): Promise<string[]> {
    const rows: Array<{ name: string }> = await this.q(trx)('access_grants as g')
      .join('secrets as s', 's.id', 'g.secret_id')
      .where('g.group_id', groupId)
      .whereNull('s.deleted_at')
      .orderBy('s.name')
      .select('s.name');
    return rows.map((r) => r.name);
  }

  /** Names of the groups granted the secret, sorted. */
  async groupNamesOfSecret(secretId: number, trx?: Queryable): Promise<string[]> {
    const rows: Array<{ name: string }> = await this.q(trx)('access_grants as g')
      .join('groups as gr', 'gr.id', 'g.group_id')
      .where('g.secret_id', secretId)
      .orderBy('gr.name')
      .select('gr.name');
    return rows.map((r) => r.name);
  }

  /** Inserts the grant, or replaces the MAC of an existing row (a forged row is not kept beside it). */
  async upsertGrant(trx: Transaction, row: GrantRow): Promise<void> {
    await trx<GrantRow>('access_grants').insert(row).onConflict(['group_id', 'secret_id']).merge({ row_mac: row.row_mac });
  }

  async deleteGrant(trx: Transaction, groupId: number, secretId: number): Promise<void> {
    await trx<GrantRow>('access_grants').where({ group_id: groupId, secret_id: secretId }).delete();
  }

  async deleteGrantsOfSecret(trx: Transaction, secretId: number): Promise<void> {
    await trx<GrantRow>('access_grants').where({ secret_id: secretId }).delete();
  }

  /** Grant rows written before row MACs existed (migration 007). */
  async grantsWithoutMac(trx: Transaction): Promise<Array<Pick<GrantRow, 'group_id' | 'secret_id'>>> {
    return trx<GrantRow>('access_grants').whereNull('row_mac').select('group_id', 'secret_id');
  }

  async setGrantMac(trx: Transaction, groupId: number, secretId: number, rowMac: string): Promise<void> {
    await trx<GrantRow>('access_grants').where({ group_id: groupId, secret_id: secretId }).update({ row_mac: rowMac });
  }

  /** Grant rows after (groupId, secretId), in key order: the integrity scan's pages. */
  async grantPage(after: [number, number], limit: number): Promise<Array<Pick<GrantRow, 'group_id' | 'secret_id' | 'row_mac'>>> {
    const [g0, s0] = after;
    return this.db
      .reader<GrantRow>('access_grants')
      .where((w) => w.where('group_id', '>', g0).orWhere((x) => x.where('group_id', g0).andWhere('secret_id', '>', s0)))
      .orderBy([{ column: 'group_id' }, { column: 'secret_id' }])
      .limit(limit)
      .select('group_id', 'secret_id', 'row_mac');
  }

  // ---- the access rule: which secrets a client may read

  /**
   * The access rule in one indexed query: the secret's current version, only if one of the
   * client's groups is granted it, and the cache epoch's generation the answer was read at. The
   * port runs it as a prepared statement on SQLite's synchronous connection.
   */
  async findForClient(clientId: number, name: string): Promise<{ found: FoundSecret | undefined; epochGeneration: number }> {
    const row = await this.db.readOne<Partial<FoundSecretRow> & { epoch_generation: number | string }>(FIND_FOR_CLIENT_WITH_EPOCH_SQL, [clientId, name]);
    if (!row) throw new Error('cache_epoch has no generation row');
    const epochGeneration = Number(row.epoch_generation);
    if (row.id === null || row.id === undefined) return { found: undefined, epochGeneration };
    return { found: this.foundSecret(clientId, row as FoundSecretRow), epochGeneration };
  }

  private foundSecret(clientId: number, row: FoundSecretRow): FoundSecret {
    return {
      secret: rowToSecret(row),
      group: row.group_name,
      grant: { groupId: row.g_group_id, rowMac: row.g_row_mac ?? null },
      membership: { clientId, groupId: row.g_group_id, rowMac: row.m_row_mac ?? null },
      newestVersion: Number(row.v_newest),
      version: {
        id: row.v_id,
        secretId: row.id,
        version: row.current_version,
        iv: row.v_iv,
        ciphertext: row.v_ciphertext,
        wrappedKey: row.v_wrapped_key,
        rootKeyVersion: row.v_root_key_version,
        checksum: row.v_checksum,
        size: row.v_size,
        createdBy: row.v_created_by,
        createdAt: row.v_created_at,
        rowMac: row.v_row_mac ?? null,
      },
    };
  }

  /**
   * The live secrets granted to one of the client's groups: one row per (secret, granting group),
   * by name, with the grant's and the membership's MACs for the service to check.
   */
  async listForClient(clientId: number): Promise<ListedSecretRow[]> {
    const rows: Array<SecretWithVersionRow & { g_group_id: number; g_row_mac: string | null; m_row_mac: string | null }> = await this.db
      .reader('secrets as s')
      .join('secret_versions as v', function () {
        this.on('v.secret_id', '=', 's.id').andOn('v.version', '=', 's.current_version');
      })
      .join('access_grants as g', 'g.secret_id', 's.id')
      .join('memberships as m', 'm.group_id', 'g.group_id')
      .whereNull('s.deleted_at')
      .where('m.client_id', clientId)
      .orderBy([{ column: 's.name' }, { column: 'g.group_id' }])
      .select('s.*', 'v.checksum', 'v.size', 'g.group_id as g_group_id', 'g.row_mac as g_row_mac', 'm.row_mac as m_row_mac');
    return rows.map((row) => ({
      ...rowToSecret(row),
      checksum: row.checksum,
      size: row.size,
      grant: { groupId: row.g_group_id, rowMac: row.g_row_mac ?? null },
      membership: { clientId, groupId: row.g_group_id, rowMac: row.m_row_mac ?? null },
    }));
  }

  // ---- memberships

  /** Names of the client's groups, sorted. */
  async groupNamesOfClient(clientId: number, trx?: Queryable): Promise<string[]> {
    const rows: Array<{ name: string }> = await this.q(trx)('memberships as m')
      .join('groups as g', 'g.id', 'm.group_id')
      .where('m.client_id', clientId)
      .orderBy('g.name')
      .select('g.name');
    return rows.map((r) => r.name);
  }

  /** Names of the group's clients, sorted. */
  async clientNamesOfGroup(groupId: number, trx?: Queryable): Promise<string[]> {
    const rows: Array<{ name: string }> = await this.q(trx)('memberships as m')
      .join('clients as c', 'c.id', 'm.client_id')
      .where('m.group_id', groupId)
      .orderBy('c.name')
      .select('c.name');
    return rows.map((r) => r.name);
  }

  /** Inserts the membership, or replaces the MAC of an existing row (a forged row is not kept beside it). */
  async upsertMembership(trx: Transaction, row: MembershipRow): Promise<void> {
    await trx<MembershipRow>('memberships').insert(row).onConflict(['client_id', 'group_id']).merge({ row_mac: row.row_mac });
  }

  async deleteMembership(trx: Transaction, groupId: number, clientId: number): Promise<void> {
    await trx('memberships').where({ group_id: groupId, client_id: clientId }).delete();
  }

  async deleteMembershipsOfClient(trx: Transaction, clientId: number): Promise<void> {
    await trx('memberships').where({ client_id: clientId }).delete();
  }

  /** Membership rows written before their MACs existed (migration 011). */
  async membershipsWithoutMac(trx: Transaction): Promise<Array<Pick<MembershipRow, 'client_id' | 'group_id'>>> {
    return trx<MembershipRow>('memberships').whereNull('row_mac').select('client_id', 'group_id');
  }

  async setMembershipMac(trx: Transaction, clientId: number, groupId: number, rowMac: string): Promise<void> {
    await trx<MembershipRow>('memberships').where({ client_id: clientId, group_id: groupId }).update({ row_mac: rowMac });
  }

  /** Membership rows after (clientId, groupId), in key order: the integrity scan's pages. */
  async membershipPage(after: [number, number], limit: number): Promise<Array<Pick<MembershipRow, 'client_id' | 'group_id' | 'row_mac'>>> {
    const [c0, g0] = after;
    return this.db
      .reader<MembershipRow>('memberships')
      .where((w) => w.where('client_id', '>', c0).orWhere((x) => x.where('client_id', c0).andWhere('group_id', '>', g0)))
      .orderBy([{ column: 'client_id' }, { column: 'group_id' }])
      .limit(limit)
      .select('client_id', 'group_id', 'row_mac');
  }

  // ---- reports

  /** One row per (client, secret, granting group) over live secrets, with the last read. */
  async accessRows(): Promise<AccessRowRecord[]> {
    return this.db
      .reader('memberships as m')
      .join('clients as c', 'c.id', 'm.client_id')
      .join('groups as g', 'g.id', 'm.group_id')
      .join('access_grants as ag', 'ag.group_id', 'g.id')
      .join('secrets as s', 's.id', 'ag.secret_id')
      .leftJoin('secret_reads as r', function () {
        this.on('r.client_id', '=', 'c.id').andOn('r.secret_id', '=', 's.id');
      })
      .whereNull('s.deleted_at')
      .orderBy([{ column: 'c.name' }, { column: 's.name' }, { column: 'g.name' }])
      .select('c.name as client', 'c.client_id', 'c.enabled', 's.name as secret', 'g.name as grp', 'r.last_read_at', 'r.last_version');
  }
}
