import type { Knex } from 'knex';
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
  };
}

export interface SecretListFilter {
  label?: { key: string; value?: string };
  group?: string;
  expiringBefore?: number;
  after?: string;
  limit: number;
}

export class SecretsDal {
  constructor(private readonly db: Knex) {}

  async findLive(name: string, trx: Knex = this.db): Promise<SecretRecord | undefined> {
    const row = await trx('secrets').where({ name }).whereNull('deleted_at').first();
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

  async groupsOf(secretId: number): Promise<string[]> {
    const rows = await this.db('access_grants as g')
      .join('groups as gr', 'gr.id', 'g.group_id')
      .where('g.secret_id', secretId)
      .orderBy('gr.name')
      .select('gr.name');
    return rows.map((r: any) => r.name);
  }

  /**
   * The access rule in one indexed query: the secret's current version, only if one of the
   * client's groups is granted it.
   */
  async findForClient(clientId: number, name: string): Promise<{ secret: SecretRecord; version: SecretVersionRecord; group: string } | undefined> {
    const row = await this.db('secrets as s')
      .join('access_grants as g', 'g.secret_id', 's.id')
      .join('memberships as m', function () {
        this.on('m.group_id', '=', 'g.group_id').andOnVal('m.client_id', '=', clientId);
      })
      .join('groups as gr', 'gr.id', 'g.group_id')
      .join('secret_versions as v', function () {
        this.on('v.secret_id', '=', 's.id').andOn('v.version', '=', 's.current_version');
      })
      .where('s.name', name)
      .whereNull('s.deleted_at')
      .select(
        's.*',
        'gr.name as group_name',
        'v.id as v_id',
        'v.iv as v_iv',
        'v.ciphertext as v_ciphertext',
        'v.wrapped_key as v_wrapped_key',
        'v.root_key_version as v_root_key_version',
        'v.checksum as v_checksum',
        'v.size as v_size',
        'v.created_by as v_created_by',
        'v.created_at as v_created_at',
      )
      .orderBy('gr.name')
      .first();
    if (!row) return undefined;
    return {
      secret: rowToSecret(row),
      group: row.group_name,
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

  async recordRead(trx: Knex.Transaction, clientId: number, secretId: number, version: number, at: number): Promise<void> {
    await trx('secret_reads')
      .insert({ client_id: clientId, secret_id: secretId, last_read_at: at, last_version: version })
      .onConflict(['client_id', 'secret_id'])
      .merge({ last_read_at: at, last_version: version });
  }
}
