import crypto from 'node:crypto';
import { z } from 'zod';
import type { AccessService } from '../access/access-service.js';
import type { AuditService } from '../audit/audit-service.js';
import type { Queryable, Transaction } from '../db/database.js';
import type { RowIntegrity } from '../secrets/row-integrity.js';
import { integrityFailure } from '../secrets/row-integrity.js';
import type { ClientRow, ClientRowChanges, ClientsDal, DelegationColumns } from './clients-dal.js';
import { digestsEqual, randomToken, sha256Hex } from '../crypto/hashing.js';
import { ConflictError, ForbiddenError, NotFoundError } from '../core/errors.js';
import type { RequestMeta } from '../core/principal.js';
import { descriptionSchema, labelsSchema, nameSchema } from '../core/validation.js';
import { rethrowUniqueAsConflictFn } from './identity-util.js';
import { iso, type Clock } from '../core/clock.js';
import { actorOf, principalLabel, type Principal } from './identity-types.js';

const audienceSchema = z.string().min(1).max(512);
const certIdentitySchema = z
  .string()
  .min(1)
  .max(512)
  .regex(/^(spiffe:\/\/[A-Za-z0-9.-]+\/\S*|CN=[^\s,]{1,200})$/, 'must be a spiffe:// URI or CN=<common name>');

/** Names of the clients a delegate (the Docker plugin) may act for: exact names, no patterns. */
const actsForSchema = z
  .array(nameSchema)
  .max(1000)
  .describe('Names of the clients this client may act for (read their secrets as a delegate, e.g. the Docker plugin). Exact names; admin only.');
const releaseGateSchema = z.boolean().describe('May ask the release gate for decisions (POST /v1/client/releases). Admin only.');

export const createClientSchema = z
  .object({
    name: nameSchema,
    description: descriptionSchema.optional(),
    labels: labelsSchema.optional(),
    groups: z.array(nameSchema).max(100).optional(),
    certIdentity: certIdentitySchema.nullable().optional(),
    allowedAudiences: z.array(audienceSchema).max(50).nullable().optional(),
    actsFor: actsForSchema.optional(),
    releaseGate: releaseGateSchema.optional(),
  })
  .strict();

export const updateClientSchema = z
  .object({
    description: descriptionSchema.optional(),
    labels: labelsSchema.optional(),
    enabled: z.boolean().optional(),
    certIdentity: certIdentitySchema.nullable().optional(),
    allowedAudiences: z.array(audienceSchema).max(50).nullable().optional(),
    actsFor: actsForSchema.optional(),
    releaseGate: releaseGateSchema.optional(),
  })
  .strict();

export const membershipChangeSchema = z
  .object({ add: z.array(nameSchema).max(500).default([]), remove: z.array(nameSchema).max(500).default([]) })
  .strict();

export interface ClientRecord {
  id: number;
  name: string;
  clientId: string;
  description: string;
  labels: Record<string, string>;
  enabled: boolean;
  certIdentity: string | null;
  allowedAudiences: string[] | null;
  createdBy: string;
  createdAt: number;
  updatedAt: number;
  /** Token generation (column secret_rotated_at): tokens carry it; any change revokes them. */
  tokenGeneration: number;
  /** The clients this one may act for (a delegate such as the Docker plugin); [] for a workload. */
  actsFor: string[];
  /** May ask the release gate for decisions. */
  releaseGate: boolean;
}

/** The fields only an admin may set: together they make a client a delegate of others. */
const ADMIN_ONLY_FIELDS = ['actsFor', 'releaseGate'] as const;

/**
 * The next token generation: the current time, but always a new value, so a revocation in
 * the same millisecond as the last issue or rotation still changes it.
 */
function nextTokenGeneration(client: ClientRecord, now: number): number {
  return Math.max(now, client.tokenGeneration + 1);
}

/** The admin-only capabilities a create or update set, for its audit event. */
function capabilityDetails(input: { actsFor?: string[]; releaseGate?: boolean }): Record<string, unknown> {
  return {
    ...(input.actsFor !== undefined ? { actsFor: [...new Set(input.actsFor)] } : {}),
    ...(input.releaseGate !== undefined ? { releaseGate: input.releaseGate } : {}),
  };
}

export function rowToClient(row: ClientRow): ClientRecord {
  return {
    id: row.id,
    name: row.name,
    clientId: row.client_id,
    description: row.description,
    labels: JSON.parse(row.labels),
    enabled: Boolean(row.enabled),
    certIdentity: row.cert_identity ?? null,
    allowedAudiences: row.allowed_audiences ? JSON.parse(row.allowed_audiences) : null,
    createdBy: row.created_by,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    tokenGeneration: Number(row.secret_rotated_at),
    actsFor: row.acts_for ? (JSON.parse(row.acts_for) as string[]) : [],
    releaseGate: Boolean(row.release_gate),
  };
}

/** The bound state of a row's delegation, as RowIntegrity MACs it. */
function delegationState(row: Pick<ClientRow, 'id' | 'name' | 'acts_for' | 'release_gate'>) {
  return { clientId: row.id, name: row.name, actsFor: row.acts_for, releaseGate: Boolean(row.release_gate) };
}

export class ClientsService {
  constructor(private readonly deps: { dal: ClientsDal; access: AccessService; audit: AuditService; clock: Clock; rowIntegrity: RowIntegrity }) {}

  /** The MAC of the row's delegation (acts_for, release_gate) as it will be stored. */
  private delegationMac(row: Pick<ClientRow, 'id' | 'name' | 'acts_for' | 'release_gate'>): string {
    return this.deps.rowIntegrity.delegationMac(delegationState(row));
  }

  private delegationIntact(row: DelegationColumns): boolean {
    return !this.deps.rowIntegrity.checkDelegation(delegationState(row), row.delegation_mac);
  }

  /**
   * The delegation a client row grants, only when its MAC verifies: acts_for or release_gate
   * set outside the broker is not honoured (deny), and the refusal is an integrity failure
   * (503 integrity_failure), as for a grant or membership row changed by hand.
   */
  private honouredDelegation(row: ClientRow): { actsFor: string[]; releaseGate: boolean } {
    if (!this.delegationIntact(row)) {
      throw integrityFailure(`the delegation (actsFor, releaseGate) of client ${row.name} was changed outside the broker; it is not honoured until an admin sets it again`);
    }
    const client = rowToClient(row);
    return { actsFor: client.actsFor, releaseGate: client.releaseGate };
  }

  present(client: ClientRecord, groups?: string[]) {
    return {
      name: client.name,
      clientId: client.clientId,
      description: client.description,
      labels: client.labels,
      enabled: client.enabled,
      certIdentity: client.certIdentity,
      allowedAudiences: client.allowedAudiences,
      actsFor: client.actsFor,
      releaseGate: client.releaseGate,
      createdBy: client.createdBy,
      createdAt: iso(client.createdAt),
      updatedAt: iso(client.updatedAt),
      ...(groups ? { groups } : {}),
    };
  }

  async find(name: string, trx?: Queryable): Promise<ClientRecord | undefined> {
    const row = await this.deps.dal.findByName(name, trx);
    return row ? rowToClient(row) : undefined;
  }

  async require(name: string, trx?: Queryable): Promise<ClientRecord> {
    const client = await this.find(name, trx);
    if (!client) throw new NotFoundError(`client ${name}`);
    return client;
  }

  async groupsOf(clientDbId: number, trx?: Queryable): Promise<string[]> {
    return this.deps.access.groupsOfClient(clientDbId, trx);
  }

  /**
   * Only an admin makes a client a delegate: a writer (who manages ordinary clients) setting
   * actsFor or releaseGate is refused, and the refusal is on the record.
   */
  private async assertMaySetCapabilities(principal: Principal, meta: RequestMeta, name: string, input: Record<string, unknown>): Promise<void> {
    const fields = ADMIN_ONLY_FIELDS.filter((f) => input[f] !== undefined);
    if (fields.length === 0 || (principal.kind === 'operator' && principal.role === 'admin')) return;
    const reason = `only an admin may set ${fields.join(' and ')}`;
    await this.deps.audit.record({ actor: actorOf(principal), action: 'authz.deny', resource: { kind: 'client', name }, outcome: 'deny', reason, details: { fields }, request: meta });
    throw new ForbiddenError(reason, 'admin_required');
  }

  async create(principal: Principal, meta: RequestMeta, input: z.infer<typeof createClientSchema>) {
    await this.assertMaySetCapabilities(principal, meta, input.name, input);
    const clientId = `kwc_${crypto.randomBytes(12).toString('base64url')}`;
    const clientSecret = randomToken('kws_');
    const now = this.deps.clock();
    const groups = [...new Set(input.groups ?? [])];
    const created = await this.deps.audit
      .transact(async (trx, record) => {
        if (await this.find(input.name, trx)) throw new ConflictError(`client ${input.name} already exists`, 'already_exists');
        const groupRows = await this.deps.access.resolveGroups(groups, trx);
        const actsFor = JSON.stringify([...new Set(input.actsFor ?? [])]);
        const releaseGate = input.releaseGate ?? false;
        const id = await this.deps.dal.insert(trx, {
          name: input.name,
          client_id: clientId,
          secret_hash: sha256Hex(clientSecret),
          description: input.description ?? '',
          labels: JSON.stringify(input.labels ?? {}),
          enabled: true,
          cert_identity: input.certIdentity ?? null,
          allowed_audiences: input.allowedAudiences ? JSON.stringify(input.allowedAudiences) : null,
          created_by: principalLabel(principal),
          created_at: now,
          updated_at: now,
          secret_rotated_at: now,
          acts_for: actsFor,
          release_gate: releaseGate,
        });
        // the MAC binds the row id, known only once inserted
        await this.deps.dal.update(trx, id, { delegation_mac: this.delegationMac({ id, name: input.name, acts_for: actsFor, release_gate: releaseGate }) });
        for (const g of groupRows) await this.deps.access.addMember(trx, g.id, id, now);
        await record({ actor: actorOf(principal), action: 'client.create', resource: { kind: 'client', name: input.name }, outcome: 'allow', details: { clientId, groups, ...capabilityDetails(input) }, request: meta });
        for (const g of groupRows) {
          await record({ actor: actorOf(principal), action: 'membership.add', resource: { kind: 'client', name: input.name }, outcome: 'allow', details: { group: g.name }, request: meta });
        }
        return this.get(input.name, trx);
      })
      .catch(rethrowUniqueAsConflictFn(`client ${input.name} (or its certIdentity) already exists`));
    return { ...created, clientSecret };
  }

  async list(after: string | undefined, limit: number) {
    return (await this.deps.dal.list(after, limit)).map((r) => this.present(rowToClient(r)));
  }

  /** Pass a write's transaction to describe the state that transaction produced, not a later one. */
  async get(name: string, trx?: Queryable) {
    const client = await this.require(name, trx);
    return this.present(client, await this.groupsOf(client.id, trx));
  }

  async update(principal: Principal, meta: RequestMeta, name: string, patch: z.infer<typeof updateClientSchema>) {
    await this.assertMaySetCapabilities(principal, meta, name, patch);
    return this.deps.audit
      .transact(async (trx, record) => {
        const row = await this.deps.dal.findByName(name, trx);
        if (!row) throw new NotFoundError(`client ${name}`);
        const client = rowToClient(row);
        const changes: ClientRowChanges = { updated_at: this.deps.clock() };
        if (patch.description !== undefined) changes.description = patch.description;
        if (patch.labels !== undefined) changes.labels = JSON.stringify(patch.labels);
        if (patch.enabled !== undefined) changes.enabled = patch.enabled;
        // Disabling revokes the client's tokens for good: moving its token generation on means
        // re-enabling does not bring back tokens issued before (TokenService compares the
        // generation in the token with the database, so every instance sees it at once)
        if (patch.enabled === false) changes.secret_rotated_at = nextTokenGeneration(client, this.deps.clock());
        if (patch.certIdentity !== undefined) changes.cert_identity = patch.certIdentity;
        if (patch.allowedAudiences !== undefined) changes.allowed_audiences = patch.allowedAudiences ? JSON.stringify(patch.allowedAudiences) : null;
        if (patch.actsFor !== undefined) changes.acts_for = JSON.stringify([...new Set(patch.actsFor)]);
        if (patch.releaseGate !== undefined) changes.release_gate = patch.releaseGate;
        if (patch.actsFor !== undefined || patch.releaseGate !== undefined) Object.assign(changes, this.resealedDelegation(row, changes));
        await this.deps.dal.update(trx, client.id, changes);
        const action = patch.enabled === false ? 'client.disable' : patch.enabled === true ? 'client.enable' : 'client.update';
        await record({ actor: actorOf(principal), action, resource: { kind: 'client', name }, outcome: 'allow', details: { fields: Object.keys(patch).sort(), ...capabilityDetails(patch) }, request: meta });
        return this.get(name, trx);
      })
      .catch(rethrowUniqueAsConflictFn('another client already has that certIdentity'));
  }

  async remove(principal: Principal, meta: RequestMeta, name: string) {
    await this.deps.audit.transact(async (trx, record) => {
      const client = await this.require(name, trx);
      await this.deps.access.removeClient(trx, client.id);
      await this.deps.dal.delete(trx, client.id);
      await record({ actor: actorOf(principal), action: 'client.delete', resource: { kind: 'client', name }, outcome: 'allow', details: { clientId: client.clientId }, request: meta });
      // a delegation names a client by name: a new client created later under the same name
      // must not inherit it, so the name leaves every delegate's actsFor with the client
      for (const delegate of await this.deps.dal.delegates(trx)) {
        const actsFor = JSON.parse(delegate.acts_for) as string[];
        if (!actsFor.includes(name)) continue;
        const remaining = actsFor.filter((n) => n !== name);
        const changes: ClientRowChanges = { acts_for: JSON.stringify(remaining), updated_at: this.deps.clock() };
        // a delegation changed outside the broker stays unsealed (and refused): removing a name must not vouch for the rest
        if (this.delegationIntact(delegate)) changes.delegation_mac = this.delegationMac({ ...delegate, acts_for: changes.acts_for! });
        await this.deps.dal.update(trx, delegate.id, changes);
        await record({ actor: actorOf(principal), action: 'client.update', resource: { kind: 'client', name: delegate.name }, outcome: 'allow', details: { fields: ['actsFor'], actsFor: remaining, reason: `client ${name} was deleted` }, request: meta });
      }
    });
  }

  async rotateSecret(principal: Principal, meta: RequestMeta, name: string) {
    const clientSecret = randomToken('kws_');
    const client = await this.deps.audit.transact(async (trx, record) => {
      const client = await this.require(name, trx);
      await this.deps.dal.update(trx, client.id, { secret_hash: sha256Hex(clientSecret), secret_rotated_at: nextTokenGeneration(client, this.deps.clock()), updated_at: this.deps.clock() });
      await record({ actor: actorOf(principal), action: 'client.secret.rotate', resource: { kind: 'client', name }, outcome: 'allow', details: { clientId: client.clientId }, request: meta });
      return client;
    });
    return { name, clientId: client.clientId, clientSecret };
  }

  async changeGroups(principal: Principal, meta: RequestMeta, name: string, change: z.infer<typeof membershipChangeSchema>) {
    return this.deps.audit.transact(async (trx, record) => {
      const client = await this.require(name, trx);
      await this.deps.access.changeMemberships(trx, record, principal, meta, [client], change.add, change.remove, this.deps.clock());
      return this.get(name, trx);
    });
  }

  /**
   * The client `target` as the delegate `delegateId` may act for it: only when the delegate's
   * actsFor names it and it exists and is enabled. Undefined otherwise, whatever the reason,
   * so a caller cannot tell a disabled or unknown client from one it was not given.
   */
  async delegatedClient(delegateId: number, target: string): Promise<ClientRecord | undefined> {
    const delegate = await this.deps.dal.findById(delegateId);
    if (!delegate || !this.honouredDelegation(delegate).actsFor.includes(target)) return undefined;
    const client = await this.find(target);
    return client?.enabled ? client : undefined;
  }

  /**
   * What the client may do beyond reading its own secrets (read from the database on every
   * call); an IntegrityFailureError when its delegation does not carry a valid MAC.
   */
  async capabilitiesOf(clientDbId: number): Promise<{ actsFor: string[]; releaseGate: boolean }> {
    const row = await this.deps.dal.findById(clientDbId);
    if (!row) return { actsFor: [], releaseGate: false };
    return this.honouredDelegation(row);
  }

  /**
   * The delegation columns and MAC for an update that sets actsFor or releaseGate. When the
   * stored delegation does not verify, the field the update leaves alone is not carried over
   * (it was set outside the broker): it takes its default (no clients, no release gate), so
   * the new MAC vouches only for what an admin set.
   */
  private resealedDelegation(row: ClientRow, changes: ClientRowChanges): Pick<ClientRowChanges, 'acts_for' | 'release_gate' | 'delegation_mac'> {
    const intact = this.delegationIntact(row);
    const acts_for = changes.acts_for ?? (intact ? row.acts_for : '[]');
    const release_gate = changes.release_gate ?? (intact ? Boolean(row.release_gate) : false);
    return { acts_for, release_gate, delegation_mac: this.delegationMac({ id: row.id, name: row.name, acts_for, release_gate }) };
  }

  /** MACs for the delegations of clients from before migration 011; the number of rows sealed. */
  async backfillDelegationMacs(trx: Transaction): Promise<number> {
    const rows = await this.deps.dal.withoutDelegationMac(trx);
    for (const row of rows) await this.deps.dal.update(trx, row.id, { delegation_mac: this.delegationMac(row) });
    return rows.length;
  }

  /** Clients after `afterId` with their delegation and its MAC, for the integrity scan. */
  async delegationPage(afterId: number, limit: number) {
    return (await this.deps.dal.delegationPage(afterId, limit)).map((row) => ({ ...delegationState(row), delegationMac: row.delegation_mac }));
  }

  /** Every client's name, public id and state, by name (reports). */
  listAll() {
    return this.deps.dal.listAll();
  }

  /** Client-credentials check; constant-time on the hash. */
  async verifyCredentials(clientId: string, clientSecret: string): Promise<ClientRecord | undefined> {
    const row = await this.deps.dal.findByClientId(clientId);
    const presented = sha256Hex(clientSecret);
    const stored = row?.secret_hash ?? '0'.repeat(64);
    if (!digestsEqual(presented, stored) || !row) return undefined;
    return rowToClient(row);
  }
}
