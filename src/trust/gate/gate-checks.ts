/**
 * The individual release-gate checks: cosign/sigstore signatures, Notary v1 trust data and image
 * config rules. A check never throws: remote failures become a failing check marked `transient`
 * (never cached), verification failures are deterministic (cacheable).
 */
import { createPublicKey } from 'node:crypto';
import { publicKeyId, readCosignSignatures, readSigstoreBundles, verifyCosignSignatures, type TrustedKey } from '../cosign/cosign-signatures.js';
import { expectedIdentity, SignedIdentityError, type ExpectedIdentity, type SignedIdentityRequirement } from '../cosign/signed-identity.js';
import { verifyNotaryTrust } from '../notary/index.js';
import type { ImageRef } from '../registry/image-ref.js';
import { RegistryError, type ImageConfig, type ImageRuntimeConfig, type RegistryClient } from '../registry/registry-client.js';
import type { SigningKeysService } from '../signing/signing-keys-service.js';
import { matchesValueGlob } from '../glob.js';
import type { PolicyDocument } from './policy-schema.js';

export interface CheckResult {
  type: string;
  ok: boolean;
  detail: string;
  /** Stable machine-readable code for failures (e.g. notary result codes). */
  code?: string;
}

export interface GateCheck extends CheckResult {
  /** Failed because something was unreachable / slow: the outcome must not be cached. */
  transient?: boolean;
  /** Epoch ms after which the trust data this check relied on expires. */
  expiresAt?: number;
  /** The underlying error, for the log only (never part of the decision). */
  cause?: unknown;
}

export class DeadlineError extends Error {
  override readonly name = 'DeadlineError';
}

/** Rejects with DeadlineError when `promise` does not settle within `ms`. */
export function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new DeadlineError(`${what} did not answer within ${ms} ms`)), ms);
    timer.unref?.();
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/**
 * A registry / network failure as a transient failing check: a stable code and a short reason.
 * RegistryError messages are written to be shown; anything else (socket errors, parser errors
 * quoting upstream bodies) stays in `cause`, which the gate logs and never returns.
 */
export function remoteFailure(type: string, what: string, err: unknown): GateCheck {
  if (err instanceof DeadlineError) return { type, ok: false, code: 'timeout', detail: err.message, transient: true, cause: err };
  if (err instanceof RegistryError) {
    return { type, ok: false, code: `registry_${err.code}`, detail: `${what}: ${err.message}`, transient: true, cause: err };
  }
  return { type, ok: false, code: 'error', detail: `${what}: internal error (details are in the broker log)`, transient: true, cause: err };
}

export interface CheckContext {
  ref: ImageRef;
  digest: string;
  policy: PolicyDocument;
  registry: RegistryClient;
  signingKeys: SigningKeysService;
  now: number;
  timeoutMs: number;
  /** fetch for Notary servers, bound to the broker's egress rules */
  notaryFetch?: typeof fetch;
  /**
   * The user the container will run as (docker run --user), when the caller knows it. A
   * non-empty value is what nonRootUser judges instead of the image's configured user.
   */
  containerUser?: string;
}

/** The --user that overrides the image's, or undefined ("" means the image's own user). */
export function overridingUser(containerUser: string | undefined): string | undefined {
  return containerUser === undefined || containerUser === '' ? undefined : containerUser;
}

// ------------------------------------------------------------------------------ cosign

export async function cosignCheck(ctx: CheckContext): Promise<GateCheck> {
  const spec = ctx.policy.cosign!;
  const threshold = spec.threshold ?? 1;
  const trustedKeys: TrustedKey[] = [];
  /** key id -> index of the policy key entry it belongs to (all versions of a broker key = one entry) */
  const entryOf = new Map<string, number>();
  const labels: string[] = [];
  const missing: string[] = [];
  for (const [i, key] of spec.keys.entries()) {
    if (key.trimStart().startsWith('-----BEGIN')) {
      const publicKey = createPublicKey(key);
      const id = publicKeyId(publicKey);
      labels.push(`key:${id.slice(0, 12)}`);
      if (!entryOf.has(id)) {
        entryOf.set(id, i);
        trustedKeys.push({ id, publicKey });
      }
    } else {
      labels.push(key);
      const versions = await ctx.signingKeys.publicKeys(key);
      if (!versions) {
        missing.push(key);
        continue;
      }
      for (const v of versions) {
        if (entryOf.has(v.keyId)) continue;
        entryOf.set(v.keyId, i);
        trustedKeys.push({ id: v.keyId, publicKey: v.publicKey });
      }
    }
  }
  const missingNote = missing.length ? `; signing key(s) not found: ${missing.join(', ')}` : '';
  if (trustedKeys.length === 0) {
    return { type: 'cosign', ok: false, code: 'no_trusted_keys', detail: `no trusted keys available${missingNote}` };
  }

  let identity: ExpectedIdentity;
  try {
    const requirements: SignedIdentityRequirement[] | undefined =
      spec.signedIdentity === undefined ? undefined : Array.isArray(spec.signedIdentity) ? spec.signedIdentity : [spec.signedIdentity];
    identity = expectedIdentity(ctx.ref, requirements);
  } catch (err) {
    if (!(err instanceof SignedIdentityError)) throw err;
    return { type: 'cosign', ok: false, code: 'invalid_policy', detail: `cosign.signedIdentity: ${err.message}` };
  }

  const loc = { registry: ctx.ref.registry, repository: ctx.ref.repository, digest: ctx.digest };
  let signatures;
  let bundles;
  try {
    [signatures, bundles] = await withDeadline(
      Promise.all([readCosignSignatures(ctx.registry, loc), readSigstoreBundles(ctx.registry, loc)]),
      ctx.timeoutMs,
      `registry ${ctx.ref.registry}`,
    );
  } catch (err) {
    return remoteFailure('cosign', 'cannot read signatures', err);
  }
  if (signatures.length === 0 && bundles.length === 0) {
    return { type: 'cosign', ok: false, code: 'no_signatures', detail: `no cosign signatures or sigstore bundles found for ${ctx.digest}` };
  }
  const verification = verifyCosignSignatures({ signatures, bundles, digest: ctx.digest, identity, trustedKeys });
  const signedEntries = new Set<number>();
  for (const id of verification.validKeyIds) {
    const entry = entryOf.get(id);
    if (entry !== undefined) signedEntries.add(entry);
  }
  const signers = [...signedEntries].sort((a, b) => a - b).map((i) => labels[i]);
  if (signedEntries.size >= threshold) {
    // say so when a policy's signedIdentity let in signatures made for another repository
    const foreign = [
      ...new Set(verification.results.filter((r) => r.ok && r.signedIdentity && r.signedIdentity !== identity.image).map((r) => r.signedIdentity!)),
    ];
    const signedAs = foreign.length ? `; signed as ${foreign.join(', ')}, accepted by cosign.signedIdentity` : '';
    return {
      type: 'cosign',
      ok: true,
      detail: `${signedEntries.size} of ${threshold} required trusted key(s) signed ${ctx.digest} (${signers.join(', ')})${signedAs}`,
    };
  }
  const reasons = [...new Set(verification.results.filter((r) => !r.ok).map((r) => r.reason))].slice(0, 3);
  const why = reasons.length ? `; ${reasons.join('; ')}` : '';
  if (signedEntries.size === 0) {
    const untrusted = verification.results.every((r) => !r.ok && !r.keyId);
    const byTrustedKeys = verification.results.filter((r) => r.keyId);
    const wrongRepository = byTrustedKeys.length > 0 && byTrustedKeys.every((r) => r.identityMismatch);
    return {
      type: 'cosign',
      ok: false,
      code: untrusted ? 'untrusted_signature' : wrongRepository ? 'identity_mismatch' : 'invalid_signature',
      detail: `no valid signature by a trusted key for ${ctx.digest}${why}${missingNote}`,
    };
  }
  return {
    type: 'cosign',
    ok: false,
    code: 'threshold_not_met',
    detail: `threshold not met: ${signedEntries.size} of ${threshold} required trusted keys signed ${ctx.digest} (${signers.join(', ')})${why}${missingNote}`,
  };
}

// ------------------------------------------------------------------------------ notary

export async function notaryCheck(ctx: CheckContext): Promise<GateCheck> {
  const spec = ctx.policy.notary!;
  if (!ctx.ref.tag) {
    return {
      type: 'notary',
      ok: false,
      code: 'tag_required',
      detail: 'notary trust data is kept per tag, but the image reference has only a digest: reference the image by tag (or tag@digest)',
    };
  }
  const gun = spec.gun ?? `${ctx.ref.registry}/${ctx.ref.repository}`;
  let result;
  try {
    result = await withDeadline(
      verifyNotaryTrust({
        server: spec.server,
        gun,
        tag: ctx.ref.tag,
        expectedDigest: ctx.digest,
        rootKeys: spec.rootKeys,
        delegations: spec.delegations,
        threshold: spec.threshold,
        now: new Date(ctx.now),
        timeoutMs: ctx.timeoutMs,
        ...(ctx.notaryFetch ? { fetchImpl: ctx.notaryFetch } : {}),
      }),
      ctx.timeoutMs,
      `notary server ${spec.server}`,
    );
  } catch (err) {
    return remoteFailure('notary', `notary server ${spec.server}`, err);
  }
  if (!result.ok) {
    return {
      type: 'notary',
      ok: false,
      code: result.code,
      detail: result.reason,
      transient: result.code === 'unreachable',
    };
  }
  const check: GateCheck = {
    type: 'notary',
    ok: true,
    detail: `${gun}:${ctx.ref.tag} is signed for ${result.digest} (${(result.roles ?? []).join(', ')})${result.expires ? `, trust data valid until ${result.expires.toISOString()}` : ''}`,
  };
  if (result.expires) check.expiresAt = result.expires.getTime();
  return check;
}

// ------------------------------------------------------------------------------ image config rules

/** USER values that run as root: empty, root, 0 (any number of zeros), with or without a group. */
export function runsAsRoot(user: unknown): boolean {
  if (typeof user !== 'string') return true;
  const name = user.trim().split(':')[0]!.trim();
  return name === '' || name === 'root' || /^0+$/.test(name);
}

export async function ruleChecks(ctx: CheckContext): Promise<GateCheck[]> {
  const rules = ctx.policy.rules!;
  const names: string[] = [];
  if (rules.nonRootUser) names.push('nonRootUser');
  if (rules.requiredLabels && Object.keys(rules.requiredLabels).length) names.push('requiredLabels');
  if (rules.forbidLabels && (Array.isArray(rules.forbidLabels) ? rules.forbidLabels.length : Object.keys(rules.forbidLabels).length)) {
    names.push('forbidLabels');
  }
  if (rules.maxAgeDays !== undefined) names.push('maxAgeDays');
  if (names.length === 0) return [];

  let parsed: unknown;
  try {
    parsed = await withDeadline(
      ctx.registry.getImageConfig({ registry: ctx.ref.registry, repository: ctx.ref.repository, digest: ctx.digest }),
      ctx.timeoutMs,
      `registry ${ctx.ref.registry}`,
    );
  } catch (err) {
    return names.map((type) => remoteFailure(type, 'cannot read the image config', err));
  }
  const image: ImageConfig | undefined = parsed && typeof parsed === 'object' ? (parsed as ImageConfig) : undefined;
  const config: ImageRuntimeConfig = image && image.config && typeof image.config === 'object' ? (image.config as ImageRuntimeConfig) : {};
  const labels: Record<string, unknown> = config.Labels && typeof config.Labels === 'object' ? (config.Labels as Record<string, unknown>) : {};
  const out: GateCheck[] = [];

  const containerUser = overridingUser(ctx.containerUser);
  if (rules.nonRootUser && containerUser !== undefined) {
    out.push(
      runsAsRoot(containerUser)
        ? { type: 'nonRootUser', ok: false, code: 'runs_as_root', detail: `container runs as root (user "${containerUser}")` }
        : { type: 'nonRootUser', ok: true, detail: `container runs as "${containerUser}"` },
    );
  } else if (rules.nonRootUser) {
    const user = typeof config.User === 'string' ? config.User : '';
    out.push(
      runsAsRoot(user)
        ? { type: 'nonRootUser', ok: false, code: 'runs_as_root', detail: user.trim() ? `image runs as root (User "${user}")` : 'image runs as root (no User set)' }
        : { type: 'nonRootUser', ok: true, detail: `image runs as "${user}"` },
    );
  }

  if (names.includes('requiredLabels')) {
    const problems: string[] = [];
    for (const [label, glob] of Object.entries(rules.requiredLabels!)) {
      const value = labels[label];
      if (typeof value !== 'string') problems.push(`label ${label} is missing`);
      else if (!matchesValueGlob(glob, value)) problems.push(`label ${label}="${value}" does not match "${glob}"`);
    }
    out.push(
      problems.length
        ? { type: 'requiredLabels', ok: false, code: 'label_missing', detail: problems.join('; ') }
        : { type: 'requiredLabels', ok: true, detail: `required labels present: ${Object.keys(rules.requiredLabels!).join(', ')}` },
    );
  }

  if (names.includes('forbidLabels')) {
    const forbidden: Record<string, string> = Array.isArray(rules.forbidLabels)
      ? Object.fromEntries(rules.forbidLabels.map((l) => [l, '*']))
      : rules.forbidLabels!;
    const found: string[] = [];
    for (const [label, glob] of Object.entries(forbidden)) {
      const value = labels[label];
      if (typeof value === 'string' && matchesValueGlob(glob, value)) found.push(`${label}="${value}"`);
    }
    out.push(
      found.length
        ? { type: 'forbidLabels', ok: false, code: 'label_forbidden', detail: `forbidden label(s) present: ${found.join(', ')}` }
        : { type: 'forbidLabels', ok: true, detail: 'no forbidden labels' },
    );
  }

  if (rules.maxAgeDays !== undefined) {
    const created = typeof image?.created === 'string' ? Date.parse(image.created) : NaN;
    if (!Number.isFinite(created)) {
      out.push({ type: 'maxAgeDays', ok: false, code: 'no_created', detail: 'image config has no valid created timestamp' });
    } else {
      const ageDays = (ctx.now - created) / 86_400_000;
      out.push(
        ageDays > rules.maxAgeDays
          ? {
              type: 'maxAgeDays',
              ok: false,
              code: 'too_old',
              detail: `image was created ${new Date(created).toISOString()}, ${ageDays.toFixed(1)} days ago (maximum ${rules.maxAgeDays})`,
            }
          : { type: 'maxAgeDays', ok: true, detail: `image is ${Math.max(0, ageDays).toFixed(1)} days old (maximum ${rules.maxAgeDays})` },
      );
    }
  }
  return out;
}
