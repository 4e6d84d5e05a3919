import type { AuditService } from '../audit/audit-service.js';
import type { AuditEventInput } from '../audit/audit-types.js';
import { open, seal, DecryptionError } from '../crypto/envelope.js';
import { KeyProviderError, type KeyProvider } from '../crypto/key-provider.js';
import type { SystemKeys } from '../crypto/system-keys.js';
import type { AccessService, FoundSecret } from '../access/access-service.js';
import type { Database, Queryable, Transaction } from '../db/database.js';
import { AuditUnavailableError, ConflictError, DomainError, ForbiddenError, IntegrityFailureError, InvalidInputError, NotFoundError, PreconditionFailedError, TooLargeError, UnavailableError } from '../core/errors.js';
import { noTelemetry, type DeliveryReason, type DeliveryRoute, type Telemetry } from '../core/telemetry.js';
import { DatabaseUnavailableError } from '../db/db-errors.js';
import type { RequestMeta, ClientPrincipal } from '../core/principal.js';
import { iso, type Clock } from '../core/clock.js';
import { actorOf, principalLabel, type Principal } from '../identity/identity-types.js';
import { rethrowUniqueAsConflictFn } from '../identity/identity-util.js';
import { SecretsDal, type NewSecretVersionRow, type SecretListFilter, type SecretRowChanges } from './secrets-dal.js';
import { integrityFailure, type RowIntegrity } from './row-integrity.js';
import {
  MAX_CONTENT_BYTES,
  secretAad,
  type FileMetadata,
  type SecretRecord,
  type SecretVersionRecord,
} from './secrets-types.js';

export interface SecretsServiceDeps {
  db: Database;
  access: AccessService;
  keyProvider: KeyProvider;
  systemKeys: SystemKeys;
  audit: AuditService;
  clock: Clock;
  /** MACs on the rows that decide who reads which version (row-integrity.ts). */
  rowIntegrity: RowIntegrity;
  /** Whether a delegate (the Docker plugin) may act for a client: identity decides (ClientsService.delegatedClient). */
  delegation: { delegatedClient(delegateId: number, target: string): Promise<{ id: number; name: string } | undefined> };
  /** Deliveries by outcome for /metrics (bounded labels only). */
  telemetry?: Telemetry;
}

/** The metrics reason of a delivery that failed (rather than being refused). */
function failureReason(err: unknown): DeliveryReason {
  if (err instanceof IntegrityFailureError) return 'integrity';
  if (err instanceof AuditUnavailableError) return 'audit_unavailable';
  if (err instanceof DatabaseUnavailableError) return 'database';
  if (err instanceof UnavailableError && err.code === 'key_provider_unavailable') return 'key_provider';
  return 'other';
}

/**
 * A read by a delegate for another client: the secrets are those granted to `client`, the
 * audit actor stays the delegate, and the events carry `context` (which service, task, image).
 */
export interface OnBehalfOf {
  client: { id: number; name: string };
  context: Record<string, string>;
}

export interface CreateSecretInput {
  name: string;
  content: Buffer;
  description?: string;
  type?: string;
  labels?: Record<string, string>;
  metadata?: FileMetadata;
  expiry?: number | null;
  groups?: string[];
}

export interface SecretDetail {
  name: string;
  description: string;
  type: string;
  labels: Record<string, string>;
  metadata: FileMetadata;
  expiry: string | null;
  version: number;
  latestVersion: number;
  checksum: string;
  size: number;
  createdBy: string;
  createdAt: string;
  updatedBy: string;
  updatedAt: string;
  groups?: string[];
}

export interface DeliveredSecret {
  name: string;
  version: number;
  content: string;
  checksum: string;
  metadata: FileMetadata;
  labels: Record<string, string>;
  expiry: string | null;
  updatedAt: string;
}

/** Decodes exactly one of `content` (base64) or `value` (UTF-8) and enforces the size cap. */
export function decodeContent(body: { content?: string; value?: string }): Buffer {
  if ((body.content === undefined) === (body.value === undefined)) {
    throw new InvalidInputError('give exactly one of content (base64) or value (UTF-8)');
  }
  if (body.content !== undefined && body.content.length % 4 !== 0) {
    throw new InvalidInputError('content must be padded base64');
  }
  const bytes = body.content !== undefined ? Buffer.from(body.content, 'base64') : Buffer.from(body.value!, 'utf8');
  if (bytes.length > MAX_CONTENT_BYTES) {
    throw new TooLargeError(`secret content is ${bytes.length} bytes; the limit is ${MAX_CONTENT_BYTES}`);
  }
  return bytes;
}

export class SecretsService {
  readonly dal: SecretsDal;
  private readonly telemetry: Telemetry;

  constructor(private readonly deps: SecretsServiceDeps) {
    this.dal = new SecretsDal(deps.db);
    this.telemetry = deps.telemetry ?? noTelemetry;
  }

  private event(principal: Principal, meta: RequestMeta | undefined, action: string, name: string, extra: Partial<AuditEventInput> = {}): AuditEventInput {
    return {
      actor: actorOf(principal),
      action,
      resource: { kind: 'secret', name },
      outcome: 'allow',
      request: meta,
      ...extra,
    };
  }

  private async checksum(content: Buffer): Promise<string> {
    return this.deps.systemKeys.hmacHex('checksum', content);
  }

  private async sealVersion(secretId: number, version: number, name: string, content: Buffer, by: string): Promise<NewSecretVersionRow> {
    const sealed = await seal(this.deps.keyProvider, content, secretAad(secretId, version, name));
    const checksum = await this.checksum(content);
    return {
      row_mac: this.deps.rowIntegrity.versionMac({ secretId, version, checksum, size: content.length }),
      secret_id: secretId,
      version,
      iv: sealed.iv,
      ciphertext: sealed.ciphertext,
      wrapped_key: sealed.wrappedKey,
      root_key_version: sealed.rootKeyVersion,
      checksum,
      size: content.length,
      created_by: by,
      created_at: this.deps.clock(),
    };
  }

  async decrypt(secret: Pick<SecretRecord, 'id' | 'name'>, version: SecretVersionRecord): Promise<Buffer> {
    try {
      return await open(
        this.deps.keyProvider,
        { iv: version.iv, ciphertext: version.ciphertext, wrappedKey: version.wrappedKey, rootKeyVersion: version.rootKeyVersion },
        secretAad(secret.id, version.version, secret.name),
      );
    } catch (err) {
      if (err instanceof DecryptionError || (err instanceof KeyProviderError && err.integrity)) {
        throw integrityFailure('the stored ciphertext did not authenticate; it has been tampered with or moved');
      }
      throw new UnavailableError('the key provider could not unwrap the data key', { code: 'key_provider_unavailable' });
    }
  }

  /** The highest version stored for the locked secret (its latest_version, unless the row was replayed). */
  private async newestOf(trx: Transaction, secret: SecretRecord): Promise<number> {
    return Math.max(secret.latestVersion, (await this.dal.newestVersion(secret.id, trx)) ?? 0);
  }

  async requireLive(name: string, trx?: Queryable): Promise<SecretRecord> {
    const secret = await this.dal.findLive(name, trx);
    if (!secret) throw new NotFoundError(`secret ${name}`);
    return secret;
  }

  /** Pass a write's transaction to describe the state that transaction produced. */
  async detail(secret: SecretRecord, withGroups = true, trx?: Queryable): Promise<SecretDetail> {
    const version = await this.dal.getVersion(secret.id, secret.currentVersion, trx);
    return {
      ...this.summary(secret, version!),
      ...(withGroups ? { groups: await this.deps.access.groupsOfSecret(secret.id, trx) } : {}),
    };
  }

  /**
   * A write answers with what its own transaction wrote: the detail is read inside the
   * transaction, after the write and while the secret row is still locked, never again after
   * the commit (when another writer's version may already be current).
   */
  private async writtenDetail(trx: Transaction, name: string): Promise<SecretDetail> {
    return this.detail(await this.requireLive(name, trx), true, trx);
  }

  private async requireLocked(trx: Transaction, name: string): Promise<SecretRecord> {
    const secret = await this.dal.lockLive(trx, name);
    if (!secret) throw new NotFoundError(`secret ${name}`);
    return secret;
  }

  summary(secret: SecretRecord, version: { checksum: string; size: number }): SecretDetail {
    return {
      name: secret.name,
      description: secret.description,
      type: secret.type,
      labels: secret.labels,
      metadata: secret.metadata,
      expiry: iso(secret.expiry),
      version: secret.currentVersion,
      latestVersion: secret.latestVersion,
      checksum: version.checksum,
      size: version.size,
      createdBy: secret.createdBy,
      createdAt: iso(secret.createdAt)!,
      updatedBy: secret.updatedBy,
      updatedAt: iso(secret.updatedAt)!,
    };
  }

  async create(principal: Principal, meta: RequestMeta, input: CreateSecretInput): Promise<SecretDetail> {
    const by = principalLabel(principal);
    const now = this.deps.clock();
    const groups = [...new Set(input.groups ?? [])];
    return this.deps.audit.transact(async (trx, record) => {
      if (await this.dal.findLive(input.name, trx)) throw new ConflictError(`secret ${input.name} already exists`, 'already_exists');
      const groupRows = await this.deps.access.resolveGroups(groups, trx);
      const labels = input.labels ?? {};
      const id = await this.dal.insertSecret(trx, {
        name: input.name,
        description: input.description ?? '',
        type: input.type ?? 'opaque',
        labels: JSON.stringify(labels),
        metadata: JSON.stringify(input.metadata ?? {}),
        expiry: input.expiry ?? null,
        current_version: 1,
        latest_version: 1,
        created_by: by,
        created_at: now,
        updated_by: by,
        updated_at: now,
      });
      await this.dal.updateSecret(trx, id, { row_mac: this.deps.rowIntegrity.secretMac({ id, name: input.name, currentVersion: 1, latestVersion: 1, deletedAt: null }) });
      await this.dal.replaceLabels(trx, id, labels);
      await this.dal.insertVersion(trx, await this.sealVersion(id, 1, input.name, input.content, by));
      for (const g of groupRows) await this.deps.access.grant(trx, g.id, id, now);
      await record(this.event(principal, meta, 'secret.create', input.name, { details: { version: 1, groups } }));
      for (const g of groupRows) {
        await record(this.event(principal, meta, 'grant.add', input.name, { details: { group: g.name } }));
      }
      return this.writtenDetail(trx, input.name);
    }).catch(rethrowUniqueAsConflictFn(`secret ${input.name} already exists`));
  }

  /** The live secret, or undefined (for other domains: they call this service, not SecretsDal). */
  findLive(name: string): Promise<SecretRecord | undefined> {
    return this.dal.findLive(name);
  }

  /** The stored version `version` of the secret (sealed; decrypt() opens it). */
  getVersion(secretId: number, version: number): Promise<SecretVersionRecord | undefined> {
    return this.dal.getVersion(secretId, version);
  }

  /** id and name of the named live secrets (those that exist). */
  liveIdsByName(names: string[], trx?: Queryable): Promise<Array<{ id: number; name: string }>> {
    return this.dal.liveIdsByName(names, trx);
  }

  /** Names of the live secrets, sorted (reports). */
  liveNames(): Promise<string[]> {
    return this.dal.liveNames();
  }

  /** Live secrets whose expiry is before `before`, soonest first (reports). */
  expiringBefore(before: number) {
    return this.dal.expiringBefore(before);
  }

  async list(filter: SecretListFilter) {
    const rows = await this.dal.list(filter);
    return rows.map((r) => this.summary(r, r));
  }

  async update(
    principal: Principal,
    meta: RequestMeta,
    name: string,
    patch: { description?: string; labels?: Record<string, string>; metadata?: FileMetadata; expiry?: number | null },
  ): Promise<SecretDetail> {
    return this.deps.audit.transact(async (trx, record) => {
      const secret = await this.requireLocked(trx, name);
      const changes: SecretRowChanges = { updated_by: principalLabel(principal), updated_at: this.deps.clock() };
      if (patch.description !== undefined) changes.description = patch.description;
      if (patch.labels !== undefined) {
        changes.labels = JSON.stringify(patch.labels);
        await this.dal.replaceLabels(trx, secret.id, patch.labels);
      }
      if (patch.metadata !== undefined) changes.metadata = JSON.stringify(patch.metadata);
      if (patch.expiry !== undefined) changes.expiry = patch.expiry;
      await this.dal.updateSecret(trx, secret.id, changes);
      await record(this.event(principal, meta, 'secret.update', name, { details: { fields: Object.keys(patch).sort() } }));
      return this.writtenDetail(trx, name);
    });
  }

  async addVersion(
    principal: Principal,
    meta: RequestMeta,
    name: string,
    content: Buffer,
    conditions: { cas?: number; ifMatch?: number },
  ): Promise<SecretDetail> {
    const by = principalLabel(principal);
    return this.deps.audit.transact(async (trx, record) => {
      const secret = await this.requireLocked(trx, name);
      const current = secret.currentVersion;
      if (conditions.ifMatch !== undefined && conditions.ifMatch !== current) {
        throw new PreconditionFailedError(`If-Match names version ${conditions.ifMatch}, but the current version is ${current}`);
      }
      if (conditions.cas !== undefined && conditions.cas !== current) {
        throw new ConflictError(`check-and-set failed: cas is ${conditions.cas}, but the current version is ${current}`, 'cas_mismatch');
      }
      // past the newest stored version, not the row's latest_version: after a replayed older row
      // (refused on every read) a new version is how an operator repairs it
      const version = (await this.newestOf(trx, secret)) + 1;
      await this.dal.insertVersion(trx, await this.sealVersion(secret.id, version, name, content, by));
      await this.dal.updateSecret(trx, secret.id, {
        current_version: version,
        latest_version: version,
        updated_by: by,
        updated_at: this.deps.clock(),
        row_mac: this.deps.rowIntegrity.secretMac({ id: secret.id, name, currentVersion: version, latestVersion: version, deletedAt: null }),
      });
      await record(this.event(principal, meta, 'secret.version.create', name, { details: { version, previous: current } }));
      return this.writtenDetail(trx, name);
    }).catch(rethrowUniqueAsConflictFn('another version was written concurrently; retry with check-and-set'));
  }

  async listVersions(name: string) {
    const secret = await this.requireLive(name);
    const versions = await this.dal.listVersions(secret.id);
    return versions.map((v) => ({
      version: v.version,
      current: v.version === secret.currentVersion,
      checksum: v.checksum,
      size: v.size,
      createdBy: v.createdBy,
      createdAt: iso(v.createdAt),
    }));
  }

  async rollback(principal: Principal, meta: RequestMeta, name: string, version: number): Promise<SecretDetail> {
    return this.deps.audit.transact(async (trx, record) => {
      const secret = await this.requireLocked(trx, name);
      if (!(await this.dal.getVersion(secret.id, version, trx))) throw new NotFoundError(`version ${version} of secret ${name}`);
      // latest_version is the newest stored version, which also repairs a replayed older row
      const latestVersion = await this.newestOf(trx, secret);
      await this.dal.updateSecret(trx, secret.id, {
        current_version: version,
        latest_version: latestVersion,
        updated_by: principalLabel(principal),
        updated_at: this.deps.clock(),
        row_mac: this.deps.rowIntegrity.secretMac({ id: secret.id, name, currentVersion: version, latestVersion, deletedAt: null }),
      });
      await record(this.event(principal, meta, 'secret.rollback', name, { details: { version, previous: secret.currentVersion } }));
      return this.writtenDetail(trx, name);
    });
  }

  async remove(principal: Principal, meta: RequestMeta, name: string): Promise<void> {
    await this.deps.audit.transact(async (trx, record) => {
      const secret = await this.requireLocked(trx, name);
      const now = this.deps.clock();
      const rowMac = this.deps.rowIntegrity.secretMac({ id: secret.id, name, currentVersion: secret.currentVersion, latestVersion: secret.latestVersion, deletedAt: now });
      await this.dal.updateSecret(trx, secret.id, { deleted_at: now, updated_by: principalLabel(principal), updated_at: now, row_mac: rowMac });
      await this.deps.access.revokeAllOf(trx, secret.id);
      await record(this.event(principal, meta, 'secret.delete', name, { details: { version: secret.currentVersion } }));
    });
  }

  /**
   * Brings back the most recently deleted secret of that name (Vault's undelete), if no live
   * secret has taken the name since. Its grants were revoked by the deletion and stay revoked:
   * who may read it again is granted anew. With `versions`, only if they name the version that
   * was current when it was deleted (a 404 otherwise).
   */
  async restore(principal: Principal, meta: RequestMeta, name: string, versions?: number[]): Promise<SecretDetail> {
    return this.deps.audit.transact(async (trx, record) => {
      if (await this.dal.findLive(name, trx)) throw new ConflictError(`a live secret ${name} exists; only a deleted secret can be restored`, 'already_exists');
      const secret = await this.dal.lockNewestDeleted(trx, name);
      if (!secret) throw new NotFoundError(`deleted secret ${name}`);
      if (versions && !versions.includes(secret.currentVersion)) throw new NotFoundError(`deleted version ${versions.join(', ')} of secret ${name}`);
      const rowMac = this.deps.rowIntegrity.secretMac({ id: secret.id, name, currentVersion: secret.currentVersion, latestVersion: secret.latestVersion, deletedAt: null });
      await this.dal.updateSecret(trx, secret.id, { deleted_at: null, updated_by: principalLabel(principal), updated_at: this.deps.clock(), row_mac: rowMac });
      await record(this.event(principal, meta, 'secret.restore', name, { details: { version: secret.currentVersion, deletedAt: iso(secret.deletedAt) } }));
      return this.writtenDetail(trx, name);
    }).catch(rethrowUniqueAsConflictFn(`a live secret ${name} exists; only a deleted secret can be restored`));
  }

  /**
   * The stored version `version` (the current one when undefined) of a live secret, for a read
   * that is not a client's (no grant decides it), after the same row checks as a client's read:
   * the secret row's MAC, that it is not behind its newest version (a replayed older row with
   * its then valid MAC), and the version row's MAC. A failed check is an audited refusal.
   */
  private async verifiedVersion(actor: AuditEventInput['actor'], meta: RequestMeta | undefined, secret: SecretRecord, version: number | undefined, via: Record<string, unknown>): Promise<SecretVersionRecord> {
    const [v, newestVersion] = await Promise.all([this.dal.getVersion(secret.id, version ?? secret.currentVersion), this.dal.newestVersion(secret.id)]);
    if (!v) throw new NotFoundError(`version ${version} of secret ${secret.name}`);
    await this.assertIntact(actor, meta, [{ secret, version: v, newestVersion: newestVersion ?? v.version }], via);
    return v;
  }

  /**
   * The current version of a live secret for the broker's own use (registry credentials), after
   * the row checks of every read; a failed check is refused and on the record with `via`.
   */
  async currentVersionForBroker(secret: SecretRecord, via: Record<string, unknown>): Promise<SecretVersionRecord> {
    return this.verifiedVersion({ kind: 'system', name: 'keywarden' }, undefined, secret, undefined, via);
  }

  /** An operator's audited read of a value (admin and writer only). */
  async readContent(principal: Principal, meta: RequestMeta, name: string, version?: number) {
    const secret = await this.requireLive(name);
    const v = await this.verifiedVersion(actorOf(principal), meta, secret, version, { via: 'operator' });
    const content = await this.decrypt(secret, v);
    await this.deps.audit.record(this.event(principal, meta, 'secret.read', name, { details: { version: v.version, via: 'operator' } }));
    return { name, version: v.version, content: content.toString('base64'), checksum: v.checksum, size: v.size };
  }

  /**
   * A client's read: the group rule, decryption, and the committed audit event, then the value.
   * With `onBehalfOf`, the group rule is that client's (a delegated read); the actor is still
   * the caller.
   */
  async deliver(principal: ClientPrincipal, meta: RequestMeta, names: string[], onBehalfOf?: OnBehalfOf): Promise<DeliveredSecret[]> {
    const route: DeliveryRoute = onBehalfOf ? 'delegated' : names.length > 1 ? 'batch' : 'client';
    return (await this.deliverFound(route, principal, meta, names, onBehalfOf)).map((d) => d.delivered);
  }

  /**
   * A client's read of one secret at `version` (its current version when undefined): deliver()'s
   * group rule, integrity check and audited read, for the Vault KV routes (`?version=N`). A
   * version the secret does not have is a denied read, like an ungranted secret.
   */
  async deliverVersion(principal: ClientPrincipal, meta: RequestMeta, name: string, version?: number): Promise<DeliveredSecret & { createdAt: string; type: string }> {
    const [d] = await this.deliverFound('vault', principal, meta, [name], undefined, version);
    return { ...d!.delivered, createdAt: iso(d!.found.version.createdAt)!, type: d!.found.secret.type };
  }

  /**
   * The secret as the client may read it (the group rule and every row integrity check of a
   * read), without reading its value: for routes that show a granted secret's metadata (Vault
   * KV metadata). Not granted and not there are one 404; a failed check is an audited refusal.
   */
  async grantedIntact(principal: ClientPrincipal, meta: RequestMeta, name: string, via: Record<string, unknown>): Promise<FoundSecret> {
    const found = await this.deps.access.findForClient(principal.id, name);
    if (!found) throw new NotFoundError(`secret ${name}`);
    await this.assertIntact(actorOf(principal), meta, [found], via);
    return found;
  }

  /** Counts the request's secrets for /metrics: delivered, refused (counted where refused), or failed. */
  private async deliverFound(
    route: DeliveryRoute,
    principal: ClientPrincipal,
    meta: RequestMeta,
    names: string[],
    onBehalfOf?: OnBehalfOf,
    version?: number,
  ): Promise<Array<{ delivered: DeliveredSecret; found: FoundSecret }>> {
    const refused = { counted: false };
    try {
      const delivered = await this.deliverCounted(route, refused, principal, meta, names, onBehalfOf, version);
      this.telemetry.secretDeliveries(route, 'granted', delivered.length);
      return delivered;
    } catch (err) {
      if (!refused.counted) this.telemetry.secretDeliveries(route, failureReason(err), names.length);
      throw err;
    }
  }

  private async deliverCounted(
    route: DeliveryRoute,
    refused: { counted: boolean },
    principal: ClientPrincipal,
    meta: RequestMeta,
    names: string[],
    onBehalfOf?: OnBehalfOf,
    version?: number,
  ): Promise<Array<{ delivered: DeliveredSecret; found: FoundSecret }>> {
    const readerId = onBehalfOf?.client.id ?? principal.id;
    const via: Record<string, unknown> = onBehalfOf ? { ...onBehalfOf.context, via: 'delegated', onBehalfOf: onBehalfOf.client.name } : { via: 'client' };
    const found = await Promise.all(names.map((n) => this.deps.access.findForClient(readerId, n)));
    if (version !== undefined) {
      // the grant decides as for the current version; only the version row differs
      for (const [i, f] of found.entries()) {
        if (!f || f.version.version === version) continue;
        const v = await this.dal.getVersion(f.secret.id, version);
        found[i] = v ? { ...f, version: v } : undefined;
      }
    }
    if (found.some((f) => !f)) {
      const missing = names.filter((_, i) => !found[i]);
      await this.deps.audit.recordReads(
        missing.map((n) =>
          this.event(principal, meta, 'secret.read', n, {
            outcome: 'deny',
            reason: 'not found or not granted',
            ...(onBehalfOf || version !== undefined ? { details: { ...via, ...(version !== undefined ? { version } : {}) } } : {}),
          }),
        ),
        [],
      );
      refused.counted = true;
      this.telemetry.secretDeliveries(route, 'not_granted', missing.length);
      throw names.length === 1 ? new NotFoundError(`secret ${names[0]}`) : new NotFoundError('one or more of the requested secrets');
    }
    const items = found as Array<NonNullable<(typeof found)[number]>>;
    await this.assertIntact(actorOf(principal), meta, items, via);
    const contents = await Promise.all(items.map((f) => this.decrypt(f.secret, f.version)));
    const now = this.deps.clock();
    await this.deps.audit.recordReads(
      items.map((f) => this.event(principal, meta, 'secret.read', f.secret.name, { details: { ...via, version: f.version.version, group: f.group } })),
      // the last-read mark is the reading client's: the value reached its container
      items.map((f) => ({ clientId: readerId, secretId: f.secret.id, version: f.version.version, at: now })),
    );
    return items.map((f, i) => ({
      found: f,
      delivered: {
        name: f.secret.name,
        version: f.version.version,
        content: contents[i].toString('base64'),
        checksum: f.version.checksum,
        metadata: f.secret.metadata,
        labels: f.secret.labels,
        expiry: iso(f.secret.expiry),
        updatedAt: iso(f.secret.updatedAt)!,
      },
    }));
  }

  /**
   * The client a delegate acts for, or a 403 not_delegated on the record. The same answer
   * whether the delegate was not given that client, or it is disabled or unknown. A delegation
   * changed outside the broker (its MAC does not verify) is a 503 integrity_failure, on the
   * record as an error.
   */
  private async delegatedClient(
    principal: ClientPrincipal,
    meta: RequestMeta,
    target: string,
    attempted: { action: string; resource: { kind: string; name: string } },
    context: Record<string, string>,
  ): Promise<OnBehalfOf> {
    let client: { id: number; name: string } | undefined;
    try {
      client = await this.deps.delegation.delegatedClient(principal.id, target);
    } catch (err) {
      if (!(err instanceof IntegrityFailureError)) throw err;
      await this.deps.audit.recordReads(
        [
          this.event(principal, meta, attempted.action, attempted.resource.name, {
            resource: attempted.resource,
            outcome: 'error',
            reason: err.detail,
            details: { ...context, via: 'delegated', onBehalfOf: target, integrity: 'row_mac' },
          }),
        ],
        [],
      );
      if (attempted.action === 'secret.read') this.telemetry.secretDeliveries('delegated', 'integrity', 1);
      throw err;
    }
    if (client) return { client, context };
    await this.deps.audit.recordReads(
      [
        this.event(principal, meta, attempted.action, attempted.resource.name, {
          resource: attempted.resource,
          outcome: 'deny',
          reason: 'not_delegated',
          details: { ...context, via: 'delegated', onBehalfOf: target },
        }),
      ],
      [],
    );
    // a refused secret read (not a refused listing) is a delivery denial
    if (attempted.action === 'secret.read') this.telemetry.secretDeliveries('delegated', 'not_delegated', 1);
    throw new ForbiddenError(`this client may not act for client ${target}`, 'not_delegated');
  }

  /** A delegate's read of one secret granted to `target` (the Docker plugin's secret provider). */
  async deliverDelegated(
    principal: ClientPrincipal,
    meta: RequestMeta,
    target: string,
    name: string,
    context: Record<string, string> = {},
  ): Promise<DeliveredSecret> {
    const onBehalfOf = await this.delegatedClient(principal, meta, target, { action: 'secret.read', resource: { kind: 'secret', name } }, context);
    const [secret] = await this.deliver(principal, meta, [name], onBehalfOf);
    return secret!;
  }

  /**
   * Every secret granted to `target`, for a delegate (the Docker plugin's volumes). With
   * content, each value is an audited read (one event per secret, in one batch); without it,
   * one audited secret.list event.
   */
  async listDelegated(
    principal: ClientPrincipal,
    meta: RequestMeta,
    target: string,
    options: { includeContent: boolean; context?: Record<string, string> },
  ): Promise<Array<Omit<DeliveredSecret, 'content'> & { content?: string }>> {
    const context = options.context ?? {};
    const onBehalfOf = await this.delegatedClient(principal, meta, target, { action: 'secret.list', resource: { kind: 'client', name: target } }, context);
    const granted = await this.deps.access.listForClient(onBehalfOf.client.id);
    if (options.includeContent && granted.length > 0) {
      return this.deliver(principal, meta, granted.map((r) => r.name), onBehalfOf);
    }
    await this.deps.audit.recordReads(
      [
        this.event(principal, meta, 'secret.list', target, {
          resource: { kind: 'client', name: target },
          details: { ...context, via: 'delegated', onBehalfOf: target, count: granted.length, includeContent: options.includeContent },
        }),
      ],
      [],
    );
    return granted.map((r) => ({
      name: r.name,
      version: r.currentVersion,
      checksum: r.checksum,
      metadata: r.metadata,
      labels: r.labels,
      expiry: iso(r.expiry),
      updatedAt: iso(r.updatedAt)!,
    }));
  }

  /** A row changed outside the broker fails the read closed, and the refusal is on the record. */
  private async assertIntact(actor: AuditEventInput['actor'], meta: RequestMeta | undefined, items: Array<Parameters<RowIntegrity['assertReadable']>[0] & { secret: { name: string } }>, via: Record<string, unknown>): Promise<void> {
    for (const f of items) {
      try {
        this.deps.rowIntegrity.assertReadable(f);
      } catch (err) {
        const reason = err instanceof DomainError ? err.detail : 'row integrity check failed';
        await this.deps.audit.recordReads(
          [{ actor, action: 'secret.read', resource: { kind: 'secret', name: f.secret.name }, outcome: 'error', reason, request: meta, details: { ...via, integrity: 'row_mac' } }],
          [],
        );
        throw err;
      }
    }
  }

  async listForClient(clientId: number) {
    const rows = await this.deps.access.listForClient(clientId);
    return rows.map((r) => ({
      name: r.name,
      version: r.currentVersion,
      checksum: r.checksum,
      size: r.size,
      metadata: r.metadata,
      labels: r.labels,
      expiry: iso(r.expiry),
      updatedAt: iso(r.updatedAt),
    }));
  }
}

