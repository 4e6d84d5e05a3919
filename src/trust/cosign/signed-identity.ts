/**
 * Binding a cosign signature to the repository it was made for.
 *
 * A simple-signing payload names the image twice: `critical.image.docker-manifest-digest` (what
 * was signed) and `critical.identity.docker-reference` (where it was signed for). The digest alone
 * says nothing about the repository: whoever can push to a repository can copy a signed image and
 * its `.sig` tag there. So the signed identity must also be accepted for the image under decision.
 *
 * The accepted identities follow containers-policy.json(5) `signedIdentity`, restricted to the
 * types that make sense for cosign payloads (they carry a repository, never a tag we could trust):
 *  - `matchRepository` (default): signed for the same registry/repository as the image;
 *  - `exactRepository`: signed for the named repository (e.g. a promotion source);
 *  - `remapIdentity`: the image's `prefix` is replaced by `signedPrefix` (mirrors, promotion).
 * A policy may list several requirements; a signature is accepted when any of them accepts it.
 */
import { isValidRegistryHost, parseImageRef, ImageRefError, type ImageRef } from '../registry/image-ref.js';

export type SignedIdentityRequirement =
  | { type: 'matchRepository' }
  | { type: 'exactRepository'; dockerRepository: string }
  | { type: 'remapIdentity'; prefix: string; signedPrefix: string };

export const DEFAULT_SIGNED_IDENTITY: readonly SignedIdentityRequirement[] = [{ type: 'matchRepository' }];

const DOCKER_HUB = 'docker.io';
/** Host names Docker clients and cosign (go-containerregistry) use for Docker Hub. */
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

export class SignedIdentityError extends Error {
  override readonly name = 'SignedIdentityError';
}

/** Docker's own rule for "is the first path component a registry host?" */
export function looksLikeRegistryHost(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost' || component.startsWith('[');
}

function canonicalRegistry(registry: string): string {
  const host = registry.toLowerCase();
  return DOCKER_HUB_ALIASES.has(host) ? DOCKER_HUB : host;
}

function canonicalRepository(registry: string, repository: string): string {
  // Docker Hub's official images live under library/ ("busybox" is docker.io/library/busybox)
  return registry === DOCKER_HUB && !repository.includes('/') ? `library/${repository}` : repository;
}

function parseRepositoryReference(reference: string): ImageRef {
  // parseImageRef insists on a tag or digest; a docker-reference usually has neither, so give it
  // a placeholder tag that is dropped again (only registry/repository are compared)
  const lastSegment = reference.slice(reference.lastIndexOf('/') + 1);
  const hasTagOrDigest = reference.includes('@') || lastSegment.includes(':');
  return parseImageRef(hasTagOrDigest ? reference : `${reference}:latest`);
}

/**
 * The canonical `registry/repository` a docker reference names: Docker Hub aliases become
 * `docker.io`, single-component Hub repositories get `library/`, the host is lower-cased, and any
 * tag or digest is dropped. A reference without a registry host means Docker Hub, as in Docker.
 * Throws SignedIdentityError when it is not a docker reference.
 */
export function normalizeDockerRepository(reference: string): string {
  if (typeof reference !== 'string' || reference.length === 0) throw new SignedIdentityError('docker reference is empty');
  const slash = reference.indexOf('/');
  const qualified = slash === -1 || !looksLikeRegistryHost(reference.slice(0, slash)) ? `${DOCKER_HUB}/${reference}` : reference;
  let ref: ImageRef;
  try {
    ref = parseRepositoryReference(qualified);
  } catch (err) {
    if (err instanceof ImageRefError) throw new SignedIdentityError(`${JSON.stringify(reference.slice(0, 300))} is not a docker reference: ${err.message}`);
    throw err;
  }
  const registry = canonicalRegistry(ref.registry);
  return `${registry}/${canonicalRepository(registry, ref.repository)}`;
}

/**
 * A `remapIdentity` prefix: a registry host[:port], a namespace or a repository, fully qualified
 * and in the fully expanded form (`docker.io/library/busybox`, not `busybox`), no tag or digest.
 * Only the registry host is canonicalised (aliases, case); path components are validated.
 */
export function normalizeIdentityPrefix(prefix: string): string {
  if (typeof prefix !== 'string' || prefix.length === 0) throw new SignedIdentityError('prefix is empty');
  if (prefix.includes('@')) throw new SignedIdentityError(`prefix ${JSON.stringify(prefix)} must not contain a digest`);
  const slash = prefix.indexOf('/');
  const host = slash === -1 ? prefix : prefix.slice(0, slash);
  if (!looksLikeRegistryHost(host) || !isValidRegistryHost(host)) {
    throw new SignedIdentityError(`prefix ${JSON.stringify(prefix)} must start with a registry host (e.g. registry.example.com/team)`);
  }
  if (slash === -1) return canonicalRegistry(host);
  const path = prefix.slice(slash + 1);
  if (path.includes(':')) throw new SignedIdentityError(`prefix ${JSON.stringify(prefix)} must not contain a tag`);
  try {
    const ref = parseImageRef(`${prefix}:latest`);
    return `${canonicalRegistry(ref.registry)}/${ref.repository}`;
  } catch (err) {
    if (err instanceof ImageRefError) throw new SignedIdentityError(`prefix ${JSON.stringify(prefix)} is not a registry/namespace: ${err.message}`);
    throw err;
  }
}

/** containers-image refMatchesPrefix: equal, or the prefix followed by a path separator. */
function matchesPrefix(repository: string, prefix: string): boolean {
  return repository === prefix || repository.startsWith(`${prefix}/`);
}

/** What one requirement accepts for the image, with a human explanation for denials. */
function acceptedBy(requirement: SignedIdentityRequirement, imageRepository: string): { repository: string; via: string } | undefined {
  switch (requirement.type) {
    case 'matchRepository':
      return { repository: imageRepository, via: 'matchRepository' };
    case 'exactRepository':
      return { repository: normalizeDockerRepository(requirement.dockerRepository), via: 'exactRepository' };
    case 'remapIdentity': {
      const prefix = normalizeIdentityPrefix(requirement.prefix);
      // containers-image: an identity outside the prefix is used unchanged
      if (!matchesPrefix(imageRepository, prefix)) return { repository: imageRepository, via: 'remapIdentity (prefix does not apply)' };
      const signedPrefix = normalizeIdentityPrefix(requirement.signedPrefix);
      try {
        return {
          repository: normalizeDockerRepository(signedPrefix + imageRepository.slice(prefix.length)),
          via: `remapIdentity ${prefix} -> ${signedPrefix}`,
        };
      } catch {
        return undefined; // the remapped name is not a valid repository: nothing is accepted by this rule
      }
    }
  }
}

export interface ExpectedIdentity {
  /** canonical registry/repository of the image under decision */
  image: string;
  /** canonical registry/repository values a signature may name, each with the rule that allows it */
  accepted: Array<{ repository: string; via: string }>;
}

/**
 * The identities a signature for `image` may carry under `requirements` (default: matchRepository).
 * Throws SignedIdentityError when a requirement's repository or prefix is invalid.
 */
export function expectedIdentity(
  image: Pick<ImageRef, 'registry' | 'repository'>,
  requirements: readonly SignedIdentityRequirement[] = DEFAULT_SIGNED_IDENTITY,
): ExpectedIdentity {
  const registry = canonicalRegistry(image.registry);
  const imageRepository = `${registry}/${canonicalRepository(registry, image.repository)}`;
  const accepted: ExpectedIdentity['accepted'] = [];
  for (const requirement of requirements.length ? requirements : DEFAULT_SIGNED_IDENTITY) {
    const a = acceptedBy(requirement, imageRepository);
    if (a && !accepted.some((x) => x.repository === a.repository)) accepted.push(a);
  }
  return { image: imageRepository, accepted };
}

export interface IdentityCheck {
  ok: boolean;
  /** canonical signed registry/repository (absent when the docker-reference is not parseable) */
  signed?: string;
  reason?: string;
}

/** Checks a payload's `critical.identity.docker-reference` against the expected identity. */
export function checkSignedIdentity(dockerReference: string, expected: ExpectedIdentity): IdentityCheck {
  let signed: string;
  try {
    signed = normalizeDockerRepository(dockerReference);
  } catch (err) {
    return { ok: false, reason: `signed identity is not a docker reference (${(err as Error).message})` };
  }
  if (expected.accepted.some((a) => a.repository === signed)) return { ok: true, signed };
  const want = expected.accepted.length
    ? expected.accepted.map((a) => (a.via === 'matchRepository' ? a.repository : `${a.repository} (${a.via})`)).join(' or ')
    : '(none: the policy signedIdentity accepts no repository for this image)';
  return { ok: false, signed, reason: `signed identity ${signed} does not match the expected identity ${want}` };
}
