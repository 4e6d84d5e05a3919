/**
 * Trust policies: versioned (every change is a row in trust_policy_versions; versions are never
 * reused, not even after delete + re-create) and audited (policy.create|update|delete).
 */
import type { AuditService } from '../../audit/audit-service.js';
import { ConflictError, NotFoundError, PreconditionFailedError } from '../../core/errors.js';
import type { RequestMeta } from '../../core/principal.js';
import { parseWith } from '../../core/validation.js';
import { actorOf, principalLabel, type Principal } from '../../identity/identity-types.js';
import { rethrowUniqueAsConflictFn } from '../../identity/identity-util.js';
import { iso, type Clock } from '../../core/clock.js';
import type { Database, Transaction } from '../../db/database.js';
import type { EgressPolicy } from '../registry/egress-policy.js';
import { unknownSigningKeysError, type SigningKeysService } from '../signing/signing-keys-service.js';
import { PolicyDal, type PolicyRow, type PolicyVersionRow } from './policy-dal.js';
import { policyDocumentSchema, policyDocumentSchemaFor, type PolicyDocument, type StoredPolicy } from './policy-schema.js';

export interface PolicyView {
  name: string;
  version: number;
  document: PolicyDocument;
  updatedBy: string;
  createdAt: string;
  updatedAt: string;
}

/** One recorded change of a policy: a delete has no document. */
export interface PolicyVersionView {
  version: number;
  change: 'create' | 'update' | 'delete';
  document: PolicyDocument | null;
  updatedBy: string;
  at: string;
}

function toVersionView(row: PolicyVersionRow): PolicyVersionView {
  return {
    version: Number(row.version),
    change: row.change,
    document: row.document === null ? null : (JSON.parse(row.document) as PolicyDocument),
    updatedBy: row.changed_by,
    at: iso(Number(row.changed_at)) as string,
  };
}

function toView(row: PolicyRow): PolicyView {
  return {
    name: row.name,
    version: Number(row.version),
    document: JSON.parse(row.document) as PolicyDocument,
    updatedBy: row.updated_by,
    createdAt: iso(Number(row.created_at)) as string,
    updatedAt: iso(Number(row.updated_at)) as string,
  };
}

export class PolicyService {
  /** Parsed documents by name@version: stored documents are immutable per version. */
  private readonly parsed = new Map<string, PolicyDocument>();

  private readonly schema;
  private readonly dal: PolicyDal;

  constructor(
    private readonly deps: {
      db: Database;
      audit: AuditService;
      clock: Clock;
      egress?: EgressPolicy;
      /** resolves the broker signing keys a policy names (cosign.keys) */
      signingKeys: Pick<SigningKeysService, 'unknownNames'>;
    },
  ) {
    this.dal = new PolicyDal(deps.db);
    const egress = deps.egress;
    this.schema = egress ? policyDocumentSchemaFor({ allowsPlainHttp: (url) => egress.allowsPlainHttp(url) }) : policyDocumentSchema;
  }

  parseDocument(body: unknown): PolicyDocument {
    return parseWith(this.schema, body);
  }

  /**
   * Refuses a document that names what does not exist (400 `unknown_reference`), instead of
   * storing it and failing at every decision. The Notary block's references are checked by the
   * schema (policy-schema.ts notaryReferenceIssues): they need no lookup. Signing keys are never
   * deleted (only disabled, which a policy may still name), so checking before the write's
   * transaction leaves no window; a key missing later anyway (a row removed by hand) makes the
   * gate deny with "signing key(s) not found", never a 500.
   */
  private async checkReferences(doc: PolicyDocument): Promise<void> {
    const keys = doc.cosign?.keys ?? [];
    const named = keys.filter((k) => !k.trimStart().startsWith('-----BEGIN'));
    const unknown = await this.deps.signingKeys.unknownNames(named);
    if (unknown.length) throw unknownSigningKeysError('policy', unknown, (n) => `cosign.keys.${keys.indexOf(n)}`);
  }

  private async nextVersion(trx: Transaction, name: string): Promise<number> {
    return (await this.dal.latestVersion(trx, name)) + 1;
  }

  async create(principal: Principal, meta: RequestMeta, doc: PolicyDocument): Promise<PolicyView> {
    await this.checkReferences(doc);
    const now = this.deps.clock();
    const by = principalLabel(principal);
    return this.deps.audit
      .transact(async (trx, record) => {
        if (await this.dal.find(doc.name, trx)) {
          throw new ConflictError(`trust policy ${doc.name} already exists`, 'already_exists');
        }
        const version = await this.nextVersion(trx, doc.name);
        const document = JSON.stringify(doc);
        await this.dal.insert(trx, { name: doc.name, version, document, updated_by: by, created_at: now, updated_at: now });
        await this.dal.recordVersion(trx, { name: doc.name, version, document, change: 'create', changed_by: by, changed_at: now });
        await record({
          actor: actorOf(principal),
          action: 'policy.create',
          resource: { kind: 'trust-policy', name: doc.name },
          outcome: 'allow',
          details: { version, mode: doc.mode, images: doc.images },
          request: meta,
        });
        return this.get(doc.name, trx);
      })
      .catch(rethrowUniqueAsConflictFn(`trust policy ${doc.name} already exists`));
  }

  async replace(principal: Principal, meta: RequestMeta, name: string, doc: PolicyDocument, ifMatch?: number): Promise<PolicyView> {
    await this.checkReferences(doc);
    const now = this.deps.clock();
    const by = principalLabel(principal);
    return this.deps.audit
      .transact(async (trx, record) => {
        const current = await this.dal.find(name, trx);
        if (!current) throw new NotFoundError(`trust policy ${name}`);
        if (ifMatch !== undefined && Number(current.version) !== ifMatch) {
          throw new PreconditionFailedError(`trust policy ${name} is at version ${current.version}, not ${ifMatch}`);
        }
        const version = Math.max(Number(current.version), await this.nextVersion(trx, name) - 1) + 1;
        const document = JSON.stringify(doc);
        const updated = await this.dal.update(trx, name, current.version, { version, document, updated_by: by, updated_at: now });
        if (!updated) throw new ConflictError(`trust policy ${name} changed concurrently; retry`);
        await this.dal.recordVersion(trx, { name, version, document, change: 'update', changed_by: by, changed_at: now });
        await record({
          actor: actorOf(principal),
          action: 'policy.update',
          resource: { kind: 'trust-policy', name },
          outcome: 'allow',
          details: { version, previousVersion: Number(current.version), mode: doc.mode, images: doc.images },
          request: meta,
        });
        return this.get(name, trx);
      })
      .catch(rethrowUniqueAsConflictFn(`trust policy ${name} changed concurrently; retry`));
  }

  async remove(principal: Principal, meta: RequestMeta, name: string): Promise<void> {
    const now = this.deps.clock();
    await this.deps.audit
      .transact(async (trx, record) => {
        const current = await this.dal.find(name, trx);
        if (!current) throw new NotFoundError(`trust policy ${name}`);
        const version = Number(current.version) + 1;
        await this.dal.delete(trx, name);
        await this.dal.recordVersion(trx, {
          name,
          version,
          document: null,
          change: 'delete',
          changed_by: principalLabel(principal),
          changed_at: now,
        });
        await record({
          actor: actorOf(principal),
          action: 'policy.delete',
          resource: { kind: 'trust-policy', name },
          outcome: 'allow',
          details: { version, previousVersion: Number(current.version) },
          request: meta,
        });
      })
      .catch(rethrowUniqueAsConflictFn(`trust policy ${name} changed concurrently; retry`));
  }

  /** Pass a write's transaction to describe the state that transaction produced (and its ETag), not a later one. */
  async get(name: string, trx?: Transaction): Promise<PolicyView> {
    const row = await this.dal.find(name, trx);
    if (!row) throw new NotFoundError(`trust policy ${name}`);
    return toView(row);
  }

  /**
   * Every version of a policy, newest first, with the document each one stored (null for a
   * delete). A deleted policy keeps its history; a name that never had a version is 404.
   */
  async versions(name: string): Promise<PolicyVersionView[]> {
    const rows = await this.dal.versions(name);
    if (rows.length === 0) throw new NotFoundError(`trust policy ${name}`);
    return rows.map(toVersionView);
  }

  async list(opts: { after?: string; limit: number }): Promise<PolicyView[]> {
    return (await this.dal.list(opts)).map(toView);
  }

  /** Every current policy, parsed (for selection). */
  async all(): Promise<StoredPolicy[]> {
    const rows = await this.dal.all();
    return rows.map((r) => {
      const key = `${r.name}@${r.version}`;
      let doc = this.parsed.get(key);
      if (!doc) {
        doc = JSON.parse(r.document) as PolicyDocument;
        if (this.parsed.size > 5000) this.parsed.clear();
        this.parsed.set(key, doc);
      }
      return { name: r.name, version: Number(r.version), document: doc };
    });
  }
}
