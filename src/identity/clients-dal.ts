import type { Database, Queryable, Transaction } from '../db/database.js';

/** A clients row. */
export interface ClientRow {
  id: number;
  name: string;
  client_id: string;
  secret_hash: string;
  description: string;
  /** JSON object */
  labels: string;
  enabled: boolean | number;
  cert_identity: string | null;
  /** JSON array, or null */
  allowed_audiences: string | null;
  created_by: string;
  created_at: number;
  updated_at: number;
  /** The token generation: tokens carry it, and any change revokes them. */
  secret_rotated_at: number;
  /** JSON array of the client names this client may act for (migration 009; '[]' by default). */
  acts_for: string;
  /** May ask the release gate for decisions (migration 009). */
  release_gate: boolean | number;
  /** MAC over (id, name, acts_for, release_gate), row-integrity.ts (migration 011). */
  delegation_mac: string | null;
}

/** The columns of a clients row that the delegation MAC binds, with the MAC. */
export type DelegationColumns = Pick<ClientRow, 'id' | 'name' | 'acts_for' | 'release_gate' | 'delegation_mac'>;

export type NewClientRow = Omit<ClientRow, 'id' | 'delegation_mac'>;
export type ClientRowChanges = Partial<Omit<ClientRow, 'id' | 'name' | 'client_id' | 'created_by' | 'created_at'>>;

/** The clients table. */
export class ClientsDal {
  constructor(private readonly db: Database) {}

  private q(trx?: Queryable): Queryable {
    return trx ?? this.db.reader;
  }

  async findByName(name: string, trx?: Queryable): Promise<ClientRow | undefined> {
    return this.q(trx)<ClientRow>('clients').where({ name }).first();
  }

  async findById(id: number): Promise<ClientRow | undefined> {
    return this.db.reader<ClientRow>('clients').where({ id }).first();
  }

  /** By the public client id (client credentials). */
  async findByClientId(clientId: string): Promise<ClientRow | undefined> {
    return this.db.reader<ClientRow>('clients').where({ client_id: clientId }).first();
  }

  async findByCertIdentity(identity: string): Promise<ClientRow | undefined> {
    return this.db.reader<ClientRow>('clients').where({ cert_identity: identity }).first();
  }

  async namesToIds(names: string[], trx?: Queryable): Promise<Array<{ id: number; name: string }>> {
    if (names.length === 0) return [];
    return this.q(trx)<ClientRow>('clients').whereIn('name', names).select('id', 'name');
  }

  async list(after: string | undefined, limit: number): Promise<ClientRow[]> {
    const q = this.db.reader<ClientRow>('clients').orderBy('name').limit(limit);
    if (after !== undefined) q.where('name', '>', after);
    return q;
  }

  /** Every client, by name (reports). */
  async listAll(): Promise<Array<Pick<ClientRow, 'name' | 'client_id' | 'enabled'>>> {
    return this.db.reader<ClientRow>('clients').orderBy('name').select('name', 'client_id', 'enabled');
  }

  async insert(trx: Transaction, row: NewClientRow): Promise<number> {
    const [inserted] = await trx<ClientRow>('clients').insert(row).returning('id');
    return typeof inserted === 'object' ? inserted.id : inserted;
  }

  async update(trx: Transaction, id: number, changes: ClientRowChanges): Promise<void> {
    await trx<ClientRow>('clients').where({ id }).update(changes);
  }

  /** Clients that may act for someone (acts_for not empty), with that list and its MAC. */
  async delegates(trx: Queryable): Promise<DelegationColumns[]> {
    return trx<ClientRow>('clients').whereNot('acts_for', '[]').select('id', 'name', 'acts_for', 'release_gate', 'delegation_mac');
  }

  /** Clients written before delegation MACs existed (migration 011). */
  async withoutDelegationMac(trx: Transaction): Promise<DelegationColumns[]> {
    return trx<ClientRow>('clients').whereNull('delegation_mac').select('id', 'name', 'acts_for', 'release_gate', 'delegation_mac');
  }

  /** Clients after `afterId`, in id order: the integrity scan's pages. */
  async delegationPage(afterId: number, limit: number): Promise<DelegationColumns[]> {
    return this.db.reader<ClientRow>('clients').where('id', '>', afterId).orderBy('id').limit(limit).select('id', 'name', 'acts_for', 'release_gate', 'delegation_mac');
  }

  async delete(trx: Transaction, id: number): Promise<void> {
    await trx<ClientRow>('clients').where({ id }).delete();
  }

  async tokenGeneration(id: number): Promise<number | undefined> {
    const row: Pick<ClientRow, 'secret_rotated_at'> | undefined = await this.db.reader<ClientRow>('clients').where({ id }).first('secret_rotated_at');
    return row?.secret_rotated_at == null ? undefined : Number(row.secret_rotated_at);
  }
}
