import type { AuditEventInput } from '../audit/audit-types.js';
import { InvalidInputError, NotFoundError } from '../core/errors.js';
import { actorOf, type Principal, type RequestMeta } from '../core/principal.js';
import type { Queryable, Transaction } from '../db/database.js';
import { EpochCache, type CacheEpoch } from '../db/cache-epoch.js';
import type { RowIntegrity } from '../secrets/row-integrity.js';
import type { SecretRecord } from '../secrets/secrets-types.js';
import type { AccessDal, AccessRowRecord, FoundSecret, GroupChanges, GroupRow, ListedSecretRow, NamedId, NewGroupRow } from './access-dal.js';

export type { FoundSecret, GroupChanges, GroupRow };

/**
 * Who may read what: groups, which clients are in them (memberships), and which secrets they
 * are granted (access_grants). GroupsService, ClientsService and SecretsService change access
 * only through here, so the grant and membership rows' integrity MACs are written in one place.
 * A client's single-secret read checks them in SecretsService (RowIntegrity.assertReadable, so
 * the refusal is audited); the listings here leave out any row whose MAC does not verify.
 */
export class AccessService {
  private static readonly MAX_CACHED_READS = 100_000;
  /**
   * What findForClient read, per (client, secret name), a refusal included, under the cache
   * epoch: a grant or membership removed, a secret deleted or given a new version, a root key
   * rotation (each rewrapped version row) and any row edited by hand move the epoch, so none is
   * served from here past CACHE_STALENESS_BOUND_MS on any instance. The rows keep their MACs,
   * and every read still checks them (SecretsService.assertIntact).
   */
  private readonly found?: EpochCache<string, FoundSecret | undefined>;

  constructor(
    readonly dal: AccessDal,
    private readonly rowIntegrity: RowIntegrity,
    cacheEpoch?: CacheEpoch,
  ) {
    if (cacheEpoch) this.found = new EpochCache(cacheEpoch, AccessService.MAX_CACHED_READS);
  }

  /** The secret's current version, if one of the client's groups is granted it (the delivery path). */
  async findForClient(clientId: number, name: string): Promise<FoundSecret | undefined> {
    const key = `${clientId}/${name}`;
    const hit = this.found?.get(key);
    if (hit) return hit.value;
    const { found, epochGeneration } = await this.dal.findForClient(clientId, name);
    this.found?.set(key, found, epochGeneration);
    return found;
  }

  /**
   * The live secrets the client may read, with their current version's checksum and size: those
   * granted to one of its groups through a grant and a membership whose MACs verify (a row added
   * outside the broker grants nothing; the integrity scan reports it).
   */
  async listForClient(clientId: number): Promise<Array<SecretRecord & { checksum: string; size: number }>> {
    const seen = new Set<number>();
    const listed: Array<SecretRecord & { checksum: string; size: number }> = [];
    for (const row of await this.dal.listForClient(clientId)) {
      if (seen.has(row.id) || !this.honoured(row)) continue;
      seen.add(row.id);
      const { grant: _grant, membership: _membership, ...secret } = row;
      listed.push(secret);
    }
    return listed;
  }

  /** Whether the grant and the membership that give a client a secret both carry valid MACs. */
  private honoured(row: Pick<ListedSecretRow, 'id' | 'grant' | 'membership'>): boolean {
    const { grant, membership } = row;
    return !this.rowIntegrity.checkGrant({ groupId: grant.groupId, secretId: row.id }, grant.rowMac) && !this.rowIntegrity.checkMembership(membership, membership.rowMac);
  }

  async findGroup(name: string, trx?: Queryable): Promise<GroupRow | undefined> {
    return this.dal.findGroup(name, trx);
  }

  async requireGroup(name: string, trx?: Queryable): Promise<GroupRow> {
    const row = await this.dal.findGroup(name, trx);
    if (!row) throw new NotFoundError(`group ${name}`);
    return row;
  }

  /** The named groups (in the order found); a 400 naming every unknown one. */
  async resolveGroups(names: string[], trx?: Queryable): Promise<NamedId[]> {
    const rows = await this.dal.groupsByName(names, trx);
    const missing = names.filter((g) => !rows.some((r) => r.name === g));
    if (missing.length) throw new InvalidInputError(`unknown groups: ${missing.join(', ')}`);
    return rows;
  }

  listGroups(after: string | undefined, limit: number): Promise<GroupRow[]> {
    return this.dal.listGroups(after, limit);
  }

  createGroup(trx: Transaction, row: NewGroupRow): Promise<void> {
    return this.dal.insertGroup(trx, row);
  }

  /**
   * Changes the group's description, labels or audiences (grants and memberships stay), in one
   * compare-and-set statement when `expectedUpdatedAt` (its ETag) is given; see AccessDal.updateGroup.
   */
  updateGroup(trx: Transaction, groupId: number, changes: GroupChanges, now: number, expectedUpdatedAt?: number): Promise<boolean> {
    return this.dal.updateGroup(trx, groupId, changes, now, expectedUpdatedAt);
  }

  /** Removes the group with its grants and memberships. */
  deleteGroup(trx: Transaction, groupId: number): Promise<void> {
    return this.dal.deleteGroup(trx, groupId);
  }

  /** Grants the secret to the group (idempotent); the grant row carries its integrity MAC. */
  async grant(trx: Transaction, groupId: number, secretId: number, now: number): Promise<void> {
    await this.dal.upsertGrant(trx, { group_id: groupId, secret_id: secretId, created_at: now, row_mac: this.rowIntegrity.grantMac({ groupId, secretId }) });
  }

  revoke(trx: Transaction, groupId: number, secretId: number): Promise<void> {
    return this.dal.deleteGrant(trx, groupId, secretId);
  }

  /** A deleted secret keeps no grants. */
  revokeAllOf(trx: Transaction, secretId: number): Promise<void> {
    return this.dal.deleteGrantsOfSecret(trx, secretId);
  }

  /** Adds the client to the group (idempotent); the membership row carries its integrity MAC. */
  addMember(trx: Transaction, groupId: number, clientId: number, now: number): Promise<void> {
    return this.dal.upsertMembership(trx, { group_id: groupId, client_id: clientId, created_at: now, row_mac: this.rowIntegrity.membershipMac({ clientId, groupId }) });
  }

  removeMember(trx: Transaction, groupId: number, clientId: number): Promise<void> {
    return this.dal.deleteMembership(trx, groupId, clientId);
  }

  /** Adds and removes memberships between the given clients and the named groups, audited. */
  async changeMemberships(
    trx: Transaction,
    record: (input: AuditEventInput) => Promise<unknown>,
    principal: Principal,
    meta: RequestMeta,
    clients: Array<{ id: number; name: string }>,
    addGroups: string[],
    removeGroups: string[],
    now: number,
  ): Promise<void> {
    const rows = await this.resolveGroups([...new Set([...addGroups, ...removeGroups])], trx);
    const idOf = (n: string) => rows.find((r) => r.name === n)!.id;
    for (const client of clients) {
      for (const g of new Set(addGroups)) {
        await this.addMember(trx, idOf(g), client.id, now);
        await record({ actor: actorOf(principal), action: 'membership.add', resource: { kind: 'client', name: client.name }, outcome: 'allow', details: { group: g }, request: meta });
      }
      for (const g of new Set(removeGroups)) {
        await this.dal.deleteMembership(trx, idOf(g), client.id);
        await record({ actor: actorOf(principal), action: 'membership.remove', resource: { kind: 'client', name: client.name }, outcome: 'allow', details: { group: g }, request: meta });
      }
    }
  }

  /** A deleted client keeps no memberships. */
  removeClient(trx: Transaction, clientId: number): Promise<void> {
    return this.dal.deleteMembershipsOfClient(trx, clientId);
  }

  groupsOfSecret(secretId: number, trx?: Queryable): Promise<string[]> {
    return this.dal.groupNamesOfSecret(secretId, trx);
  }

  groupsOfClient(clientId: number, trx?: Queryable): Promise<string[]> {
    return this.dal.groupNamesOfClient(clientId, trx);
  }

  secretsOfGroup(groupId: number, trx?: Queryable): Promise<string[]> {
    return this.dal.secretNamesOfGroup(groupId, trx);
  }

  clientsOfGroup(groupId: number, trx?: Queryable): Promise<string[]> {
    return this.dal.clientNamesOfGroup(groupId, trx);
  }

  /**
   * allowed_audiences of each group the client is in (null: that group does not restrict); a
   * membership whose MAC does not verify adds none.
   */
  async audiencesOfClientGroups(clientId: number): Promise<Array<string | null>> {
    const rows = await this.dal.audiencesOfClientGroups(clientId);
    return rows.filter((r) => !this.rowIntegrity.checkMembership({ clientId, groupId: r.group_id }, r.row_mac)).map((r) => r.allowed_audiences);
  }

  accessRows(): Promise<AccessRowRecord[]> {
    return this.dal.accessRows();
  }

  /** MACs for membership rows from before migration 011; the number of rows sealed. */
  async backfillMembershipMacs(trx: Transaction): Promise<number> {
    const rows = await this.dal.membershipsWithoutMac(trx);
    for (const m of rows) await this.dal.setMembershipMac(trx, m.client_id, m.group_id, this.rowIntegrity.membershipMac({ clientId: m.client_id, groupId: m.group_id }));
    return rows.length;
  }

  /** MACs for grant rows from before migration 007; the number of rows sealed. */
  async backfillGrantMacs(trx: Transaction): Promise<number> {
    const rows = await this.dal.grantsWithoutMac(trx);
    for (const g of rows) await this.dal.setGrantMac(trx, g.group_id, g.secret_id, this.rowIntegrity.grantMac({ groupId: g.group_id, secretId: g.secret_id }));
    return rows.length;
  }
}
