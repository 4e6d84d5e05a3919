/**
 * Minimal OCI distribution client: manifests, blobs, referrers, with anonymous,
 * basic and bearer-token (distribution token spec) authentication.
 *
 * Only ever throws RegistryError for network / protocol problems. Its messages are short and fixed
 * (registry name, what was asked, HTTP status): upstream bodies, socket errors and the addresses
 * of other hops go to the log only. Connections follow the EgressPolicy: credentials stay on the
 * registry's origin, and realms, redirects and upload locations may leave it only for
 * explicitly allowed hosts.
 *
 * Why not @sigstore/oci (sigstore-js's OCI client, 0.6): it was a dependency for a while and
 * nothing used it, because it cannot carry the broker's rules. It fetches through its own
 * make-fetch-happen instance (no fetch injection, so the EgressPolicy's address checks and
 * pinned connections would be bypassed), picks plain HTTP only for localhost (no
 * KEYWARDEN_INSECURE_REGISTRIES), follows redirects and token realms to any host with the
 * credentials, reads only Basic/Bearer challenges with a case-sensitive scheme, and has no blob
 * download or referrers listing (only a referrers ping). So it and @sigstore/protobuf-specs
 * (also unimported; it stays as a transitive dependency of @sigstore/bundle, sign and verify)
 * were removed, and this is the one registry client.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { EgressConnectionError, EgressPolicy, EgressRefusedError, classifyConnectionError } from './egress-policy.js';
import { type ImageRef, isDigest, parseImageRef, digestToTag } from './image-ref.js';
import { type AuthChallenge, parseWwwAuthenticate } from './www-authenticate.js';

export const MEDIA_TYPE_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MEDIA_TYPE_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MEDIA_TYPE_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const MEDIA_TYPE_DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const MEDIA_TYPE_OCI_EMPTY = 'application/vnd.oci.empty.v1+json';
export const MEDIA_TYPE_OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';

export const MANIFEST_ACCEPT = [
  MEDIA_TYPE_OCI_MANIFEST,
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_DOCKER_MANIFEST,
  MEDIA_TYPE_DOCKER_MANIFEST_LIST,
].join(', ');

const INDEX_MEDIA_TYPES = new Set([MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST]);

export type RegistryErrorCode =
  | 'unreachable'
  | 'timeout'
  | 'not_found'
  | 'unauthorized'
  | 'insecure_refused'
  | 'egress_refused'
  | 'bad_response';

export class RegistryError extends Error {
  override readonly name = 'RegistryError';
  readonly code: RegistryErrorCode;
  readonly registry?: string;
  readonly status?: number;
  constructor(code: RegistryErrorCode, message: string, opts: { registry?: string; status?: number; cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.code = code;
    if (opts.registry !== undefined) this.registry = opts.registry;
    if (opts.status !== undefined) this.status = opts.status;
  }
}

export type RegistryCredentials = { username: string; password: string } | { token: string };

export interface RegistryClientOptions {
  /** host:port values for which plain http is allowed (and used); ignored when `egress` is given. */
  insecureRegistries: string[];
  /** Where connections may go; default: only the insecure registries are explicitly allowed. */
  egress?: EgressPolicy;
  logger?: Logger;
  credentials?: (registry: string) => Promise<RegistryCredentials | undefined>;
  /** per HTTP exchange (request + body); default 15000 */
  timeoutMs?: number;
  fetchImpl?: typeof fetch;
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  artifactType?: string;
  platform?: Platform;
  urls?: string[];
  data?: string;
}

/**
 * A parsed image manifest or index (OCI or Docker), always a JSON object. Only its shape is
 * known, not its content: a registry may return any value in any field, so each is unknown
 * until checked where it is read.
 */
export interface ManifestJson {
  schemaVersion?: unknown;
  mediaType?: unknown;
  artifactType?: unknown;
  config?: unknown;
  layers?: unknown;
  manifests?: unknown;
  subject?: unknown;
  annotations?: unknown;
  [field: string]: unknown;
}

export interface ManifestResult {
  digest: string;
  mediaType: string;
  bytes: Buffer;
  json: ManifestJson;
}

/**
 * The fields of an image config (the OCI image config or Docker container config blob) that
 * are read. getImageConfig returns the parsed blob unchecked, so narrow to this after checking
 * that it is an object.
 */
export interface ImageConfig {
  created?: unknown;
  os?: unknown;
  architecture?: unknown;
  config?: unknown;
  [field: string]: unknown;
}

/** The runtime settings inside ImageConfig.config read by the gate. */
export interface ImageRuntimeConfig {
  User?: unknown;
  Labels?: unknown;
  [field: string]: unknown;
}

interface RawResponse {
  status: number;
  headers: Headers;
  body: Buffer;
  url: URL;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

type Actions = 'pull' | 'pull,push';

const MAX_REDIRECTS = 5;
const DEFAULT_TOKEN_TTL_S = 60;

/** Computes "<alg>:<hex>" of data. */
export function computeDigest(data: Uint8Array, algorithm: 'sha256' | 'sha512' = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}

function digestAlgorithm(digest: string): 'sha256' | 'sha512' {
  return digest.startsWith('sha512:') ? 'sha512' : 'sha256';
}

function assertDigest(digest: string, registry?: string): void {
  if (!isDigest(digest)) {
    // the digest may come from registry data: not echoed
    throw new RegistryError('bad_response', 'invalid digest', registry !== undefined ? { registry } : {});
  }
}

function encodeRepo(repo: string): string {
  return repo
    .split('/')
    .map((c) => encodeURIComponent(c))
    .join('/');
}

function errorMessages(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let i = 0; i < 4 && e; i++) {
    if (e instanceof Error) parts.push(e.message);
    else parts.push(String(e));
    e = e && typeof e === 'object' ? (e as { cause?: unknown }).cause : undefined;
  }
  return parts.join(': ');
}

function registryErrorMessage(body: Buffer): string | undefined {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: string; message?: string }> };
    if (Array.isArray(parsed.errors) && parsed.errors.length > 0) {
      return parsed.errors.map((e) => [e.code, e.message].filter(Boolean).join(': ')).join('; ');
    }
  } catch {
    /* not JSON */
  }
  return undefined;
}

function stripParams(contentType: string | null): string | undefined {
  if (!contentType) return undefined;
  return contentType.split(';')[0]!.trim();
}

export class RegistryClient {
  readonly egress: EgressPolicy;
  private readonly logger?: Logger;
  private readonly credentials: RegistryClientOptions['credentials'];
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;
  private readonly tokens = new Map<string, CachedToken>();
  /** registries that answered with a Basic challenge */
  private readonly basicRegistries = new Set<string>();

  constructor(opts: RegistryClientOptions) {
    this.egress = opts.egress ?? new EgressPolicy({ insecureHosts: opts.insecureRegistries ?? [], allowedHosts: [], logger: opts.logger });
    this.logger = opts.logger;
    this.credentials = opts.credentials;
    this.timeoutMs = opts.timeoutMs ?? 15_000;
    this.fetchImpl = opts.fetchImpl ?? this.egress.fetch;
  }

  isInsecure(registry: string): boolean {
    try {
      return this.egress.allowsPlainHttp(new URL(`http://${registry}/`));
    } catch {
      return false;
    }
  }

  private baseUrl(registry: string): string {
    return `${this.isInsecure(registry) ? 'http' : 'https'}://${registry}`;
  }

  private registryOrigin(registry: string): string {
    return new URL(this.baseUrl(registry)).origin;
  }

  /** Logs the detail and returns the error with its short public message. */
  private fail(code: RegistryErrorCode, message: string, registry: string, detail: Record<string, unknown> = {}, status?: number): RegistryError {
    // a missing manifest is routine (referrers fallback, signature tags); the rest is worth a warning
    const level = code === 'not_found' ? 'debug' : 'warn';
    this.logger?.[level]({ registry, code, status, ...detail }, `registry: ${message}`);
    return new RegistryError(code, message, status !== undefined ? { registry, status } : { registry });
  }

  // ---------------------------------------------------------------- public API

  /** Resolves a reference (tag or digest) to the manifest digest. */
  async resolveDigest(ref: ImageRef | string): Promise<string> {
    const r = typeof ref === 'string' ? parseImageRef(ref) : ref;
    const reference = r.digest ?? r.tag;
    if (!reference) throw new RegistryError('bad_response', 'image reference has neither tag nor digest', { registry: r.registry });
    const res = await this.request(r.registry, r.repository, 'pull', 'HEAD', `/v2/${encodeRepo(r.repository)}/manifests/${reference}`, {
      headers: { Accept: MANIFEST_ACCEPT },
    });
    // some registries/proxies do not implement HEAD; fall back to GET for anything
    // other than a definite not-found / auth failure
    if (![200, 401, 403, 404].includes(res.status)) {
      return this.checkResolved(r, (await this.getManifest(r.registry, r.repository, reference)).digest);
    }
    this.assertOk(res, r.registry, `manifest ${r.repository}:${reference}`);
    let digest = res.headers.get('docker-content-digest') ?? undefined;
    if (!digest || !isDigest(digest)) {
      const m = await this.getManifest(r.registry, r.repository, reference);
      digest = m.digest;
    }
    return this.checkResolved(r, digest);
  }

  private checkResolved(r: ImageRef, digest: string): string {
    if (r.digest && digest !== r.digest) {
      throw new RegistryError('bad_response', `registry returned digest ${digest} for ${r.digest}`, { registry: r.registry });
    }
    return digest;
  }

  async getManifest(registry: string, repo: string, reference: string): Promise<ManifestResult> {
    const res = await this.request(registry, repo, 'pull', 'GET', `/v2/${encodeRepo(repo)}/manifests/${reference}`, {
      headers: { Accept: MANIFEST_ACCEPT },
    });
    this.assertOk(res, registry, `manifest ${repo}:${reference}`);
    const bytes = res.body;
    let digest: string;
    if (reference.includes(':')) {
      assertDigest(reference, registry);
      digest = computeDigest(bytes, digestAlgorithm(reference));
      if (digest !== reference) {
        throw new RegistryError('bad_response', `manifest content digest ${digest} does not match requested ${reference}`, { registry });
      }
    } else {
      digest = computeDigest(bytes);
      const header = res.headers.get('docker-content-digest');
      if (header && header.startsWith('sha256:') && header !== digest) {
        throw this.fail('bad_response', `manifest content digest ${digest} does not match the registry's Docker-Content-Digest`, registry, { header: header.slice(0, 200) });
      }
    }
    let json: unknown;
    try {
      json = JSON.parse(bytes.toString('utf8'));
    } catch {
      throw new RegistryError('bad_response', `manifest ${repo}:${reference} is not valid JSON`, { registry });
    }
    if (!json || typeof json !== 'object') {
      throw new RegistryError('bad_response', `manifest ${repo}:${reference} is not a JSON object`, { registry });
    }
    const mediaType =
      (typeof (json as { mediaType?: unknown }).mediaType === 'string' ? (json as { mediaType: string }).mediaType : undefined) ??
      stripParams(res.headers.get('content-type')) ??
      MEDIA_TYPE_OCI_MANIFEST;
    return { digest, mediaType, bytes, json: json as ManifestJson };
  }

  async getBlob(registry: string, repo: string, digest: string): Promise<Buffer> {
    assertDigest(digest, registry);
    const res = await this.request(registry, repo, 'pull', 'GET', `/v2/${encodeRepo(repo)}/blobs/${digest}`, {});
    this.assertOk(res, registry, `blob ${repo}@${digest}`);
    const actual = computeDigest(res.body, digestAlgorithm(digest));
    if (actual !== digest) {
      throw new RegistryError('bad_response', `blob content digest ${actual} does not match ${digest}`, { registry });
    }
    return res.body;
  }

  async blobExists(registry: string, repo: string, digest: string, actions: Actions = 'pull'): Promise<boolean> {
    assertDigest(digest, registry);
    const res = await this.request(registry, repo, actions, 'HEAD', `/v2/${encodeRepo(repo)}/blobs/${digest}`, {});
    if (res.status === 404) return false;
    this.assertOk(res, registry, `blob ${repo}@${digest}`);
    return true;
  }

  /** Uploads a blob (monolithic) unless it already exists. Returns its digest and size. */
  async pushBlob(registry: string, repo: string, data: Buffer): Promise<{ digest: string; size: number }> {
    const digest = computeDigest(data);
    const size = data.length;
    if (await this.blobExists(registry, repo, digest, 'pull,push')) return { digest, size };
    const start = await this.request(registry, repo, 'pull,push', 'POST', `/v2/${encodeRepo(repo)}/blobs/uploads/`, {
      headers: { 'Content-Length': '0' },
    });
    this.assertOk(start, registry, `blob upload ${repo}`);
    const location = start.headers.get('location');
    if (!location) throw new RegistryError('bad_response', 'blob upload response has no Location header', { registry });
    let uploadUrl: URL;
    try {
      uploadUrl = new URL(location, start.url);
    } catch {
      throw this.fail('bad_response', `blob upload on ${registry}: invalid Location header`, registry);
    }
    // the registry's credentials never go to another origin; another origin at all only when allowed
    if (uploadUrl.origin !== this.registryOrigin(registry) && !this.egress.isExplicit(uploadUrl)) {
      throw this.fail('egress_refused', `blob upload on ${registry}: the upload location is on another host, which is not in KEYWARDEN_EGRESS_ALLOW`, registry, {
        location: `${uploadUrl.origin}${uploadUrl.pathname}`,
      });
    }
    uploadUrl.searchParams.set('digest', digest);
    const put = await this.request(registry, repo, 'pull,push', 'PUT', uploadUrl, {
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) },
      body: data,
    });
    this.assertOk(put, registry, `blob upload ${repo}@${digest}`);
    const header = put.headers.get('docker-content-digest');
    if (header && header !== digest) {
      throw this.fail('bad_response', `registry stored the blob under another digest than ${digest}`, registry, { header: header.slice(0, 200) });
    }
    return { digest, size };
  }

  async pushManifest(registry: string, repo: string, reference: string, bytes: Buffer, mediaType: string): Promise<string> {
    const digest = computeDigest(bytes);
    if (reference.includes(':') && reference !== digest) {
      throw new RegistryError('bad_response', `manifest digest ${digest} does not match reference ${reference}`, { registry });
    }
    const res = await this.request(registry, repo, 'pull,push', 'PUT', `/v2/${encodeRepo(repo)}/manifests/${reference}`, {
      headers: { 'Content-Type': mediaType },
      body: bytes,
    });
    this.assertOk(res, registry, `manifest push ${repo}:${reference}`);
    const header = res.headers.get('docker-content-digest');
    if (header && header !== digest) {
      throw this.fail('bad_response', `registry stored the manifest under another digest than ${digest}`, registry, { header: header.slice(0, 200) });
    }
    return digest;
  }

  /**
   * Lists referrers of `digest` via the OCI 1.1 referrers API, falling back to
   * the referrers tag schema (`sha256-<hex>` index) when the API is unsupported.
   */
  async getReferrers(registry: string, repo: string, digest: string, artifactType?: string): Promise<Descriptor[]> {
    assertDigest(digest, registry);
    let manifests: Descriptor[] | undefined;
    const query = artifactType ? `?artifactType=${encodeURIComponent(artifactType)}` : '';
    const res = await this.request(registry, repo, 'pull', 'GET', `/v2/${encodeRepo(repo)}/referrers/${digest}${query}`, {
      headers: { Accept: MEDIA_TYPE_OCI_INDEX },
    });
    const ct = stripParams(res.headers.get('content-type'));
    if (res.status === 200 && ct === MEDIA_TYPE_OCI_INDEX) {
      manifests = this.parseIndexManifests(res.body, registry);
    } else if (res.status === 200 || [400, 404, 405, 501].includes(res.status)) {
      // unsupported: fall back to the tag schema
      try {
        const idx = await this.getManifest(registry, repo, digestToTag(digest));
        manifests = this.parseIndexManifests(idx.bytes, registry);
      } catch (err) {
        if (err instanceof RegistryError && err.code === 'not_found') return [];
        throw err;
      }
    } else {
      this.assertOk(res, registry, `referrers ${repo}@${digest}`);
      manifests = [];
    }
    return artifactType ? manifests.filter((m) => m.artifactType === artifactType) : manifests;
  }

  /** True when the registry implements the OCI 1.1 referrers API for this repository. */
  async pingReferrers(registry: string, repo: string, digest: string): Promise<boolean> {
    assertDigest(digest, registry);
    const res = await this.request(registry, repo, 'pull', 'GET', `/v2/${encodeRepo(repo)}/referrers/${digest}`, {
      headers: { Accept: MEDIA_TYPE_OCI_INDEX },
    });
    return res.status === 200 && stripParams(res.headers.get('content-type')) === MEDIA_TYPE_OCI_INDEX;
  }

  /**
   * Fetches and parses the image config JSON. For an index, picks linux/amd64
   * (or the first manifest). The parsed JSON is returned as is, whatever value it holds (usually an
   * ImageConfig object).
   */
  async getImageConfig(ref: ImageRef | string): Promise<unknown> {
    const r = typeof ref === 'string' ? parseImageRef(ref) : ref;
    const digest = r.digest ?? (await this.resolveDigest(r));
    let manifest = await this.getManifest(r.registry, r.repository, digest);
    if (INDEX_MEDIA_TYPES.has(manifest.mediaType) || Array.isArray(manifest.json.manifests)) {
      const entries = this.parseIndexManifests(manifest.bytes, r.registry).filter(
        (m) => !m.platform || m.platform.os !== 'unknown',
      );
      const chosen =
        entries.find((m) => m.platform?.os === 'linux' && m.platform?.architecture === 'amd64') ?? entries[0];
      if (!chosen) throw new RegistryError('bad_response', `image index ${digest} has no manifests`, { registry: r.registry });
      manifest = await this.getManifest(r.registry, r.repository, chosen.digest);
    }
    const config = manifest.json.config as Descriptor | undefined;
    if (!config || typeof config.digest !== 'string') {
      throw new RegistryError('bad_response', `manifest ${manifest.digest} has no config descriptor`, { registry: r.registry });
    }
    const blob = await this.getBlob(r.registry, r.repository, config.digest);
    try {
      return JSON.parse(blob.toString('utf8')) as unknown;
    } catch {
      throw new RegistryError('bad_response', `image config ${config.digest} is not valid JSON`, { registry: r.registry });
    }
  }

  // ---------------------------------------------------------------- internals

  private parseIndexManifests(bytes: Buffer, registry: string): Descriptor[] {
    let json: { manifests?: unknown };
    try {
      json = JSON.parse(bytes.toString('utf8')) as { manifests?: unknown };
    } catch {
      throw new RegistryError('bad_response', 'image index is not valid JSON', { registry });
    }
    if (!json || !Array.isArray(json.manifests)) {
      throw new RegistryError('bad_response', 'image index has no manifests array', { registry });
    }
    return (json.manifests as Descriptor[]).filter(
      (d) => d && typeof d === 'object' && typeof d.digest === 'string' && isDigest(d.digest) && typeof d.mediaType === 'string',
    );
  }

  private assertOk(res: RawResponse, registry: string, what: string): void {
    if (res.status >= 200 && res.status < 300) return;
    // the registry's own error text is for the log, not for callers
    const upstream = { upstreamErrors: registryErrorMessage(res.body)?.slice(0, 500) };
    if (res.status === 404) throw this.fail('not_found', `${what} not found on ${registry}`, registry, upstream, 404);
    if (res.status === 401 || res.status === 403) {
      throw this.fail('unauthorized', `access to ${what} on ${registry} denied (HTTP ${res.status})`, registry, upstream, res.status);
    }
    throw this.fail('bad_response', `${what} on ${registry}: unexpected HTTP ${res.status}`, registry, upstream, res.status);
  }

  private async request(
    registry: string,
    repo: string | undefined,
    actions: Actions,
    method: string,
    pathOrUrl: string | URL,
    opts: { headers?: Record<string, string>; body?: Buffer },
  ): Promise<RawResponse> {
    const url = typeof pathOrUrl === 'string' ? new URL(this.baseUrl(registry) + pathOrUrl) : pathOrUrl;
    this.assertSchemeAllowed(url, registry);
    // credentials belong to the registry's origin; another origin gets none (and must be allowed)
    const sameOrigin = url.origin === this.registryOrigin(registry);
    if (!sameOrigin && !this.egress.isExplicit(url)) {
      throw this.fail('egress_refused', `${registry} sent the broker to another host, which is not in KEYWARDEN_EGRESS_ALLOW`, registry, {
        target: `${url.origin}${url.pathname}`,
      });
    }
    const scope = repo !== undefined ? `repository:${repo}:${actions}` : undefined;
    let res: RawResponse | undefined;
    for (let attempt = 0; attempt < 2; attempt++) {
      const headers: Record<string, string> = { ...(opts.headers ?? {}) };
      const auth = sameOrigin ? await this.authorizationFor(registry, scope) : undefined;
      if (auth) headers['Authorization'] = auth;
      res = await this.send(registry, url, method, headers, opts.body);
      if (res.status !== 401 || !sameOrigin) return res;
      if (attempt === 1) break;
      // the first challenge the broker can answer, in the registry's order of preference
      const challenge = parseWwwAuthenticate(res.headers.get('www-authenticate')).find((c) => c.scheme === 'bearer' || c.scheme === 'basic');
      if (!challenge) break;
      if (challenge.scheme === 'bearer') {
        const creds = await this.lookupCredentials(registry);
        if (creds && 'token' in creds) break; // a static token was rejected
        await this.fetchToken(registry, scope, challenge, creds);
        continue;
      }
      if (challenge.scheme === 'basic') {
        const creds = await this.lookupCredentials(registry);
        if (!creds || !('username' in creds) || this.basicRegistries.has(registry)) break;
        this.basicRegistries.add(registry);
        continue;
      }
      break;
    }
    return res!;
  }

  private assertSchemeAllowed(url: URL, registry: string): void {
    if (url.protocol === 'https:') return;
    if (url.protocol === 'http:' && this.egress.allowsPlainHttp(url)) return;
    throw this.fail('insecure_refused', `refusing plain HTTP for ${registry}: not listed in KEYWARDEN_INSECURE_REGISTRIES`, registry, {
      target: `${url.protocol}//${url.host}`,
    });
  }

  private async lookupCredentials(registry: string): Promise<RegistryCredentials | undefined> {
    if (!this.credentials) return undefined;
    try {
      return await this.credentials(registry);
    } catch (err) {
      if (err instanceof RegistryError) throw err;
      throw this.fail('unauthorized', `credentials for ${registry} could not be read`, registry, { err: errorMessages(err) });
    }
  }

  private async authorizationFor(registry: string, scope: string | undefined): Promise<string | undefined> {
    const cached = this.tokens.get(`${registry}|${scope ?? ''}`);
    if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.token}`;
    if (cached) this.tokens.delete(`${registry}|${scope ?? ''}`);
    const creds = await this.lookupCredentials(registry);
    if (creds && 'token' in creds) return `Bearer ${creds.token}`;
    if (creds && this.basicRegistries.has(registry)) {
      return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    }
    return undefined;
  }

  private async fetchToken(
    registry: string,
    scope: string | undefined,
    challenge: AuthChallenge,
    creds: RegistryCredentials | undefined,
  ): Promise<void> {
    const realm = challenge.params['realm'];
    if (!realm) throw this.fail('bad_response', `bearer challenge from ${registry} has no realm`, registry);
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw this.fail('bad_response', `bearer challenge from ${registry} has an invalid realm`, registry, { realm: realm.slice(0, 200) });
    }
    // the realm receives the registry's Basic credentials: another origin only when allowed
    if (url.origin !== this.registryOrigin(registry) && !this.egress.isExplicit(url)) {
      throw this.fail('egress_refused', `${registry} names a token service on another host, which is not in KEYWARDEN_EGRESS_ALLOW`, registry, {
        realm: `${url.origin}${url.pathname}`,
      });
    }
    this.assertSchemeAllowed(url, registry);
    if (challenge.params['service']) url.searchParams.set('service', challenge.params['service']);
    const scopes = new Set<string>();
    if (challenge.params['scope']) for (const s of challenge.params['scope'].split(' ')) if (s) scopes.add(s);
    if (scope) scopes.add(scope);
    for (const s of scopes) url.searchParams.append('scope', s);
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (creds && 'username' in creds) {
      headers['Authorization'] = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    }
    const res = await this.send(registry, url, 'GET', headers, undefined);
    if (res.status === 401 || res.status === 403) {
      throw this.fail('unauthorized', `the token service of ${registry} rejected the credentials (HTTP ${res.status})`, registry, {}, res.status);
    }
    if (res.status !== 200) {
      throw this.fail('bad_response', `the token service of ${registry} answered HTTP ${res.status}`, registry, {}, res.status);
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      body = JSON.parse(res.body.toString('utf8'));
    } catch {
      throw this.fail('bad_response', `the token service of ${registry} returned invalid JSON`, registry);
    }
    const token = typeof body.token === 'string' && body.token ? body.token : body.access_token;
    if (typeof token !== 'string' || !token) {
      throw this.fail('bad_response', `the token service of ${registry} returned no token`, registry);
    }
    const ttl = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_TTL_S;
    let issued = typeof body.issued_at === 'string' ? Date.parse(body.issued_at) : NaN;
    if (!Number.isFinite(issued) || issued > Date.now()) issued = Date.now();
    // refresh a little early; never cache for less than 1s
    const expiresAt = issued + Math.max(1000, ttl * 1000 - 5000);
    this.tokens.set(`${registry}|${scope ?? ''}`, { token, expiresAt });
  }

  private async send(
    registry: string,
    startUrl: URL,
    method: string,
    headers: Record<string, string>,
    body: Buffer | undefined,
  ): Promise<RawResponse> {
    let url = startUrl;
    let currentMethod = method;
    let currentBody = body;
    const hdrs = { ...headers };
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      this.assertSchemeAllowed(url, registry);
      const signal = AbortSignal.timeout(this.timeoutMs);
      try {
        // also checked by the egress fetch; here too for an injected fetchImpl
        this.egress.checkDestination(url);
        const init: RequestInit = { method: currentMethod, headers: hdrs, redirect: 'manual', signal };
        if (currentBody !== undefined) init.body = currentBody as unknown as NonNullable<RequestInit['body']>;
        const res = await this.fetchImpl(url, init);
        if ([301, 302, 303, 307, 308].includes(res.status) && res.headers.get('location')) {
          await res.arrayBuffer().catch(() => undefined);
          let next: URL;
          try {
            next = new URL(res.headers.get('location')!, url);
          } catch {
            throw this.fail('bad_response', `${registry} sent an invalid redirect`, registry);
          }
          if (next.origin !== url.origin) {
            if (!this.egress.isExplicit(next)) {
              throw this.fail('egress_refused', `${registry} redirected to another host, which is not in KEYWARDEN_EGRESS_ALLOW`, registry, {
                from: `${url.origin}${url.pathname}`,
                to: `${next.origin}${next.pathname}`,
              });
            }
            // credentials never follow a redirect to another origin
            delete hdrs['Authorization'];
          }
          if (res.status === 303 || ((res.status === 301 || res.status === 302) && currentMethod === 'POST')) {
            currentMethod = currentMethod === 'HEAD' ? 'HEAD' : 'GET';
            currentBody = undefined;
          }
          url = next;
          continue;
        }
        const buf = currentMethod === 'HEAD' ? Buffer.alloc(0) : Buffer.from(await res.arrayBuffer());
        return { status: res.status, headers: res.headers, body: buf, url };
      } catch (err) {
        throw this.mapFetchError(err, registry, url);
      }
    }
    throw this.fail('bad_response', `too many redirects talking to ${registry}`, registry);
  }

  private mapFetchError(err: unknown, registry: string, url: URL): RegistryError {
    if (err instanceof RegistryError) return err;
    const where = { target: `${url.origin}${url.pathname}`, err: errorMessages(err) };
    const name = err && typeof err === 'object' ? (err as { name?: string }).name : undefined;
    if (name === 'TimeoutError' || name === 'AbortError') {
      return this.fail('timeout', `${registry} did not answer within ${this.timeoutMs} ms`, registry, where);
    }
    const classified = classifyConnectionError(err, url);
    if (classified instanceof EgressRefusedError) {
      if (classified.reason === 'plain_http') {
        return this.fail('insecure_refused', `refusing plain HTTP for ${registry}: not listed in KEYWARDEN_INSECURE_REGISTRIES`, registry, where);
      }
      return this.fail('egress_refused', `the broker may not connect to ${registry}: ${classified.message}`, registry, where);
    }
    if (classified instanceof EgressConnectionError && classified.kind === 'timeout') {
      return this.fail('timeout', `${registry} did not answer within ${this.timeoutMs} ms`, registry, where);
    }
    if (classified instanceof EgressConnectionError && classified.kind === 'not_tls') {
      return this.fail('insecure_refused', `${registry} does not speak TLS (plain HTTP?); refusing because it is not listed in KEYWARDEN_INSECURE_REGISTRIES`, registry, where);
    }
    return this.fail('unreachable', `cannot connect to ${registry}`, registry, where);
  }
}
