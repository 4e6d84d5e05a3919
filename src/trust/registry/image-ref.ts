/**
 * Parsing and formatting of fully-qualified OCI image references:
 *   registry[:port]/repo/path:tag
 *   registry[:port]/repo/path@sha256:<hex>
 *   registry[:port]/repo/path:tag@sha256:<hex>
 *
 * The registry host is mandatory (no implicit docker.io): the broker must
 * always know exactly which registry it is talking to.
 */

export interface ImageRef {
  /** host or host:port (IPv6 literals in brackets) */
  registry: string;
  /** repository path inside the registry, e.g. "team/app" */
  repository: string;
  tag?: string;
  /** "sha256:<64 hex>" or "sha512:<128 hex>" */
  digest?: string;
}

export class ImageRefError extends Error {
  override readonly name = 'ImageRefError';
  constructor(
    message: string,
    readonly ref: string,
  ) {
    super(message);
  }
}

const MAX_REF_LENGTH = 512;
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;
const HOST_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const IPV6 = /^\[[0-9A-Fa-f:.]+\]$/;

/** True when `digest` is a well-formed sha256/sha512 digest string. */
export function isDigest(digest: string): boolean {
  return DIGEST.test(digest);
}

/** Validates a registry "host[:port]" string. */
export function isValidRegistryHost(registry: string): boolean {
  let host = registry;
  const portMatch = /^(.*):(\d{1,5})$/.exec(registry);
  if (portMatch) {
    const port = Number(portMatch[2]);
    if (port < 1 || port > 65535) return false;
    host = portMatch[1]!;
  }
  if (host.length === 0 || host.length > 253) return false;
  if (IPV6.test(host)) return true;
  return host.split('.').every((l) => HOST_LABEL.test(l));
}

function looksLikeRegistry(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost' || component.startsWith('[');
}

export function parseImageRef(input: string): ImageRef {
  if (typeof input !== 'string' || input.length === 0) {
    throw new ImageRefError('image reference is empty', String(input));
  }
  if (input.length > MAX_REF_LENGTH) {
    throw new ImageRefError(`image reference is longer than ${MAX_REF_LENGTH} characters`, input);
  }
  if (/\s/.test(input) || input.includes('://')) {
    throw new ImageRefError('image reference must not contain whitespace or a URL scheme', input);
  }

  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) {
      throw new ImageRefError(`invalid digest "${digest}" (expected sha256:<64 lowercase hex>)`, input);
    }
  }

  const slash = rest.indexOf('/');
  if (slash === -1) {
    throw new ImageRefError('image reference must include a registry host and a repository (registry/repo)', input);
  }
  const registry = rest.slice(0, slash);
  let remainder = rest.slice(slash + 1);
  if (!looksLikeRegistry(registry)) {
    throw new ImageRefError(
      `"${registry}" is not a registry host; references must be fully qualified (e.g. registry.example.com/team/app:v1)`,
      input,
    );
  }
  if (!isValidRegistryHost(registry)) {
    throw new ImageRefError(`invalid registry host "${registry}"`, input);
  }

  let tag: string | undefined;
  const lastColon = remainder.lastIndexOf(':');
  if (lastColon !== -1) {
    tag = remainder.slice(lastColon + 1);
    remainder = remainder.slice(0, lastColon);
    if (!TAG.test(tag)) {
      throw new ImageRefError(`invalid tag "${tag}"`, input);
    }
  }

  const repository = remainder;
  if (repository.length === 0) {
    throw new ImageRefError('repository is empty', input);
  }
  if (repository.length > 255) {
    throw new ImageRefError('repository name is too long', input);
  }
  for (const component of repository.split('/')) {
    if (!PATH_COMPONENT.test(component)) {
      throw new ImageRefError(
        `invalid repository path component "${component}" (lowercase alphanumerics separated by ".", "_", "__" or "-")`,
        input,
      );
    }
  }
  if (tag === undefined && digest === undefined) {
    throw new ImageRefError('image reference needs a tag or a digest', input);
  }

  const ref: ImageRef = { registry, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

export function formatImageRef(ref: ImageRef): string {
  let out = `${ref.registry}/${ref.repository}`;
  if (ref.tag) out += `:${ref.tag}`;
  if (ref.digest) out += `@${ref.digest}`;
  return out;
}

/** "registry/repository" — the docker-reference cosign puts into simple-signing payloads. */
export function repositoryName(ref: Pick<ImageRef, 'registry' | 'repository'>): string {
  return `${ref.registry}/${ref.repository}`;
}

/** Referrers tag schema / cosign tag base: "sha256:abc" -> "sha256-abc". */
export function digestToTag(digest: string): string {
  if (!DIGEST.test(digest)) throw new ImageRefError(`invalid digest "${digest}"`, digest);
  return digest.replace(':', '-');
}
