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

function verifyRole(
  role: string,
  doc: ParsedEnvelope<unknown>,
  keys: Map<string, ParsedTufKey | string>,
  keyids: string[],
  threshold: number,
  ctx: Context,
): string[] {
  let result;
  try {
    result = verifyRoleSignatures({ role, signedValue: doc.signedValue, signatures: doc.signatures, keys, keyids, threshold, now: ctx.now });
  } catch (err) {
    if (err instanceof CanonicalJsonError) fail('bad_metadata', `${role}.json cannot be canonicalised: ${err.message}`);
    throw err;
  }
  if (!result.met) {
    const details = result.problems.length ? `: ${result.problems.join('; ')}` : '';
    fail('signature_invalid', `${role}.json has ${result.validKeyIds.length} valid signature(s), threshold is ${threshold}${details}`);
  }
  for (const id of result.validKeyIds) {
    const k = keys.get(id);
    if (k && typeof k !== 'string' && k.certificate) ctx.expiries.push(k.certificate.notAfter);
  }
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

async function run(input: NotaryCheckInput, ctx: Context): Promise<NotaryCheckResult> {
  // ---- input validation
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
  const required = (input.delegations ?? []).map(normaliseDelegation);
  for (const d of required) if (!isValidRoleName(d)) fail('bad_metadata', `invalid input: bad delegation name ${JSON.stringify(d)}`);
  const uniqueRequired = [...new Set(required)];
  let threshold = uniqueRequired.length;
  if (uniqueRequired.length > 0 && input.threshold !== undefined) {
    if (!Number.isInteger(input.threshold) || input.threshold < 1 || input.threshold > uniqueRequired.length) {
      fail('bad_metadata', `invalid input: threshold ${input.threshold} must be between 1 and ${uniqueRequired.length}`);
    }
    threshold = input.threshold;
  }
  if (!Array.isArray(input.rootKeys) || input.rootKeys.length === 0) fail('root_untrusted', 'no pinned root keys configured');
  const pinned: PinnedKey[] = [];
  for (const k of input.rootKeys) {
    try {
      pinned.push(parsePinnedKey(k));
    } catch (err) {
      fail('root_untrusted', `invalid pinned root key: ${(err as Error).message}`);
    }
  }

  const client = new NotaryClient({
    server: input.server,
    gun: input.gun,
    timeoutMs: input.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    fetchImpl: input.fetchImpl,
    credentials: input.credentials,
  });
  // Fetch the base roles concurrently (as Connaisseur does); verify them in order.
  const rootP = client.fetchRole('root');
  const timestampP = client.fetchRole('timestamp');
  const snapshotP = client.fetchRole('snapshot');
  const targetsP = client.fetchRole('targets');

  const get = async (role: string, p: Promise<RoleFetchResult>): Promise<Buffer> => {
    const r = await p;
    if (!r.ok) fetchFailure(role, r, input.gun);
    return r.bytes;
  };

  // ---- 1. root
  const root = asRoot(parseDoc('root', await get('root', rootP)));
  const rootSigned: TufRootSigned = root.signed;
  const rootKeys = parseKeys(rootSigned.keys);
  const rootRole = rootSigned.roles.root;
  const pinnedIds = rootRole.keyids.filter((id) => {
    const k = rootKeys.get(id);
    return k !== undefined && typeof k !== 'string' && pinned.some((p) => pinnedKeyMatches(p, k));
  });
  if (pinnedIds.length === 0) {
    fail('root_untrusted', 'root.json is not signed by a pinned root key (no pinned key is a key of the root role)');
  }
  let rootResult;
  try {
    rootResult = verifyRoleSignatures({
      role: 'root',
      signedValue: root.signedValue,
      signatures: root.signatures,
      keys: rootKeys,
      keyids: rootRole.keyids,
      threshold: rootRole.threshold,
      now: ctx.now,
    });
  } catch (err) {
    if (err instanceof CanonicalJsonError) fail('bad_metadata', `root.json cannot be canonicalised: ${err.message}`);
    throw err;
  }
  if (!pinnedIds.some((id) => rootResult.validKeyIds.includes(id))) {
    for (const id of pinnedIds) {
      const k = rootKeys.get(id) as ParsedTufKey;
      const problem = certificateProblem(k, ctx.now);
      if (problem && k.certificate && ctx.now.getTime() > k.certificate.notAfter.getTime()) {
        fail('expired', `pinned root key ${problem}`);
      }
    }
    const details = rootResult.problems.length ? ` (${rootResult.problems.join('; ')})` : '';
    fail('root_untrusted', `root.json is not signed by a pinned root key${details}`);
  }
  if (!rootResult.met) {
    fail('signature_invalid', `root.json has ${rootResult.validKeyIds.length} valid root signature(s), threshold is ${rootRole.threshold}`);
  }
  for (const id of rootResult.validKeyIds) {
    const k = rootKeys.get(id);
    if (k && typeof k !== 'string' && k.certificate) ctx.expiries.push(k.certificate.notAfter);
  }
  checkExpiry('root', root, ctx.now);
  checkMinVersion('root', root, ctx);
  note(ctx, 'root', root);

  // ---- 2. timestamp
  const timestamp = asTimestamp(parseDoc('timestamp', await get('timestamp', timestampP)));
  verifyRole('timestamp', timestamp, rootKeys, rootSigned.roles.timestamp.keyids, rootSigned.roles.timestamp.threshold, ctx);
  checkExpiry('timestamp', timestamp, ctx.now);
  checkMinVersion('timestamp', timestamp, ctx);
  note(ctx, 'timestamp', timestamp);
  const snapshotMeta = timestamp.signed.meta.snapshot;
  if (!snapshotMeta) fail('bad_metadata', 'timestamp.json has no meta for snapshot');

  // ---- 3. snapshot
  const snapshotFetch = await snapshotP;
  if (!snapshotFetch.ok) fetchFailure('snapshot', snapshotFetch, input.gun);
  checkHash('snapshot', snapshotFetch.bytes, snapshotMeta, 'timestamp');
  const snapshot = asSnapshot(parseDoc('snapshot', snapshotFetch.bytes));
  verifyRole('snapshot', snapshot, rootKeys, rootSigned.roles.snapshot.keyids, rootSigned.roles.snapshot.threshold, ctx);
  checkExpiry('snapshot', snapshot, ctx.now);
  checkMetaVersion('snapshot', snapshot, snapshotMeta, 'timestamp');
  checkMinVersion('snapshot', snapshot, ctx);
  note(ctx, 'snapshot', snapshot);
  const snapMeta: TufSnapshotSigned['meta'] = snapshot.signed.meta;
  if (snapMeta.root) {
    checkHash('root', root.raw, snapMeta.root, 'snapshot');
    checkMetaVersion('root', root, snapMeta.root, 'snapshot');
  }

  // ---- 4. targets
  const targetsMeta = snapMeta.targets;
  if (!targetsMeta) fail('bad_metadata', 'snapshot.json has no meta for targets');
  const targetsRaw = await get('targets', targetsP);
  checkHash('targets', targetsRaw, targetsMeta, 'snapshot');
  const targets = asTargets(parseDoc('targets', targetsRaw));
  verifyRole('targets', targets, rootKeys, rootSigned.roles.targets.keyids, rootSigned.roles.targets.threshold, ctx);
  checkExpiry('targets', targets, ctx.now);
  checkMetaVersion('targets', targets, targetsMeta, 'snapshot');
  checkMinVersion('targets', targets, ctx);
  note(ctx, 'targets', targets);

  // ---- delegations (loaded on demand, verified against their parent's delegation keys)
  const loaded = new Map<string, Promise<DelegationLoad>>();
  loaded.set('targets', Promise.resolve({ ok: true, value: { name: 'targets', doc: targets, chain: [] } }));
  const loadRole = (name: string): Promise<DelegationLoad> => {
    let p = loaded.get(name);
    if (!p) {
      p = loadDelegation(name);
      loaded.set(name, p);
    }
    return p;
  };
  const loadDelegation = async (name: string): Promise<DelegationLoad> => {
    const parentName = name.slice(0, name.lastIndexOf('/'));
    const parent = await loadRole(parentName);
    if (!parent.ok) return parent;
    const entry = delegationRolesOf(parent.value.doc.signed).find((r) => r.name === name);
    if (!entry) return { ok: false, reason: `required delegation ${name} absent (not declared in ${parentName}.json)` };
    const meta = snapMeta[name];
    if (!meta) return { ok: false, reason: `required delegation ${name} absent (declared in ${parentName}.json but never published)` };
    const r = await client.fetchRole(name, meta.length > 0 ? meta.length : undefined);
    if (!r.ok) {
      if (r.kind === 'too_large') fail('hash_mismatch', `${name}.json hash does not match snapshot (larger than ${meta.length} bytes)`);
      fetchFailure(name, r, input.gun);
    }
    checkHash(name, r.bytes, meta, 'snapshot');
    const doc = asTargets(parseDoc(name, r.bytes));
    const keys = parseKeys(parent.value.doc.signed.delegations?.keys ?? {});
    verifyRole(name, doc, keys, entry.keyids, entry.threshold, ctx);
    checkExpiry(name, doc, ctx.now);
    checkMetaVersion(name, doc, meta, 'snapshot');
    checkMinVersion(name, doc, ctx);
    note(ctx, name, doc);
    return { ok: true, value: { name, doc, chain: [...parent.value.chain, entry] } };
  };

  // ---- 5. role selection
  let selected: LoadedTargets[] = [];
  const absent: string[] = [];
  if (uniqueRequired.length > 0) {
    for (const name of uniqueRequired) {
      const r = await loadRole(name);
      if (r.ok) selected.push(r.value);
      else absent.push(r.reason);
    }
  } else {
    const hasReleases = delegationRolesOf(targets.signed).some((r) => r.name === RELEASES_ROLE);
    const releases = hasReleases ? await loadRole(RELEASES_ROLE) : undefined;
    // Connaisseur falls back to `targets` when targets/releases is declared but was never published.
    selected = [releases?.ok ? releases.value : { name: 'targets', doc: targets, chain: [] }];
  }

  // ---- 6. tag lookup
  const found: { role: string; digest: string }[] = [];
  const missing: string[] = [];
  for (const s of selected) {
    const entry = Object.prototype.hasOwnProperty.call(s.doc.signed.targets, input.tag) ? s.doc.signed.targets[input.tag] : undefined;
    if (!entry) {
      missing.push(s.name);
      continue;
    }
    const outside = s.chain.find((d) => !pathAllowed(d, input.tag));
    if (outside) {
      missing.push(`${s.name} (tag outside the paths delegated to ${outside.name})`);
      continue;
    }
    const sha = entry.hashes.sha256;
    const bytes = sha === undefined ? undefined : decodeBase64Strict(sha);
    if (!bytes || bytes.length !== 32) fail('bad_metadata', `target ${input.tag} in ${s.name}.json has no valid sha256 hash`);
    found.push({ role: s.name, digest: `sha256:${bytes.toString('hex')}` });
  }

  const need = uniqueRequired.length > 0 ? threshold : 1;
  if (found.length < need) {
    if (absent.length > 0 && uniqueRequired.length - absent.length < need) fail('delegation_missing', absent.join('; '));
    if (found.length === 0) fail('tag_missing', `tag ${input.tag} not found in ${missing.join(', ')}`);
    fail(
      'threshold_not_met',
      `tag ${input.tag} found in ${found.length} of ${uniqueRequired.length} required delegation(s) (${found.map((f) => f.role).join(', ')}), threshold is ${need}; missing in ${[...missing, ...absent].join(', ')}`,
    );
  }
  const digests = [...new Set(found.map((f) => f.digest))];
  if (digests.length > 1) {
    fail('ambiguous_digest', `tag ${input.tag} has ${digests.length} different digests: ${found.map((f) => `${f.role}=${f.digest}`).join(', ')}`);
  }
  const digest = digests[0];

  // ---- 7. expected digest
  if (expectedDigest !== undefined && expectedDigest !== digest) {
    return {
      ok: false,
      code: 'digest_mismatch',
      digest,
      reason: `digest mismatch: trust data has ${digest}, image is ${expectedDigest}`,
      expires: earliest(ctx.expiries),
      roles: ctx.roles,
      versions: ctx.versions,
    };
  }
  return {
    ok: true,
    code: 'ok',
    digest,
    reason: `tag ${input.tag} is signed in ${found.map((f) => f.role).join(', ')} with digest ${digest}`,
    expires: earliest(ctx.expiries),
    roles: ctx.roles,
    versions: ctx.versions,
  };
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
    return await run(input, ctx);
  } catch (err) {
    if (err instanceof NotaryVerificationError) {
      return { ok: false, code: err.code, reason: err.message, roles: ctx.roles, versions: ctx.versions };
    }
    return { ok: false, code: 'bad_metadata', reason: `verification failed: ${(err as Error)?.message ?? String(err)}`, roles: ctx.roles };
  }
}
