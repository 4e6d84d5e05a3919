/**
 * Notary v1 / Docker Content Trust verification, following Connaisseur's notaryv1 order:
 * root (pinned keys) -> timestamp -> snapshot -> targets -> delegations -> tag lookup.
 */
import { createHash } from 'node:crypto';
import { CanonicalJsonError } from './canonical-json.js';
import { NotaryClient, isValidGun, isValidRoleName, type RoleFetchResult } from './notary-client.js';
import {
  NotaryVerificationError,
  type NotaryCheckInput,
  type NotaryCheckResult,
  type NotaryResultCode,
  type TufDelegationRole,
  type TufFileMeta,
  type TufKeyJson,
  type TufRootSigned,
  type TufSnapshotSigned,
  type TufTargetsSigned,
} from './notary-types.js';
import { decodeBase64Strict, parsePinnedKey, parseTufKey, pinnedKeyMatches, certificateProblem, type ParsedTufKey, type PinnedKey } from './tuf-keys.js';
import { verifyRoleSignatures } from './tuf-signatures.js';
import {
  asRoot,
  asSnapshot,
  asTargets,
  asTimestamp,
  checkRawAgainstMeta,
  delegationRolesOf,
  parseRoleDocument,
  type ParsedEnvelope,
} from './tuf-metadata.js';

export type { NotaryCheckInput, NotaryCheckResult, NotaryResultCode } from './notary-types.js';

const DEFAULT_TIMEOUT_MS = 5000;
const RELEASES_ROLE = 'targets/releases';

function fail(code: NotaryResultCode, reason: string): never {
  throw new NotaryVerificationError(code, reason);
}

interface Context {
  now: Date;
  roles: string[];
  expiries: Date[];
  versions: Record<string, number>;
  minVersions: Record<string, number>;
}

function note(ctx: Context, role: string, doc: ParsedEnvelope<unknown>): void {
  if (!ctx.roles.includes(role)) ctx.roles.push(role);
  ctx.expiries.push(doc.expires);
  ctx.versions[role] = doc.version;
}

function earliest(dates: Date[]): Date | undefined {
  if (dates.length === 0) return undefined;
  return new Date(Math.min(...dates.map((d) => d.getTime())));
}

function fetchFailure(role: string, r: Exclude<RoleFetchResult, { ok: true }>, gun: string): never {
  switch (r.kind) {
    case 'unreachable':
    case 'timeout':
    case 'http':
      fail('unreachable', `notary server unreachable: ${r.message}`);
    case 'auth':
      fail('unreachable', `notary server refused access: ${r.message}`);
    case 'not_found':
      if (role === 'root') fail('bad_metadata', `no trust data for ${gun} on the notary server (root.json: HTTP 404)`);
      fail('bad_metadata', `${role}.json is missing on the notary server (HTTP 404)`);
    case 'too_large':
      fail('bad_metadata', r.message);
    default:
      fail('bad_metadata', r.message);
  }
}

function parseDoc(role: string, raw: Buffer): ParsedEnvelope<unknown> {
  return parseRoleDocument(role, raw);
}

function checkExpiry(role: string, doc: ParsedEnvelope<unknown>, now: Date): void {
  if (doc.expires.getTime() < now.getTime()) fail('expired', `${role}.json expired at ${doc.expires.toISOString()}`);
}

function checkMinVersion(role: string, doc: ParsedEnvelope<unknown>, ctx: Context): void {
  const floor = ctx.minVersions[role];
  if (typeof floor === 'number' && doc.version < floor) {
    fail('version_rollback', `${role}.json version ${doc.version} is older than the last seen version ${floor}`);
  }
}

function checkMetaVersion(role: string, doc: ParsedEnvelope<unknown>, meta: TufFileMeta, from: string): void {
  if (typeof meta.version === 'number' && meta.version !== doc.version) {
    fail('version_rollback', `${role}.json version ${doc.version} does not match version ${meta.version} recorded in ${from}.json`);
  }
}

function checkHash(role: string, raw: Buffer, meta: TufFileMeta, from: string): void {
  const problem = checkRawAgainstMeta(raw, meta);
  if (problem) fail('hash_mismatch', `${role}.json hash does not match ${from} (${problem})`);
}

/** Parse every key of a keys object; map values are a ParsedTufKey or an error description. */
function parseKeys(keys: Record<string, TufKeyJson>): Map<string, ParsedTufKey | string> {
  const out = new Map<string, ParsedTufKey | string>();
  for (const [id, json] of Object.entries(keys)) {
    try {
      const k = parseTufKey(json);
      out.set(id, k.id === id ? k : `key id ${id.slice(0, 12)} does not match its key material`);
    } catch (err) {
      out.set(id, (err as Error).message);
    }
  }
  return out;
}

/** The role's signatures against its keys; metadata that cannot be canonicalised is bad metadata. */
function checkSignatures(
  role: string,
  doc: ParsedEnvelope<unknown>,
  keys: Map<string, ParsedTufKey | string>,
  keyids: string[],
  threshold: number,
  now: Date,
): ReturnType<typeof verifyRoleSignatures> {
  try {
    return verifyRoleSignatures({ role, signedValue: doc.signedValue, signatures: doc.signatures, keys, keyids, threshold, now });
  } catch (err) {
    if (err instanceof CanonicalJsonError) fail('bad_metadata', `${role}.json cannot be canonicalised: ${err.message}`);
    throw err;
  }
}

/** Certificates of the keys that signed bound the trust data's lifetime too. */
function noteCertificateExpiries(ctx: Context, keys: Map<string, ParsedTufKey | string>, validKeyIds: string[]): void {
  for (const id of validKeyIds) {
    const k = keys.get(id);
    if (k && typeof k !== 'string' && k.certificate) ctx.expiries.push(k.certificate.notAfter);
  }
}

function verifyRole(
  role: string,
  doc: ParsedEnvelope<unknown>,
  keys: Map<string, ParsedTufKey | string>,
  keyids: string[],
  threshold: number,
  ctx: Context,
): string[] {
  const result = checkSignatures(role, doc, keys, keyids, threshold, ctx.now);
  if (!result.met) {
    const details = result.problems.length ? `: ${result.problems.join('; ')}` : '';
    fail('signature_invalid', `${role}.json has ${result.validKeyIds.length} valid signature(s), threshold is ${threshold}${details}`);
  }
  noteCertificateExpiries(ctx, keys, result.validKeyIds);
  return result.validKeyIds;
}

interface LoadedTargets {
  name: string;
  doc: ParsedEnvelope<TufTargetsSigned>;
  /** The delegation entries from targets down to this role (empty for `targets`). */
  chain: TufDelegationRole[];
}

type DelegationLoad = { ok: true; value: LoadedTargets } | { ok: false; reason: string };

function pathAllowed(role: TufDelegationRole, target: string): boolean {
  if (Array.isArray(role.paths)) return role.paths.some((p) => target.startsWith(p));
  if (Array.isArray(role.path_hash_prefixes)) {
    const h = createHash('sha256').update(target, 'utf8').digest('hex');
    return role.path_hash_prefixes.some((p) => h.startsWith(p));
  }
  return false;
}

function normaliseDelegation(name: string): string {
  const n = String(name).trim().replace(/^\/+|\/+$/g, '');
  return n.startsWith('targets/') ? n : `targets/${n}`;
}

/** The check's input, validated: what the verification steps work from. */
interface CheckRequest {
  gun: string;
  tag: string;
  expectedDigest?: string;
  /** Required delegations, normalised and de-duplicated; empty: targets/releases or targets. */
  required: string[];
  /** How many of `required` must sign the tag. */
  threshold: number;
  pinned: PinnedKey[];
}

function parseCheckRequest(input: NotaryCheckInput): CheckRequest {
  let serverUrl: URL;
  try {
    serverUrl = new URL(input.server);
  } catch {
    fail('unreachable', `notary server unreachable: invalid server URL ${JSON.stringify(input.server)}`);
  }
  if (serverUrl.protocol !== 'http:' && serverUrl.protocol !== 'https:') {
    fail('unreachable', `notary server unreachable: unsupported protocol ${serverUrl.protocol}`);
  }
  if (!isValidGun(input.gun)) fail('bad_metadata', `invalid input: bad GUN ${JSON.stringify(input.gun)}`);
  if (typeof input.tag !== 'string' || input.tag === '') fail('bad_metadata', 'invalid input: empty tag');
  let expectedDigest: string | undefined;
  if (input.expectedDigest !== undefined && input.expectedDigest !== null) {
    expectedDigest = String(input.expectedDigest).trim().toLowerCase();
    if (!/^sha256:[0-9a-f]{64}$/.test(expectedDigest)) fail('bad_metadata', `invalid input: expectedDigest ${JSON.stringify(input.expectedDigest)} is not sha256:<64 hex>`);
  }
  const { required, threshold } = parseDelegationRequirement(input);
  return { gun: input.gun, tag: input.tag, expectedDigest, required, threshold, pinned: parsePinnedRootKeys(input.rootKeys) };
}

function parseDelegationRequirement(input: NotaryCheckInput): { required: string[]; threshold: number } {
  const named = (input.delegations ?? []).map(normaliseDelegation);
  for (const d of named) if (!isValidRoleName(d)) fail('bad_metadata', `invalid input: bad delegation name ${JSON.stringify(d)}`);
  const required = [...new Set(named)];
  if (required.length === 0 || input.threshold === undefined) return { required, threshold: required.length };
  if (!Number.isInteger(input.threshold) || input.threshold < 1 || input.threshold > required.length) {
    fail('bad_metadata', `invalid input: threshold ${input.threshold} must be between 1 and ${required.length}`);
  }
  return { required, threshold: input.threshold };
}

function parsePinnedRootKeys(rootKeys: string[]): PinnedKey[] {
  if (!Array.isArray(rootKeys) || rootKeys.length === 0) fail('root_untrusted', 'no pinned root keys configured');
  return rootKeys.map((k) => {
    try {
      return parsePinnedKey(k);
    } catch (err) {
      fail('root_untrusted', `invalid pinned root key: ${(err as Error).message}`);
    }
  });
}

/** The verified root: its document and its parsed keys, which sign the other base roles. */
interface TrustedRoot {
  doc: ParsedEnvelope<TufRootSigned>;
  keys: Map<string, ParsedTufKey | string>;
}

/** The roles every repository has, signed with the root's keys. */
type BaseRole = 'root' | 'timestamp' | 'snapshot' | 'targets';

/** A tag found in a selected targets role. */
interface FoundTag {
  role: string;
  digest: string;
}

/**
 * One verification, in the order of the TUF client workflow: root (pinned keys) -> timestamp ->
 * snapshot -> targets -> delegations -> tag lookup. Each step verifies one role and hands the
 * next the trusted data it needs; every failure throws a NotaryVerificationError.
 */
class NotaryVerification {
  private readonly client: NotaryClient;
  /** The base roles, fetched concurrently (as Connaisseur does) and verified in order. */
  private readonly fetches: Record<BaseRole, Promise<RoleFetchResult>>;
  /** Delegations loaded so far (on demand), by role name. */
  private readonly delegations = new Map<string, Promise<DelegationLoad>>();

  constructor(
    input: NotaryCheckInput,
    private readonly request: CheckRequest,
    private readonly ctx: Context,
  ) {
    this.client = new NotaryClient({
      server: input.server,
      gun: input.gun,
      timeoutMs: input.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      fetchImpl: input.fetchImpl,
      credentials: input.credentials,
    });
    this.fetches = {
      root: this.client.fetchRole('root'),
      timestamp: this.client.fetchRole('timestamp'),
      snapshot: this.client.fetchRole('snapshot'),
      targets: this.client.fetchRole('targets'),
    };
  }

  async verify(): Promise<NotaryCheckResult> {
    const root = await this.verifyRoot();
    const snapshotMeta = await this.verifyTimestamp(root);
    const snapshot = await this.verifySnapshot(root, snapshotMeta);
    const targets = await this.verifyTargets(root, snapshot);
    this.delegations.set('targets', Promise.resolve({ ok: true, value: { name: 'targets', doc: targets, chain: [] } }));
    const { selected, absent } = await this.selectRoles(targets, snapshot);
    const found = this.lookupTag(selected, absent);
    return this.result(found);
  }

  private async fetched(role: BaseRole): Promise<Buffer> {
    const r = await this.fetches[role];
    if (!r.ok) fetchFailure(role, r, this.request.gun);
    return r.bytes;
  }

  /** Signature checks, expiry, version against the referring role and the rollback floor. */
  private acceptRole(name: string, doc: ParsedEnvelope<unknown>, keys: Map<string, ParsedTufKey | string>, role: { keyids: string[]; threshold: number }, meta?: { value: TufFileMeta; from: string }): void {
    verifyRole(name, doc, keys, role.keyids, role.threshold, this.ctx);
    checkExpiry(name, doc, this.ctx.now);
    if (meta) checkMetaVersion(name, doc, meta.value, meta.from);
    checkMinVersion(name, doc, this.ctx);
    note(this.ctx, name, doc);
  }

  // ---- 1. root: signed by a pinned key, and by the threshold of its own root role
  private async verifyRoot(): Promise<TrustedRoot> {
    const doc = asRoot(parseDoc('root', await this.fetched('root')));
    const keys = parseKeys(doc.signed.keys);
    const rootRole = doc.signed.roles.root;
    const pinnedIds = rootRole.keyids.filter((id) => {
      const k = keys.get(id);
      return k !== undefined && typeof k !== 'string' && this.request.pinned.some((p) => pinnedKeyMatches(p, k));
    });
    if (pinnedIds.length === 0) {
      fail('root_untrusted', 'root.json is not signed by a pinned root key (no pinned key is a key of the root role)');
    }
    const result = checkSignatures('root', doc, keys, rootRole.keyids, rootRole.threshold, this.ctx.now);
    if (!pinnedIds.some((id) => result.validKeyIds.includes(id))) this.rejectUnpinnedRoot(keys, pinnedIds, result.problems);
    if (!result.met) {
      fail('signature_invalid', `root.json has ${result.validKeyIds.length} valid root signature(s), threshold is ${rootRole.threshold}`);
    }
    noteCertificateExpiries(this.ctx, keys, result.validKeyIds);
    checkExpiry('root', doc, this.ctx.now);
    checkMinVersion('root', doc, this.ctx);
    note(this.ctx, 'root', doc);
    return { doc, keys };
  }

  /** No valid signature of a pinned key: an expired pinned certificate says so, else untrusted. */
  private rejectUnpinnedRoot(keys: Map<string, ParsedTufKey | string>, pinnedIds: string[], problems: string[]): never {
    for (const id of pinnedIds) {
      const k = keys.get(id) as ParsedTufKey;
      const problem = certificateProblem(k, this.ctx.now);
      if (problem && k.certificate && this.ctx.now.getTime() > k.certificate.notAfter.getTime()) {
        fail('expired', `pinned root key ${problem}`);
      }
    }
    const details = problems.length ? ` (${problems.join('; ')})` : '';
    fail('root_untrusted', `root.json is not signed by a pinned root key${details}`);
  }

  // ---- 2. timestamp: signed by the root's timestamp role; names the snapshot's hash and version
  private async verifyTimestamp(root: TrustedRoot): Promise<TufFileMeta> {
    const timestamp = asTimestamp(parseDoc('timestamp', await this.fetched('timestamp')));
    this.acceptRole('timestamp', timestamp, root.keys, root.doc.signed.roles.timestamp);
    const snapshotMeta = timestamp.signed.meta.snapshot;
    if (!snapshotMeta) fail('bad_metadata', 'timestamp.json has no meta for snapshot');
    return snapshotMeta;
  }

  // ---- 3. snapshot: matches the timestamp; names every targets role's hash and version
  private async verifySnapshot(root: TrustedRoot, snapshotMeta: TufFileMeta): Promise<TufSnapshotSigned['meta']> {
    const raw = await this.fetched('snapshot');
    checkHash('snapshot', raw, snapshotMeta, 'timestamp');
    const snapshot = asSnapshot(parseDoc('snapshot', raw));
    this.acceptRole('snapshot', snapshot, root.keys, root.doc.signed.roles.snapshot, { value: snapshotMeta, from: 'timestamp' });
    const meta = snapshot.signed.meta;
    if (meta.root) {
      checkHash('root', root.doc.raw, meta.root, 'snapshot');
      checkMetaVersion('root', root.doc, meta.root, 'snapshot');
    }
    return meta;
  }

  // ---- 4. targets: matches the snapshot, signed by the root's targets role
  private async verifyTargets(root: TrustedRoot, snapshot: TufSnapshotSigned['meta']): Promise<ParsedEnvelope<TufTargetsSigned>> {
    const targetsMeta = snapshot.targets;
    if (!targetsMeta) fail('bad_metadata', 'snapshot.json has no meta for targets');
    const raw = await this.fetched('targets');
    checkHash('targets', raw, targetsMeta, 'snapshot');
    const targets = asTargets(parseDoc('targets', raw));
    this.acceptRole('targets', targets, root.keys, root.doc.signed.roles.targets, { value: targetsMeta, from: 'snapshot' });
    return targets;
  }

  // ---- 5. delegations: loaded on demand, each verified against its parent's delegation keys
  private loadRole(name: string, snapshot: TufSnapshotSigned['meta']): Promise<DelegationLoad> {
    let p = this.delegations.get(name);
    if (!p) {
      p = this.loadDelegation(name, snapshot);
      this.delegations.set(name, p);
    }
    return p;
  }

  private async loadDelegation(name: string, snapshot: TufSnapshotSigned['meta']): Promise<DelegationLoad> {
    const parentName = name.slice(0, name.lastIndexOf('/'));
    const parent = await this.loadRole(parentName, snapshot);
    if (!parent.ok) return parent;
    const entry = delegationRolesOf(parent.value.doc.signed).find((r) => r.name === name);
    if (!entry) return { ok: false, reason: `required delegation ${name} absent (not declared in ${parentName}.json)` };
    const meta = snapshot[name];
    if (!meta) return { ok: false, reason: `required delegation ${name} absent (declared in ${parentName}.json but never published)` };
    const r = await this.client.fetchRole(name, meta.length > 0 ? meta.length : undefined);
    if (!r.ok) {
      if (r.kind === 'too_large') fail('hash_mismatch', `${name}.json hash does not match snapshot (larger than ${meta.length} bytes)`);
      fetchFailure(name, r, this.request.gun);
    }
    checkHash(name, r.bytes, meta, 'snapshot');
    const doc = asTargets(parseDoc(name, r.bytes));
    const keys = parseKeys(parent.value.doc.signed.delegations?.keys ?? {});
    this.acceptRole(name, doc, keys, entry, { value: meta, from: 'snapshot' });
    return { ok: true, value: { name, doc, chain: [...parent.value.chain, entry] } };
  }

  /** The roles that must sign the tag: the required delegations, else targets/releases or targets. */
  private async selectRoles(targets: ParsedEnvelope<TufTargetsSigned>, snapshot: TufSnapshotSigned['meta']): Promise<{ selected: LoadedTargets[]; absent: string[] }> {
    const { required } = this.request;
    if (required.length === 0) {
      const hasReleases = delegationRolesOf(targets.signed).some((r) => r.name === RELEASES_ROLE);
      const releases = hasReleases ? await this.loadRole(RELEASES_ROLE, snapshot) : undefined;
      // Docker's own lookup order (docker/cli: GetTargetByName(tag, targets/releases, targets)):
      // targets/releases first, then targets, the first role naming the tag wins. So a tag signed
      // with the repository key alone is accepted, as `DOCKER_CONTENT_TRUST=1 docker pull` accepts
      // it; a policy that wants the delegation says so with `delegations`.
      const top: LoadedTargets = { name: 'targets', doc: targets, chain: [] };
      return { selected: releases?.ok ? [releases.value, top] : [top], absent: [] };
    }
    const selected: LoadedTargets[] = [];
    const absent: string[] = [];
    for (const name of required) {
      const r = await this.loadRole(name, snapshot);
      if (r.ok) selected.push(r.value);
      else absent.push(r.reason);
    }
    return { selected, absent };
  }

  // ---- 6. tag lookup: enough selected roles name the tag, all with one digest
  private lookupTag(selected: LoadedTargets[], absent: string[]): FoundTag[] {
    const { tag, required, threshold } = this.request;
    const found: FoundTag[] = [];
    const missing: string[] = [];
    for (const s of selected) {
      // without required delegations, the roles are a lookup order (see selectRoles): stop at the first match
      if (required.length === 0 && found.length > 0) break;
      const entry = Object.prototype.hasOwnProperty.call(s.doc.signed.targets, tag) ? s.doc.signed.targets[tag] : undefined;
      const outside = entry ? s.chain.find((d) => !pathAllowed(d, tag)) : undefined;
      if (!entry) missing.push(s.name);
      else if (outside) missing.push(`${s.name} (tag outside the paths delegated to ${outside.name})`);
      else found.push({ role: s.name, digest: targetDigest(tag, s.name, entry.hashes.sha256) });
    }
    const need = required.length > 0 ? threshold : 1;
    if (found.length < need) {
      if (absent.length > 0 && required.length - absent.length < need) fail('delegation_missing', absent.join('; '));
      if (found.length === 0) fail('tag_missing', `tag ${tag} not found in ${missing.join(', ')}`);
      fail(
        'threshold_not_met',
        `tag ${tag} found in ${found.length} of ${required.length} required delegation(s) (${found.map((f) => f.role).join(', ')}), threshold is ${need}; missing in ${[...missing, ...absent].join(', ')}`,
      );
    }
    const digests = new Set(found.map((f) => f.digest));
    if (digests.size > 1) {
      fail('ambiguous_digest', `tag ${tag} has ${digests.size} different digests: ${found.map((f) => `${f.role}=${f.digest}`).join(', ')}`);
    }
    return found;
  }

  // ---- 7. expected digest
  private result(found: FoundTag[]): NotaryCheckResult {
    const { tag, expectedDigest } = this.request;
    const digest = found[0]!.digest;
    const trust = { digest, expires: earliest(this.ctx.expiries), roles: this.ctx.roles, versions: this.ctx.versions };
    if (expectedDigest !== undefined && expectedDigest !== digest) {
      return { ok: false, code: 'digest_mismatch', reason: `digest mismatch: trust data has ${digest}, image is ${expectedDigest}`, ...trust };
    }
    return { ok: true, code: 'ok', reason: `tag ${tag} is signed in ${found.map((f) => f.role).join(', ')} with digest ${digest}`, ...trust };
  }
}

/** The target's sha256 as `sha256:<hex>`; the hash is base64 in TUF metadata. */
function targetDigest(tag: string, role: string, sha256: string | undefined): string {
  const bytes = sha256 === undefined ? undefined : decodeBase64Strict(sha256);
  if (!bytes || bytes.length !== 32) fail('bad_metadata', `target ${tag} in ${role}.json has no valid sha256 hash`);
  return `sha256:${bytes.toString('hex')}`;
}

/**
 * Verify Notary v1 trust data for `gun:tag`. Never throws: every failure, including malformed
 * or malicious metadata and network errors, yields `{ ok: false, code, reason }`.
 */
export async function verifyNotaryTrust(input: NotaryCheckInput): Promise<NotaryCheckResult> {
  const now = input?.now instanceof Date && !Number.isNaN(input.now.getTime()) ? input.now : new Date();
  const ctx: Context = {
    now,
    roles: [],
    expiries: [],
    versions: {},
    minVersions: input?.minVersions && typeof input.minVersions === 'object' ? input.minVersions : {},
  };
  try {
    return await new NotaryVerification(input, parseCheckRequest(input), ctx).verify();
  } catch (err) {
    if (err instanceof NotaryVerificationError) {
      return { ok: false, code: err.code, reason: err.message, roles: ctx.roles, versions: ctx.versions };
    }
    return { ok: false, code: 'bad_metadata', reason: `verification failed: ${(err as Error)?.message ?? String(err)}`, roles: ctx.roles };
  }
}
