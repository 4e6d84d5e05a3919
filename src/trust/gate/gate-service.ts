/**
 * The release gate: picks the most specific trust policy for the image reference, resolves the
 * image to its digest, runs every check the policy configures, and records (and audits) the
 * decision. Deterministic outcomes are cached in the database by (image subject, digest, policy,
 * policy version).
 *
 * Egress: the policy is chosen before any network traffic, so a reference no policy matches is
 * decided without contacting anything. A registry is contacted only when a policy names it
 * literally (the registry part of an image pattern without wildcards) or the operator configured
 * it (KEYWARDEN_INSECURE_REGISTRIES, KEYWARDEN_EGRESS_ALLOW): a caller cannot make the broker
 * connect to a host of its choosing.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { AuditService } from '../../audit/audit-service.js';
import type { AuditEventInput } from '../../audit/audit-types.js';
import { ForbiddenError, IntegrityFailureError, InvalidInputError, NotFoundError } from '../../core/errors.js';
import type { RequestMeta } from '../../core/principal.js';
import { actorOf, principalLabel, type Principal } from '../../identity/identity-types.js';
import { ImageRefError, parseImageRef, type ImageRef } from '../registry/image-ref.js';
import { literalRegistryOf, type EgressPolicy } from '../registry/egress-policy.js';
import type { RegistryClient } from '../registry/registry-client.js';
import type { Database } from '../../db/database.js';
import type { SigningKeysService } from '../signing/signing-keys-service.js';
import { DecisionDal, type CacheEntry, type DecisionRow, type ReleaseDecision } from './decision-dal.js';
import { cosignCheck, notaryCheck, overridingUser, remoteFailure, ruleChecks, withDeadline, type CheckContext, type CheckResult, type GateCheck } from './gate-checks.js';
import { selectPolicy, type StoredPolicy } from './policy-schema.js';
import type { PolicyService } from './policy-service.js';
import { CacheEpoch } from '../../db/cache-epoch.js';
import type { Clock } from '../../core/clock.js';
import { noTelemetry, type Telemetry } from '../../core/telemetry.js';

export type { CacheEntry, ReleaseDecision };

export interface DecisionView {
  id: string;
  decision: ReleaseDecision;
  image: string;
  digest: string | null;
  policy: string | null;
  policyVersion: number | null;
  checks: CheckResult[];
  cached: boolean;
  cachedFrom: string | null;
  validUntil: string | null;
  decidedBy: string;
  decidedAt: string;
}

export interface GateOptions {
  defaultDecision: 'deny' | 'allow';
  cacheTtlSeconds: number;
  timeoutMs: number;
}

const isoOrNull = (ms: number | string | null | undefined) => (ms === null || ms === undefined ? null : new Date(Number(ms)).toISOString());

function toView(row: DecisionRow): DecisionView {
  return {
    id: row.id,
    decision: row.decision,
    image: row.image,
    digest: row.digest,
    policy: row.policy,
    policyVersion: row.policy_version === null || row.policy_version === undefined ? null : Number(row.policy_version),
    checks: JSON.parse(row.checks) as CheckResult[],
    cached: Boolean(row.cached),
    cachedFrom: row.cached_from,
    validUntil: isoOrNull(row.valid_until),
    decidedBy: row.decided_by,
    decidedAt: isoOrNull(row.decided_at)!,
  };
}

/** Public part of a check (internal flags stay internal). */
function publicCheck(c: GateCheck): CheckResult {
  const out: CheckResult = { type: c.type, ok: c.ok, detail: c.detail };
  if (!c.ok && c.code) out.code = c.code;
  return out;
}

/**
 * Version of the rules the checks apply. It is part of every cache key, so a decision cached by
 * an older broker (before signatures were bound to their repository, say) never answers for a
 * newer one. Bump it whenever a check becomes stricter.
 */
export const GATE_RULES_VERSION = 2;

/**
 * Cache key: hex sha256 over the rules version, subject, digest, policy name and version, the
 * trust epoch (migration 013: it moves on any change to policies, signing keys, trusted issuers
 * or registry credentials, so a decision made before a key was revoked never answers after it,
 * on any instance), and the container user when one overrides the image's and the policy judges
 * it (nonRootUser): a decision for `--user 0` never answers for `--user 1000`, nor for the
 * image's own user.
 */
export function gateCacheKey(subject: string, digest: string, policy: string, policyVersion: number, trustEpoch: number, containerUser?: string): string {
  const user = containerUser === undefined ? '' : `\nuser=${containerUser}`;
  return createHash('sha256').update(`v${GATE_RULES_VERSION}\n${subject}\n${digest}\n${policy}\n${policyVersion}\nepoch=${trustEpoch}${user}`).digest('hex');
}

/** Decisions kept in memory per instance (the newest; the oldest insertion goes first). */
const MEMORY_DECISIONS = 10_000;

/** The current policies and the registries they name literally, read under one trust epoch. */
interface PolicySnapshot {
  generation: number;
  policies: StoredPolicy[];
  namedRegistries: string[];
  /** selectPolicy and registryPermitted by repository: both depend only on the policies (and the static egress rules). */
  selections: Map<string, { selected: ReturnType<typeof selectPolicy<StoredPolicy>>; registryPermitted: boolean }>;
}

/** Repositories whose selection a snapshot keeps (a new snapshot starts empty). */
const MEMORY_SELECTIONS = 10_000;

/** What a client (the Docker plugin) adds to a release request: the container's user and where it came from. */
export interface ClientReleaseRequest {
  /** The container's --user; "" or absent: the image's configured user. */
  containerUser?: string;
  /** Names service, task, container and so on for the audit record. */
  context?: Record<string, string>;
}

export class GateService {
  private readonly dal: DecisionDal;
  private readonly telemetry: Telemetry;

  constructor(
    private readonly deps: {
      db: Database;
      audit: AuditService;
      clock: Clock;
      registry: RegistryClient;
      signingKeys: SigningKeysService;
      policies: PolicyService;
      options: GateOptions;
      /** egress rules for registries and Notary servers; default: the registry client's */
      egress?: EgressPolicy;
      /** Whether a client may ask the gate (releaseGate): identity decides (ClientsService.capabilitiesOf). */
      clientCapabilities: { capabilitiesOf(clientDbId: number): Promise<{ releaseGate: boolean }> };
      logger?: Logger;
      /** Decisions by result and cache hits, for /metrics. */
      telemetry?: Telemetry;
      /** The trust epoch; default: one of its own, read (not polled) when needed. */
      trustEpoch?: CacheEpoch;
    },
  ) {
    this.dal = new DecisionDal(deps.db);
    this.telemetry = deps.telemetry ?? noTelemetry;
    this.epoch = deps.trustEpoch ?? new CacheEpoch(() => this.dal.trustEpoch(), { logger: deps.logger, name: 'gate trust epoch' });
    // a move of the epoch drops everything read under an older one
    this.epoch.onChange(() => {
      this.memory.clear();
      this.snapshot = undefined;
    });
  }

  private readonly epoch: CacheEpoch;
  /**
   * Cached decisions in memory, by cache key (which holds the trust epoch). The database row
   * (release_gate_cache) stays the shared truth; this spares its lookup. An entry is used only
   * while the epoch it was stored under is the current, recently confirmed one.
   */
  private readonly memory = new Map<string, CacheEntry & { generation: number }>();
  private snapshot: PolicySnapshot | undefined;

  /** The trust epoch the gate answers under (for the instance's own writes: refresh it after committing). */
  get trustEpoch(): CacheEpoch {
    return this.epoch;
  }

  /** The policies under the current epoch: read from the database once per epoch. */
  private async policySnapshot(): Promise<PolicySnapshot> {
    const generation = await this.epoch.confirmed();
    if (this.snapshot?.generation === generation) return this.snapshot;
    const policies = await this.deps.policies.all();
    const namedRegistries = policies.flatMap((p) => p.document.images.map(literalRegistryOf).filter((r): r is string => r !== undefined));
    const snapshot: PolicySnapshot = { generation, policies, namedRegistries, selections: new Map() };
    // read under `generation`: kept only when no move was seen meanwhile
    if (this.epoch.current() === generation) this.snapshot = snapshot;
    return snapshot;
  }

  private remember(key: string, entry: CacheEntry, generation: number): void {
    if (this.epoch.current() !== generation) return;
    if (this.memory.size >= MEMORY_DECISIONS && !this.memory.has(key)) this.memory.delete(this.memory.keys().next().value as string);
    this.memory.set(key, { ...entry, generation });
  }

  private recall(key: string, now: number): CacheEntry | undefined {
    const hit = this.memory.get(key);
    if (!hit) return undefined;
    if (hit.generation !== this.epoch.current() || Number(hit.valid_until) <= now) {
      this.memory.delete(key);
      return undefined;
    }
    return hit;
  }

  private get egress(): EgressPolicy {
    return this.deps.egress ?? this.deps.registry.egress;
  }

  /** A failing check for a registry the broker may not contact; no connection was made. */
  private registryNotAllowed(ref: ImageRef): GateCheck {
    return {
      type: 'registry',
      ok: false,
      code: 'registry_not_allowed',
      detail: `registry ${ref.registry} is not named by a trust policy (without wildcards) nor configured in KEYWARDEN_EGRESS_ALLOW or KEYWARDEN_INSECURE_REGISTRIES; the broker does not contact it`,
    };
  }

  /** Failures that came with an underlying error: full detail to the log, never to the caller. */
  private logFailures(image: string, checks: GateCheck[]): void {
    for (const c of checks) {
      if (c.ok || c.cause === undefined) continue;
      const err = c.cause instanceof Error ? { name: c.cause.name, message: c.cause.message, stack: c.cause.stack } : { message: String(c.cause) };
      this.deps.logger?.warn({ image, check: c.type, code: c.code, err }, 'release gate: check failed on a remote or internal error');
    }
  }

  /**
   * The cached path: one primary-key lookup. Expired entries never match (they are overwritten
   * by the next fresh decision for the same key).
   */
  async lookupCache(cacheKey: string, now: number = this.deps.clock()): Promise<CacheEntry | undefined> {
    return this.dal.findCached(cacheKey, now);
  }

  /** The current trust epoch, confirmed (for computing a cache key outside a decision: the bench). */
  async currentTrustEpoch(): Promise<number> {
    return this.epoch.confirmed();
  }

  /**
   * A client's release request (the Docker plugin at docker run or service create): only a
   * client an admin gave releaseGate may ask; the refusal is on the record.
   */
  async decideForClient(principal: Extract<Principal, { kind: 'client' }>, meta: RequestMeta, image: string, request: ClientReleaseRequest): Promise<DecisionView> {
    const { releaseGate } = await this.deps.clientCapabilities.capabilitiesOf(principal.id).catch(async (err: unknown) => {
      // releaseGate set outside the broker (its MAC does not verify): refused, and on the record
      if (err instanceof IntegrityFailureError) {
        await this.deps.audit.record({ actor: actorOf(principal), action: 'authz.deny', resource: { kind: 'image', name: image.slice(0, 512) }, outcome: 'error', reason: err.detail, details: { ...request.context, route: 'POST /v1/client/releases', integrity: 'row_mac' }, request: meta });
      }
      throw err;
    });
    if (!releaseGate) {
      const reason = 'this client may not ask the release gate (releaseGate is not set)';
      await this.deps.audit.record({ actor: actorOf(principal), action: 'authz.deny', resource: { kind: 'image', name: image.slice(0, 512) }, outcome: 'deny', reason, details: { ...request.context, route: 'POST /v1/client/releases' }, request: meta });
      throw new ForbiddenError(reason, 'release_gate_not_allowed');
    }
    return this.decide(principal, meta, image, request);
  }

  async decide(principal: Principal, meta: RequestMeta, image: string, request: ClientReleaseRequest = {}): Promise<DecisionView> {
    let ref: ImageRef;
    try {
      ref = parseImageRef(image);
    } catch (err) {
      if (err instanceof ImageRefError) throw new InvalidInputError(`image reference is invalid: ${err.message}`);
      throw err;
    }
    const { options, registry } = this.deps;
    const repoName = `${ref.registry}/${ref.repository}`;
    // the policies and every cached decision below are read under this epoch
    const snapshot = await this.policySnapshot();
    const { generation } = snapshot;
    let selection = snapshot.selections.get(repoName);
    if (!selection) {
      selection = {
        // chosen from the reference alone: nothing is contacted before a policy says so
        selected: selectPolicy(snapshot.policies, repoName),
        registryPermitted: this.egress.registryPermitted(ref.registry, snapshot.namedRegistries),
      };
      if (snapshot.selections.size < MEMORY_SELECTIONS) snapshot.selections.set(repoName, selection);
    }
    const { selected, registryPermitted } = selection;

    if (!selected) {
      const noPolicy = (allow: boolean): GateCheck => ({
        type: 'policy',
        ok: allow,
        code: allow ? undefined : 'no_policy',
        detail: `no trust policy matches ${repoName}; default decision is ${options.defaultDecision} (KEYWARDEN_GATE_DEFAULT)`,
      });
      // default deny, or a digest reference: decided without any network traffic
      if (options.defaultDecision === 'deny' || ref.digest) {
        const allow = options.defaultDecision === 'allow';
        return this.record(principal, meta, request, { image, digest: ref.digest ?? null, policy: null, policyVersion: null, decision: allow ? 'allow' : 'deny', checks: [noPolicy(allow)] });
      }
      // default allow: the tag is resolved (the caller deploys the digest), if the registry may be contacted
      const checks: GateCheck[] = [];
      let digest: string | undefined;
      if (!registryPermitted) {
        checks.push(this.registryNotAllowed(ref));
      } else {
        try {
          digest = await withDeadline(registry.resolveDigest(ref), options.timeoutMs, `registry ${ref.registry}`);
        } catch (err) {
          checks.push(remoteFailure('registry', `cannot resolve ${image}`, err));
        }
      }
      const allow = checks.length === 0;
      checks.push(noPolicy(allow));
      this.logFailures(image, checks);
      return this.record(principal, meta, request, { image, digest: digest ?? null, policy: null, policyVersion: null, decision: allow ? 'allow' : 'deny', checks });
    }

    const { policy } = selected;
    const failDecision: ReleaseDecision = policy.document.mode === 'warn' ? 'warn' : 'deny';
    const base = { image, policy: policy.name, policyVersion: policy.version };
    // a policy whose registry part is a wildcard (e.g. "**") opens no egress by itself
    const needsRegistry = !ref.digest || !!policy.document.cosign || !!policy.document.rules;
    if (needsRegistry && !registryPermitted) {
      return this.record(principal, meta, request, { ...base, digest: ref.digest ?? null, decision: failDecision, checks: [this.registryNotAllowed(ref)] });
    }

    // resolve the digest: a tag is mutable, so it is resolved on every request
    let digest = ref.digest;
    if (!digest) {
      try {
        digest = await withDeadline(registry.resolveDigest(ref), options.timeoutMs, `registry ${ref.registry}`);
      } catch (err) {
        const resolution = remoteFailure('registry', `cannot resolve ${image}`, err);
        if (resolution.code === 'registry_not_found') resolution.transient = false;
        this.logFailures(image, [resolution]);
        return this.record(principal, meta, request, { ...base, digest: null, decision: failDecision, checks: [resolution] });
      }
    }

    const now = this.deps.clock();
    const ttlMs = options.cacheTtlSeconds * 1000;
    const subject = ref.tag ? `${repoName}:${ref.tag}` : repoName;
    // only a user the policy judges splits the cache; any other user gets the image's decision
    const containerUser = policy.document.rules?.nonRootUser ? overridingUser(request.containerUser) : undefined;
    const cacheKey = gateCacheKey(subject, digest, policy.name, policy.version, generation, containerUser);
    if (ttlMs > 0) {
      let hit = this.recall(cacheKey, now);
      if (!hit) {
        hit = await this.lookupCache(cacheKey, now);
        if (hit) this.remember(cacheKey, hit, generation);
      }
      this.telemetry.gateCacheLookup(hit !== undefined);
      if (hit) {
        return this.record(principal, meta, request, {
          ...base,
          digest,
          decision: hit.decision,
          checks: JSON.parse(hit.checks) as GateCheck[],
          cached: { from: hit.decision_id, validUntil: Number(hit.valid_until) },
        });
      }
    }

    const ctx: CheckContext = {
      ref,
      digest,
      policy: policy.document,
      registry,
      signingKeys: this.deps.signingKeys,
      now,
      timeoutMs: options.timeoutMs,
      notaryFetch: this.egress.fetch,
      containerUser,
    };
    const guard = async (type: string, fn: () => Promise<GateCheck | GateCheck[]>): Promise<GateCheck[]> => {
      try {
        const r = await fn();
        return Array.isArray(r) ? r : [r];
      } catch (err) {
        return [remoteFailure(type, `${type} check failed`, err)];
      }
    };
    const parts = await Promise.all([
      policy.document.cosign ? guard('cosign', () => cosignCheck(ctx)) : Promise.resolve([]),
      policy.document.notary ? guard('notary', () => notaryCheck(ctx)) : Promise.resolve([]),
      policy.document.rules ? guard('rules', () => ruleChecks(ctx)) : Promise.resolve([]),
    ]);
    const checks = parts.flat();
    this.logFailures(image, checks);
    const decision: ReleaseDecision = checks.every((c) => c.ok) ? 'allow' : failDecision;

    // Allows are cached (bounded by TTL and trust-data expiry). A deny is cached only when it
    // rests on the image's own content (config rules), which its digest fixes: a missing
    // signature or Notary tag can be added a minute later and must not stay denied.
    const contentOnly = new Set(['nonRootUser', 'requiredLabels', 'forbidLabels', 'maxAgeDays']);
    const denyIsFinal = checks.filter((c) => !c.ok).every((c) => contentOnly.has(c.type));
    let cache: { key: string; subject: string; validUntil: number } | undefined;
    if (ttlMs > 0 && !checks.some((c) => c.transient) && denyIsFinal) {
      const validUntil = Math.min(now + ttlMs, ...checks.map((c) => c.expiresAt ?? Infinity));
      if (validUntil > now) cache = { key: cacheKey, subject, validUntil };
    }
    const view = await this.record(principal, meta, request, { ...base, digest, decision, checks, cache });
    // committed: this instance answers the next one from memory (under the epoch it was decided under)
    if (cache) this.remember(cache.key, { decision_id: view.id, decision, checks: JSON.stringify(checks.map(publicCheck)), valid_until: cache.validUntil }, generation);
    return view;
  }

  private async record(
    principal: Principal,
    meta: RequestMeta,
    request: ClientReleaseRequest,
    d: {
      image: string;
      digest: string | null;
      policy: string | null;
      policyVersion: number | null;
      decision: ReleaseDecision;
      checks: GateCheck[];
      cached?: { from: string; validUntil: number };
      cache?: { key: string; subject: string; validUntil: number };
    },
  ): Promise<DecisionView> {
    const now = this.deps.clock();
    const id = `rd_${randomBytes(18).toString('base64url')}`;
    const checks = d.checks.map(publicCheck);
    const checksJson = JSON.stringify(checks);
    const row: DecisionRow = {
      id,
      image: d.image.slice(0, 1024),
      digest: d.digest,
      policy: d.policy,
      policy_version: d.policyVersion,
      decision: d.decision,
      checks: checksJson,
      cached: !!d.cached,
      cached_from: d.cached?.from ?? null,
      valid_until: d.cached?.validUntil ?? d.cache?.validUntil ?? null,
      decided_by: principalLabel(principal),
      decided_at: now,
    };
    const failing = checks.find((c) => !c.ok);
    const event = {
      actor: actorOf(principal),
      action: 'release.decide',
      resource: { kind: 'image', name: d.image.slice(0, 512) },
      outcome: d.decision === 'deny' ? 'deny' : 'allow',
      reason: failing ? `${failing.type}: ${failing.detail}`.slice(0, 1000) : null,
      details: {
        decisionId: id,
        decision: d.decision,
        digest: d.digest,
        policy: d.policy,
        policyVersion: d.policyVersion,
        cached: !!d.cached,
        ...(d.cached ? { cachedFrom: d.cached.from } : {}),
        checks: checks.map((c) => ({ type: c.type, ok: c.ok })),
        ...(request.containerUser !== undefined ? { containerUser: request.containerUser } : {}),
        ...(request.context && Object.keys(request.context).length ? { context: request.context } : {}),
      },
      request: meta,
    } satisfies AuditEventInput;
    if (!d.cache) {
      // no cache row to write: the decision row and its event join the audit's group commit
      // (one transaction for every decision waiting), committed before the caller is answered
      await this.deps.audit.recordWithRows([event], [this.dal.insertStatement(row)]);
      this.telemetry.gateDecision(d.decision);
      return toView(row);
    }
    await this.deps.audit.transact(async (trx, recordEvent) => {
      await this.dal.insert(trx, row);
      if (d.cache && d.digest && d.policy !== null && d.policyVersion !== null) {
        await this.dal.cache(trx, {
          cache_key: d.cache.key,
          subject: d.cache.subject.slice(0, 1024),
          digest: d.digest,
          policy: d.policy,
          policy_version: d.policyVersion,
          decision_id: id,
          decision: d.decision,
          checks: checksJson,
          valid_until: d.cache.validUntil,
        });
      }
      await recordEvent(event);
    });
    this.telemetry.gateDecision(d.decision);
    return toView(row);
  }

  async get(id: string): Promise<DecisionView> {
    const row = await this.dal.find(id);
    if (!row) throw new NotFoundError(`release decision ${id}`);
    return toView(row);
  }

  /** Newest first; keyset pagination on (decided_at, id). */
  async list(q: { image?: string; digest?: string; decision?: string; policy?: string; after?: { at: number; id: string }; limit: number }): Promise<DecisionView[]> {
    return (await this.dal.list(q)).map(toView);
  }
}
