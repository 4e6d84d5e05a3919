import { z } from 'zod';
import { canonicalJson } from '../audit/canonical-json.js';
import { ConflictError, InvalidInputError, NotFoundError } from '../core/errors.js';
import type { Principal, RequestMeta, ClientPrincipal } from '../core/principal.js';
import { NAME_PATTERN, parseWith } from '../core/validation.js';
import type { SecretsService } from '../secrets/secrets-service.js';
import { MAX_CONTENT_BYTES } from '../secrets/secrets-types.js';

/**
 * The secret type that marks a Keywarden secret as a KV v2 secret: its content is the canonical
 * JSON of the data object. Keywarden sets a secret's type when it is created and never changes
 * it, so a KV secret stays one even when a native version write puts other bytes in it.
 */
export const KV_SECRET_TYPE = 'vault-kv/v2';

/** Vault's text for a check-and-set mismatch (clients and scripts match on it). */
export const CAS_MISMATCH = 'check-and-set parameter did not match the current version';

/** One KV path segment: a Keywarden name character other than '.', which separates segments in names. */
const SEGMENT = /^[A-Za-z0-9_-]+$/;

/**
 * A KV path → the Keywarden secret name: segments joined with '.' (`app/db` → `app.db`). Names
 * allow only [A-Za-z0-9._-], so '/' cannot be kept; '.' is the separator because it is the
 * natural one in names (`app.db.password`). The mapping is one to one: a KV segment may not
 * contain '.', and a name with an empty dot segment (`.env`, `a..b`, `x.`) has no KV path.
 */
export function kvPathToName(path: string): string {
  const segments = path.split('/');
  const bad = segments.find((s) => !SEGMENT.test(s));
  if (bad !== undefined) {
    throw new InvalidInputError(
      bad === ''
        ? `invalid path "${path}": empty path segment`
        : `invalid path "${path}": segment "${bad}" may use only letters, digits, '_' and '-' (Keywarden keeps the path as the secret name ${JSON.stringify(segments.join('.'))}, with '.' between segments)`,
    );
  }
  const name = segments.join('.');
  if (!NAME_PATTERN.test(name)) throw new InvalidInputError(`invalid path "${path}": longer than the 128 characters of a Keywarden secret name`);
  return name;
}

/** The KV path of a Keywarden secret name, or undefined for a name no KV path reaches. */
export function nameToKvPath(name: string): string | undefined {
  const segments = name.split('.');
  return segments.every((s) => SEGMENT.test(s)) ? segments.join('/') : undefined;
}

/** What a KV v2 version looks like in Vault's responses. */
export interface KvVersionMetadata {
  created_time: string;
  custom_metadata: Record<string, string> | null;
  deletion_time: string;
  destroyed: boolean;
  version: number;
}

/**
 * A KV secret's stored bytes → Vault's `data` object. Bytes that are not a JSON object (a
 * native secret, or a native version write to a KV secret) read as `{"value": <base64>}`, and
 * custom_metadata says so (`keywarden_encoding: base64`).
 */
export function kvDataOf(type: string, content: Buffer): { data: Record<string, unknown>; kvShaped: boolean } {
  if (type === KV_SECRET_TYPE) {
    try {
      const parsed: unknown = JSON.parse(content.toString('utf8'));
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) return { data: parsed as Record<string, unknown>, kvShaped: true };
    } catch {
      // not JSON: falls through to the opaque form
    }
  }
  return { data: { value: content.toString('base64') }, kvShaped: false };
}

/** A non-negative integer, or its decimal string (the Vault CLI sends `-cas=N` as a string). */
const versionNumber = (min: number) => z.union([z.number().int().min(min), z.string().regex(/^\d{1,15}$/).transform(Number).pipe(z.number().int().min(min))]);

/** The body of a KV v2 write. Vault ignores members it does not know; so does this. */
export const kvWriteSchema = z
  .object({
    data: z.record(z.string(), z.unknown(), { required_error: 'no data provided', invalid_type_error: 'data must be a JSON object' }).describe('Any JSON object; Keywarden stores its canonical JSON.'),
    options: z
      .object({ cas: versionNumber(0).optional().describe('0: write only if nothing is at the path; N: only if the current version is N.') })
      .passthrough()
      .nullable()
      .optional(),
  })
  .passthrough();

/** The body of delete, undelete and destroy: version numbers (a list, or Vault's comma-separated string). */
export const kvVersionsSchema = z
  .object({
    versions: z.union([
      z.array(versionNumber(1)).min(1),
      z.string().regex(/^\d{1,15}(,\s*\d{1,15})*$/).transform((s) => s.split(',').map((v) => Number(v.trim()))),
    ]),
  })
  .passthrough();

export function parseKvWrite(body: unknown): { data: Record<string, unknown>; cas?: number } {
  const parsed = parseWith(kvWriteSchema, body);
  return { data: parsed.data, cas: parsed.options?.cas };
}

export function parseVersions(body: unknown): number[] {
  return parseWith(kvVersionsSchema, body).versions;
}

function iso(at: string | null | undefined): string {
  return at ?? '';
}

/**
 * Vault's KV version 2 over Keywarden secrets: a KV path is a secret name (kvPathToName), a KV
 * version is a secret version, cas is Keywarden's check-and-set on the current version. Client
 * reads go through SecretsService's audited client-read path (group rule, row integrity, one
 * committed audit event per read); writes go through its create/addVersion/remove/restore,
 * audited as the native routes are. Nothing here reads or writes a table itself.
 */
export class KvService {
  constructor(private readonly deps: { secrets: SecretsService }) {}

  /** A client's read of the current version, or of `version`; not granted and not there are one 404. */
  async read(principal: ClientPrincipal, meta: RequestMeta, path: string, version?: number) {
    const name = kvPathToName(path);
    const delivered = await this.deps.secrets.deliverVersion(principal, meta, name, version);
    const { data, kvShaped } = kvDataOf(delivered.type, Buffer.from(delivered.content, 'base64'));
    const metadata: KvVersionMetadata = {
      created_time: delivered.createdAt,
      custom_metadata: kvShaped ? null : { keywarden_encoding: 'base64' },
      deletion_time: '',
      destroyed: false,
      version: delivered.version,
    };
    return { data, metadata };
  }

  /**
   * Writes a new version (creating the secret at version 1). cas 0 = only if the path is empty;
   * cas N = only if the current version is N. The new secret is granted to no group: who reads
   * it is an operator's decision, as for a native create without `groups`.
   */
  async write(principal: Principal, meta: RequestMeta, path: string, data: Record<string, unknown>, cas?: number): Promise<KvVersionMetadata> {
    const name = kvPathToName(path);
    const content = Buffer.from(canonicalJson(data), 'utf8');
    if (content.length > MAX_CONTENT_BYTES) throw new InvalidInputError(`the data is ${content.length} bytes as JSON; the limit is ${MAX_CONTENT_BYTES}`);
    const existing = await this.deps.secrets.findLive(name);
    if (!existing) {
      if (cas !== undefined && cas !== 0) throw new ConflictError(CAS_MISMATCH, 'cas_mismatch');
      try {
        const detail = await this.deps.secrets.create(principal, meta, { name, content, type: KV_SECRET_TYPE });
        return this.versionMetadata(detail.version, detail.updatedAt);
      } catch (err) {
        // another writer created it first: with cas that is Vault's mismatch; without, write on top
        if (!(err instanceof ConflictError) || cas !== undefined) throw err instanceof ConflictError ? new ConflictError(CAS_MISMATCH, 'cas_mismatch') : err;
        return this.write(principal, meta, path, data, cas);
      }
    }
    if (existing.type !== KV_SECRET_TYPE) {
      throw new InvalidInputError(`secret ${name} is not a KV secret (its type is ${existing.type}); write it with the native API, POST /v1/secrets/${name}/versions`);
    }
    if (cas === 0) throw new ConflictError(CAS_MISMATCH, 'cas_mismatch');
    try {
      const detail = await this.deps.secrets.addVersion(principal, meta, name, content, { cas });
      return this.versionMetadata(detail.version, detail.updatedAt);
    } catch (err) {
      if (err instanceof ConflictError && err.code === 'cas_mismatch') throw new ConflictError(CAS_MISMATCH, 'cas_mismatch');
      // deleted since findLive: with cas that is a mismatch; without, the write creates it anew
      if (err instanceof NotFoundError) {
        if (cas !== undefined) throw new ConflictError(CAS_MISMATCH, 'cas_mismatch');
        return this.write(principal, meta, path, data);
      }
      throw err;
    }
  }

  private versionMetadata(version: number, createdAt: string): KvVersionMetadata {
    return { created_time: createdAt, custom_metadata: null, deletion_time: '', destroyed: false, version };
  }

  /**
   * Vault's metadata of a granted secret: every stored version (Keywarden keeps them all). The
   * grant is decided as for a read, row integrity checks included (grantedIntact).
   */
  async metadata(principal: ClientPrincipal, meta: RequestMeta, path: string) {
    const name = kvPathToName(path);
    const found = await this.deps.secrets.grantedIntact(principal, meta, name, { via: 'vault', use: 'metadata' });
    const versions = await this.deps.secrets.listVersions(name);
    const secret = found.secret;
    return {
      cas_required: false,
      created_time: new Date(secret.createdAt).toISOString(),
      current_version: secret.currentVersion,
      custom_metadata: secret.type === KV_SECRET_TYPE ? null : { keywarden_type: secret.type },
      delete_version_after: '0s',
      max_versions: 0,
      oldest_version: versions.length ? Math.min(...versions.map((v) => v.version)) : 0,
      updated_time: new Date(secret.updatedAt).toISOString(),
      versions: Object.fromEntries(versions.map((v) => [String(v.version), { created_time: iso(v.createdAt), deletion_time: '', destroyed: false }])),
    };
  }

  /**
   * The keys under `prefix` among the secrets granted to the client, Vault style: a leaf is
   * `name`, a deeper path is `segment/` once. No key at all is a 404, as in Vault.
   */
  async list(principal: ClientPrincipal, prefix: string): Promise<string[]> {
    const trimmed = prefix.replace(/\/+$/, '');
    if (trimmed) kvPathToName(trimmed);
    const base = trimmed ? `${trimmed}/` : '';
    const keys = new Set<string>();
    for (const item of await this.deps.secrets.listForClient(principal.id)) {
      const path = nameToKvPath(item.name);
      if (!path || !path.startsWith(base) || path === trimmed) continue;
      const rest = path.slice(base.length);
      const slash = rest.indexOf('/');
      keys.add(slash < 0 ? rest : rest.slice(0, slash + 1));
    }
    if (keys.size === 0) throw new NotFoundError(`keys under ${prefix || '/'}`);
    return [...keys].sort();
  }

  /**
   * Vault's delete (`DELETE data/<path>`, or `POST delete/<path>` naming the current version):
   * Keywarden deletes whole secrets, so the secret is deleted, its grants revoked, and no path
   * (KV or native) delivers any of its versions until it is restored and granted again.
   */
  async delete(principal: Principal, meta: RequestMeta, path: string, versions?: number[]): Promise<void> {
    const name = kvPathToName(path);
    if (versions !== undefined) {
      const secret = await this.deps.secrets.findLive(name);
      // Vault ignores versions that are not there; so does this
      if (!secret) return;
      if (!versions.includes(secret.currentVersion)) {
        throw new InvalidInputError(
          `Keywarden deletes a secret with all its versions, not single older versions: name the current version (${secret.currentVersion}) to delete ${path}`,
        );
      }
    }
    await this.deps.secrets.remove(principal, meta, name);
  }

  /**
   * Vault's undelete: restores the deleted secret when `versions` names the version that was
   * current when it was deleted. Its grants do not come back (the deletion revoked them).
   */
  async undelete(principal: Principal, meta: RequestMeta, path: string, versions: number[]): Promise<void> {
    const name = kvPathToName(path);
    if (await this.deps.secrets.findLive(name)) return; // nothing of it is deleted: Vault answers 204 too
    try {
      await this.deps.secrets.restore(principal, meta, name, versions);
    } catch (err) {
      if (err instanceof NotFoundError) return; // Vault ignores versions that are not deleted
      throw err;
    }
  }

  /** Keywarden keeps every version of a secret (rollback, audit); nothing is destroyed. */
  destroy(path: string): never {
    kvPathToName(path);
    throw new InvalidInputError('destroy is not supported: Keywarden keeps the versions of a secret; delete the secret instead (DELETE /v1/<mount>/metadata/<path>)', {
      code: 'unsupported_operation',
    });
  }
}

