/**
 * Trust policies: versioned (every change is a row in trust_policy_versions; versions are never
 * reused, not even after delete + re-create) and audited (policy.create|update|delete).
 */
import type { Knex } from 'knex';
import type { AuditService } from '../../audit/audit-service.js';
import { problems } from '../../http/problem.js';
import type { RequestMeta } from '../../http/request-context.js';
import { parseWith } from '../../http/validation.js';
import { actorOf, principalLabel, type Principal } from '../../identity/identity-types.js';
import { iso, rethrowUniqueAsConflictFn } from '../../identity/identity-util.js';
import type { EgressPolicy } from '../registry/egress-policy.js';
import { policyDocumentSchema, policyDocumentSchemaFor, type PolicyDocument, type StoredPolicy } from './policy-schema.js';

export interface PolicyView {
  name: string;
  version: number;
  document: PolicyDocument;
  updatedBy: string;
  createdAt: string;
  updatedAt: string;
}

interface PolicyRow {
  name: string;
  version: number;
  document: string;
  updated_by: string;
  created_at: number | string;
  updated_at: number | string;
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

  constructor(private readonly deps: { db: Knex; audit: AuditService; clock: () => number; egress?: EgressPolicy }) {
    const egress = deps.egress;
    this.schema = egress ? policyDocumentSchemaFor({ allowsPlainHttp: (url) => egress.allowsPlainHttp(url) }) : policyDocumentSchema;
  }

  parseDocument(body: unknown): PolicyDocument {
    return parseWith(this.schema, body);
  }

  private async nextVersion(trx: Knex.Transaction, name: string): Promise<number> {
    const row = await trx('trust_policy_versions').where({ name }).max({ v: 'version' }).first();
    return Number(row?.v ?? 0) + 1;
  }

  async create(principal: Principal, meta: RequestMeta, doc: PolicyDocument): Promise<PolicyView> {
    const now = this.deps.clock();
    const by = principalLabel(principal);
    return this.deps.audit
      .transact(async (trx, record) => {
        if (await trx('trust_policies').where({ name: doc.name }).first()) {
          throw problems.conflict(`trust policy ${doc.name} already exists`, 'already_exists');
        }
        const version = await this.nextVersion(trx, doc.name);
        const document = JSON.stringify(doc);
        await trx('trust_policies').insert({ name: doc.name, version, document, updated_by: by, created_at: now, updated_at: now });
        await trx('trust_policy_versions').insert({ name: doc.name, version, document, change: 'create', changed_by: by, changed_at: now });
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
    const now = this.deps.clock();
    const by = principalLabel(principal);
    return this.deps.audit
      .transact(async (trx, record) => {
        const current = await trx('trust_policies').where({ name }).first();
        if (!current) throw problems.notFound(`trust policy ${name}`);
        if (ifMatch !== undefined && Number(current.version) !== ifMatch) {
          throw problems.preconditionFailed(`trust policy ${name} is at version ${current.version}, not ${ifMatch}`);
        }
        const version = Math.max(Number(current.version), await this.nextVersion(trx, name) - 1) + 1;
        const document = JSON.stringify(doc);
        const updated = await trx('trust_policies')
          .where({ name, version: current.version })
          .update({ version, document, updated_by: by, updated_at: now });
        if (updated !== 1) throw problems.conflict(`trust policy ${name} changed concurrently; retry`);
        await trx('trust_policy_versions').insert({ name, version, document, change: 'update', changed_by: by, changed_at: now });
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
        const current = await trx('trust_policies').where({ name }).first();
        if (!current) throw problems.notFound(`trust policy ${name}`);
        const version = Number(current.version) + 1;
        await trx('trust_policies').where({ name }).delete();
        await trx('trust_policy_versions').insert({
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
  async get(name: string, trx: Knex = this.deps.db): Promise<PolicyView> {
    const row = await trx('trust_policies').where({ name }).first();
    if (!row) throw problems.notFound(`trust policy ${name}`);
    return toView(row);
  }

  async list(opts: { after?: string; limit: number }): Promise<PolicyView[]> {
    const q = this.deps.db('trust_policies').orderBy('name').limit(opts.limit);
    if (opts.after !== undefined) q.where('name', '>', opts.after);
    return (await q).map(toView);
  }

  /** Every current policy, parsed (for selection). */
  async all(): Promise<StoredPolicy[]> {
    const rows = await this.deps.db('trust_policies').select('name', 'version', 'document');
    return rows.map((r: { name: string; version: number; document: string }) => {
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
