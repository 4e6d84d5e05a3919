import type { Knex } from 'knex';
import type { SqliteFastPath } from '../db/sqlite-fast-path.js';
import type { SecretRecord, SecretVersionRecord } from './secrets-types.js';

export function rowToSecret(row: any): SecretRecord {
  return {
    id: row.id,
    name: row.name,
    description: row.description,
    type: row.type,
    labels: JSON.parse(row.labels),
    metadata: JSON.parse(row.metadata),
    expiry: row.expiry ?? null,
    currentVersion: row.current_version,
    latestVersion: row.latest_version,
    createdBy: row.created_by,
    createdAt: row.created_at,
    updatedBy: row.updated_by,
    updatedAt: row.updated_at,
    rowMac: row.row_mac ?? null,
  };
}

export function rowToVersion(row: any): SecretVersionRecord {
  return {
    id: row.id,
    secretId: row.secret_id,
    version: row.version,
    iv: row.iv,
    ciphertext: row.ciphertext,
    wrappedKey: row.wrapped_key,
    rootKeyVersion: row.root_key_version,
    checksum: row.checksum,
    size: row.size,
    createdBy: row.created_by,
    createdAt: row.created_at,
    rowMac: row.row_mac ?? null,
  };
}

export interface SecretListFilter {
  label?: { key: string; value?: string };
  group?: string;
  expiringBefore?: number;
  after?: string;
  limit: number;
}

export interface FoundSecret {
  secret: SecretRecord;
  version: SecretVersionRecord;
  /** The (alphabetically first) group through which the client may read it. */
  group: string;
  /** That group's grant row and the highest stored version, for the row integrity check. */
  grant: { groupId: number; rowMac: string | null };
  newestVersion: number;
}

const FIND_FOR_CLIENT_SQL = `
  SELECT s.*, gr.name AS group_name,
         v.id AS v_id, v.iv AS v_iv, v.ciphertext AS v_ciphertext, v.wrapped_key AS v_wrapped_key,
         v.root_key_version AS v_root_key_version, v.checksum AS v_checksum, v.size AS v_size,
         v.created_by AS v_created_by, v.created_at AS v_created_at, v.row_mac AS v_row_mac,
         g.group_id AS g_group_id, g.row_mac AS g_row_mac,
         (SELECT max(n.version) FROM secret_versions n WHERE n.secret_id = s.id) AS v_newest
    FROM secrets s
    JOIN access_grants g ON g.secret_id = s.id
    JOIN memberships m ON m.group_id = g.group_id AND m.client_id = ?
    JOIN "groups" gr ON gr.id = g.group_id
    JOIN secret_versions v ON v.secret_id = s.id AND v.version = s.current_version
   WHERE s.name = ? AND s.deleted_at IS NULL
   ORDER BY gr.name
   LIMIT 1`;

export class SecretsDal {
  constructor(
    private readonly db: Knex,
    private readonly fastPath?: SqliteFastPath,
  ) {}

  async findLive(name: string, trx: Knex = this.db): Promise<SecretRecord | undefined> {
    const row = await trx('secrets').where({ name }).whereNull('deleted_at').first();
    return row ? rowToSecret(row) : undefined;
  }

  /**
   * The live secret, its row locked until `trx` ends (PostgreSQL; SQLite has one writer). Every
   * write to a secret takes this lock first (src/db/lock-order.md), so writers of one secret
   * queue here and each sees the row the previous one committed.
   *
   * FOR NO KEY UPDATE, not FOR UPDATE: the foreign keys of rows that name the secret
   * (secret_reads, secret_versions, access_grants) take FOR KEY SHARE on it, which FOR UPDATE
   * would block, making every client read that marks secret_reads wait for the version write.
   * FOR NO KEY UPDATE still excludes other writers, and the key (id) never changes.
   */
  async lockLive(trx: Knex.Transaction, name: string): Promise<SecretRecord | undefined> {
    const q = trx('secrets').where({ name }).whereNull('deleted_at');
    const row = trx.client.dialect === 'postgresql' ? await q.forNoKeyUpdate().first() : await q.first();
    return row ? rowToSecret(row) : undefined;
  }

  async insertSecret(trx: Knex.Transaction, values: Record<string, unknown>): Promise<number> {
    const [row] = await trx('secrets').insert(values).returning('id');
    return typeof row === 'object' ? row.id : row;
  }

  async replaceLabels(trx: Knex.Transaction, secretId: number, labels: Record<string, string>): Promise<void> {
    await trx('secret_labels').where({ secret_id: secretId }).delete();
    const rows = Object.entries(labels).map(([key, value]) => ({ secret_id: secretId, key, value }));
    if (rows.length) await trx('secret_labels').insert(rows);
  }

  async insertVersion(trx: Knex.Transaction, values: Record<string, unknown>): Promise<void> {
    await trx('secret_versions').insert(values);
  }

  async getVersion(secretId: number, version: number, trx: Knex = this.db): Promise<SecretVersionRecord | undefined> {
    const row = await trx('secret_versions').where({ secret_id: secretId, version }).first();
    return row ? rowToVersion(row) : undefined;
  }

  async listVersions(secretId: number): Promise<SecretVersionRecord[]> {
    return (await this.db('secret_versions').where({ secret_id: secretId }).orderBy('version', 'desc')).map(rowToVersion);
  }

  async list(filter: SecretListFilter): Promise<Array<SecretRecord & { checksum: string; size: number }>> {
    const q = this.db('secrets as s')
      .join('secret_versions as v', function () {
        this.on('v.secret_id', '=', 's.id').andOn('v.version', '=', 's.current_version');
      })
      .whereNull('s.deleted_at')
      .select('s.*', 'v.checksum', 'v.size')
      .orderBy('s.name')
      .limit(filter.limit);
    if (filter.after !== undefined) q.where('s.name', '>', filter.after);
    if (filter.expiringBefore !== undefined) q.whereNotNull('s.expiry').where('s.expiry', '<', filter.expiringBefore);
    if (filter.label) {
      const { key, value } = filter.label;
      q.whereExists(function () {
        this.select(1).from('secret_labels as l').whereRaw('l.secret_id = s.id').where('l.key', key);
        if (value !== undefined) this.where('l.value', value);
      });
    }
    if (filter.group) {
      const group = filter.group;
      q.whereExists(function () {
        this.select(1)
          .from('access_grants as g')
          .join('groups as gr', 'gr.id', 'g.group_id')
          .whereRaw('g.secret_id = s.id')
          .where('gr.name', group);
      });
    }
    return (await q).map((row: any) => ({ ...rowToSecret(row), checksum: row.checksum, size: row.size }));
  }

  async groupsOf(secretId: number, trx: Knex = this.db): Promise<string[]> {
    const rows = await trx('access_grants as g')
      .join('groups as gr', 'gr.id', 'g.group_id')
      .where('g.secret_id', secretId)
      .orderBy('gr.name')
      .select('gr.name');
    return rows.map((r: any) => r.name);
  }

  /**
   * The access rule in one indexed query: the secret's current version, only if one of the
   * client's groups is granted it. On SQLite it runs as a prepared statement on the fast path.
   */
  async findForClient(clientId: number, name: string): Promise<FoundSecret | undefined> {
    const row = this.fastPath
      ? this.fastPath.get<any>(FIND_FOR_CLIENT_SQL, clientId, name)
      : (await this.db.raw(FIND_FOR_CLIENT_SQL, [clientId, name]).then((r: any) => (Array.isArray(r) ? r[0] : r.rows[0])));
    if (!row) return undefined;
    return {
      secret: rowToSecret(row),
      group: row.group_name,
      grant: { groupId: row.g_group_id, rowMac: row.g_row_mac ?? null },
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

  async listForClient(clientId: number): Promise<Array<SecretRecord & { checksum: string; size: number }>> {
    const rows = await this.db('secrets as s')
      .join('secret_versions as v', function () {
        this.on('v.secret_id', '=', 's.id').andOn('v.version', '=', 's.current_version');
      })
      .whereNull('s.deleted_at')
      .whereExists(function () {
        this.select(1)
          .from('access_grants as g')
          .join('memberships as m', 'm.group_id', 'g.group_id')
          .whereRaw('g.secret_id = s.id')
          .where('m.client_id', clientId);
      })
      .orderBy('s.name')
      .select('s.*', 'v.checksum', 'v.size');
    return rows.map((row: any) => ({ ...rowToSecret(row), checksum: row.checksum, size: row.size }));
  }
}
