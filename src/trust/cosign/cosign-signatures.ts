/**
 * Reading, writing and verifying cosign signatures stored in an OCI registry:
 *  - legacy tag scheme: `<repo>:sha256-<hex>.sig`, one simple-signing layer per signature;
 *  - OCI 1.1 sigstore bundles: a referrer manifest with `subject` = the image,
 *    plus the referrers tag schema index `<repo>:sha256-<hex>` for registries
 *    without the referrers API.
 */
import { createHash, createPublicKey, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { digestToTag, isDigest } from '../registry/image-ref.js';
import {
  MEDIA_TYPE_DOCKER_MANIFEST,
  MEDIA_TYPE_OCI_CONFIG,
  MEDIA_TYPE_OCI_EMPTY,
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_MANIFEST,
  RegistryError,
  type Descriptor,
  type RegistryClient,
} from '../registry/registry-client.js';
import { parseSimpleSigningPayload, COSIGN_SIGNATURE_TYPE } from './simple-signing.js';
import { BUNDLE_V03_MEDIA_TYPE, verifyMessageSignatureBundle, type PayloadSigner } from './sigstore-bundle.js';
import { checkSignedIdentity, type ExpectedIdentity } from './signed-identity.js';

export const SIMPLE_SIGNING_MEDIA_TYPE = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
export const CERTIFICATE_ANNOTATION = 'dev.sigstore.cosign/certificate';
export const CHAIN_ANNOTATION = 'dev.sigstore.cosign/chain';
export const REKOR_BUNDLE_ANNOTATION = 'dev.sigstore.cosign/bundle';
export const SIGSTORE_BUNDLE_MEDIA_TYPE = BUNDLE_V03_MEDIA_TYPE;
export const SIGSTORE_BUNDLE_MEDIA_TYPE_PREFIX = 'application/vnd.dev.sigstore.bundle';
export const BUNDLE_CONTENT_ANNOTATION = 'dev.sigstore.bundle.content';
export const CREATED_ANNOTATION = 'org.opencontainers.image.created';
export const TITLE_ANNOTATION = 'org.opencontainers.image.title';
/** Keywarden extension: base64 of the simple-signing payload a message-signature bundle signs. */
export const BUNDLE_PAYLOAD_ANNOTATION = 'dev.keywarden.sigstore.payload';

const EMPTY_JSON = Buffer.from('{}');
const ZERO_TIME = '0001-01-01T00:00:00Z';
const MAX_WRITE_ATTEMPTS = 4;

export interface ImageLocation {
  registry: string;
  repository: string;
  /** manifest digest of the signed image */
  digest: string;
}

export interface CosignSignatureLayer {
  payload: Buffer;
  signatureB64: string;
  layerDigest: string;
  certificate?: string;
  chain?: string;
  annotations: Record<string, string>;
}

export interface SigstoreBundleArtifact {
  bundleJson: unknown;
  manifestDigest: string;
  /** simple-signing payload the bundle signs, when stored alongside (Keywarden annotation) */
  payload?: Buffer;
}

export interface TrustedKey {
  id: string;
  publicKey: KeyObject;
}

export interface SignatureCheck {
  source: 'simple-signing' | 'bundle';
  ok: boolean;
  keyId?: string;
  reason: string;
  /** layer digest (simple-signing) or referrer manifest digest (bundle) */
  ref?: string;
  /** canonical registry/repository the payload was signed for, when it could be read */
  signedIdentity?: string;
  /** set when a trusted key's valid signature was made for another repository */
  identityMismatch?: boolean;
}

export interface CosignVerification {
  validKeyIds: string[];
  results: SignatureCheck[];
}

function assertImageDigest(digest: string): void {
  if (!isDigest(digest)) throw new RegistryError('bad_response', `invalid image digest "${digest}"`);
}

/** cosign signature tag for an image digest: sha256-<hex>.sig */
export function signatureTag(digest: string): string {
  return `${digestToTag(digest)}.sig`;
}

/** Stable key id: hex sha256 of the SPKI DER encoding of the public key. */
export function publicKeyId(publicKey: KeyObject): string {
  const key = publicKey.type === 'private' ? createPublicKey(publicKey) : publicKey;
  return createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('hex');
}

/** Signs exactly the way cosign does for the key type (ECDSA: DER over SHA-256; Ed25519: pure). */
export function signPayload(privateKey: KeyObject, payload: Buffer): Buffer {
  const t = privateKey.asymmetricKeyType;
  return cryptoSign(t === 'ed25519' || t === 'ed448' ? null : 'sha256', payload, privateKey);
}

/** Verifies a cosign-style raw signature over the exact payload bytes. Never throws. */
export function verifyPayloadSignature(publicKey: KeyObject, payload: Buffer, signature: Buffer): boolean {
  const t = publicKey.asymmetricKeyType;
  try {
    return cryptoVerify(t === 'ed25519' || t === 'ed448' ? null : 'sha256', payload, publicKey, signature);
  } catch {
    return false;
  }
}

/** A PayloadSigner backed by an in-process private key; the hint is publicKeyId(). */
export function keyObjectSigner(privateKey: KeyObject): PayloadSigner {
  const pub = createPublicKey(privateKey);
  return {
    sign: async (data: Buffer) => signPayload(privateKey, data),
    publicKeyPem: pub.export({ type: 'spki', format: 'pem' }).toString(),
    keyHint: publicKeyId(pub),
  };
}

/** go-containerregistry style config for a signature "image" (as cosign produces). */
function signatureConfig(layerDigests: string[]): Buffer {
  const doc = {
    architecture: '',
    created: ZERO_TIME,
    history: layerDigests.map(() => ({ created: ZERO_TIME })),
    os: '',
    rootfs: { type: 'layers', diff_ids: layerDigests },
    config: {},
  };
  return Buffer.from(JSON.stringify(doc));
}

function descriptorJson(d: Descriptor): Descriptor {
  // go-containerregistry field order: mediaType, size, digest, ..., annotations
  const out: Descriptor = { mediaType: d.mediaType, size: d.size, digest: d.digest };
  if (d.urls) out.urls = d.urls;
  if (d.annotations && Object.keys(d.annotations).length > 0) out.annotations = d.annotations;
  if (d.platform) out.platform = d.platform;
  if (d.artifactType) out.artifactType = d.artifactType;
  return out;
}

async function getOptionalManifest(client: RegistryClient, registry: string, repo: string, reference: string) {
  try {
    return await client.getManifest(registry, repo, reference);
  } catch (err) {
    if (err instanceof RegistryError && err.code === 'not_found') return undefined;
    throw err;
  }
}

function isValidDescriptor(d: unknown): d is Descriptor {
  return (
    !!d &&
    typeof d === 'object' &&
    typeof (d as Descriptor).digest === 'string' &&
    isDigest((d as Descriptor).digest) &&
    typeof (d as Descriptor).mediaType === 'string' &&
    typeof (d as Descriptor).size === 'number'
  );
}

/**
 * Adds a simple-signing signature layer to `<repo>:sha256-<hex>.sig`, keeping
 * all existing layers. Idempotent for an identical (payload digest, signature) pair.
 */
export async function attachCosignSignature(
  client: RegistryClient,
  opts: ImageLocation & { payload: Buffer; signatureB64: string; extraAnnotations?: Record<string, string> },
): Promise<{ tag: string; manifestDigest: string }> {
  assertImageDigest(opts.digest);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(opts.signatureB64)) {
    throw new TypeError('signatureB64 is not base64');
  }
  const { registry, repository } = opts;
  const tag = signatureTag(opts.digest);
  const payloadBlob = await client.pushBlob(registry, repository, opts.payload);
  const annotations: Record<string, string> = { ...(opts.extraAnnotations ?? {}), [SIGNATURE_ANNOTATION]: opts.signatureB64 };
  const newLayer: Descriptor = {
    mediaType: SIMPLE_SIGNING_MEDIA_TYPE,
    size: payloadBlob.size,
    digest: payloadBlob.digest,
    annotations,
  };

  for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
    const existing = await getOptionalManifest(client, registry, repository, tag);
    let layers: Descriptor[] = [];
    let manifestMediaType = MEDIA_TYPE_OCI_MANIFEST;
    let configMediaType = MEDIA_TYPE_OCI_CONFIG;
    if (existing) {
      if (!Array.isArray(existing.json.layers)) {
        throw new RegistryError('bad_response', `${tag} is not an image manifest`, { registry });
      }
      layers = (existing.json.layers as unknown[]).filter(isValidDescriptor);
      if (existing.mediaType === MEDIA_TYPE_DOCKER_MANIFEST) {
        manifestMediaType = MEDIA_TYPE_DOCKER_MANIFEST;
        configMediaType = (existing.json.config as { mediaType?: string } | null | undefined)?.mediaType ?? 'application/vnd.docker.container.image.v1+json';
      }
      const dup = layers.some(
        (l) => l.digest === newLayer.digest && l.annotations?.[SIGNATURE_ANNOTATION] === opts.signatureB64,
      );
      if (dup) return { tag, manifestDigest: existing.digest };
    }
    layers = [...layers, newLayer];
    const config = signatureConfig(layers.map((l) => l.digest));
    const configBlob = await client.pushBlob(registry, repository, config);
    const manifest = {
      schemaVersion: 2,
      mediaType: manifestMediaType,
      config: { mediaType: configMediaType, size: configBlob.size, digest: configBlob.digest },
      layers: layers.map(descriptorJson),
    };
    const bytes = Buffer.from(JSON.stringify(manifest));
    const manifestDigest = await client.pushManifest(registry, repository, tag, bytes, manifestMediaType);
    // no conditional PUT on many registries: re-read to detect a lost concurrent update
    const check = await getOptionalManifest(client, registry, repository, tag);
    const present = (check?.json?.layers as Descriptor[] | undefined)?.some(
      (l) => l.digest === newLayer.digest && l.annotations?.[SIGNATURE_ANNOTATION] === opts.signatureB64,
    );
    if (present) return { tag, manifestDigest: check!.digest };
  }
  throw new RegistryError('bad_response', `could not update ${tag}: concurrent writers kept replacing it`, { registry });
}

/**
 * Attaches a sigstore bundle as an OCI 1.1 referrer of the image and, when the
 * registry has no referrers API, maintains the `sha256-<hex>` referrers index.
 */
export async function attachSigstoreBundle(
  client: RegistryClient,
  opts: ImageLocation & { bundleJson: unknown; payload?: Buffer },
): Promise<{ manifestDigest: string; referrersTag?: string }> {
  assertImageDigest(opts.digest);
  const { registry, repository, digest } = opts;
  const bj = opts.bundleJson as { mediaType?: unknown; messageSignature?: unknown; dsseEnvelope?: unknown };
  if (!bj || typeof bj !== 'object' || typeof bj.mediaType !== 'string' || !bj.mediaType.startsWith(SIGSTORE_BUNDLE_MEDIA_TYPE_PREFIX)) {
    throw new TypeError('bundleJson is not a sigstore bundle (missing or unexpected mediaType)');
  }
  const bundleMediaType = bj.mediaType;
  const image = await client.getManifest(registry, repository, digest);
  const subject: Descriptor = { mediaType: image.mediaType, digest: image.digest, size: image.bytes.length };

  const bundleBytes = Buffer.from(JSON.stringify(opts.bundleJson));
  const bundleBlob = await client.pushBlob(registry, repository, bundleBytes);
  const emptyBlob = await client.pushBlob(registry, repository, EMPTY_JSON);

  // idempotency: the same bundle already attached as a referrer of this image?
  for (const ref of await client.getReferrers(registry, repository, digest, bundleMediaType)) {
    const existing = await getOptionalManifest(client, registry, repository, ref.digest);
    const layers = existing?.json?.layers;
    if (existing && (existing.json.subject as Descriptor | null | undefined)?.digest === digest && Array.isArray(layers) && layers[0]?.digest === bundleBlob.digest) {
      const hasApi = await client.pingReferrers(registry, repository, digest);
      return hasApi ? { manifestDigest: existing.digest } : { manifestDigest: existing.digest, referrersTag: digestToTag(digest) };
    }
  }

  const annotations: Record<string, string> = {
    [BUNDLE_CONTENT_ANNOTATION]: bj.dsseEnvelope ? 'dsse-envelope' : 'message-signature',
    [CREATED_ANNOTATION]: new Date().toISOString(),
  };
  if (opts.payload) annotations[BUNDLE_PAYLOAD_ANNOTATION] = opts.payload.toString('base64');

  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPE_OCI_MANIFEST,
    artifactType: bundleMediaType,
    config: { mediaType: MEDIA_TYPE_OCI_EMPTY, digest: emptyBlob.digest, size: emptyBlob.size },
    layers: [
      {
        mediaType: bundleMediaType,
        digest: bundleBlob.digest,
        size: bundleBlob.size,
        annotations: { [TITLE_ANNOTATION]: `${bundleBlob.digest.replace(':', '-')}.sigstore.json` },
      },
    ],
    subject,
    annotations,
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestDigest = await client.pushManifest(
    registry,
    repository,
    `sha256:${createHash('sha256').update(manifestBytes).digest('hex')}`,
    manifestBytes,
    MEDIA_TYPE_OCI_MANIFEST,
  );

  if (await client.pingReferrers(registry, repository, digest)) {
    return { manifestDigest };
  }

  const referrersTag = digestToTag(digest);
  const entry: Descriptor = {
    mediaType: MEDIA_TYPE_OCI_MANIFEST,
    digest: manifestDigest,
    size: manifestBytes.length,
    artifactType: bundleMediaType,
    annotations: {
      [BUNDLE_CONTENT_ANNOTATION]: annotations[BUNDLE_CONTENT_ANNOTATION]!,
      [CREATED_ANNOTATION]: annotations[CREATED_ANNOTATION]!,
    },
  };
  for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
    const existing = await getOptionalManifest(client, registry, repository, referrersTag);
    let index: { schemaVersion: number; mediaType: string; manifests: unknown[]; annotations?: unknown };
    if (existing) {
      if (existing.mediaType !== MEDIA_TYPE_OCI_INDEX || !Array.isArray(existing.json.manifests)) {
        throw new RegistryError('bad_response', `${referrersTag} exists but is not an OCI image index`, { registry });
      }
      index = existing.json as typeof index;
      if (index.manifests.some((m) => (m as Descriptor)?.digest === manifestDigest)) {
        return { manifestDigest, referrersTag };
      }
    } else {
      index = { schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_INDEX, manifests: [] };
    }
    index = { ...index, manifests: [...index.manifests, entry] };
    await client.pushManifest(registry, repository, referrersTag, Buffer.from(JSON.stringify(index)), MEDIA_TYPE_OCI_INDEX);
    const check = await getOptionalManifest(client, registry, repository, referrersTag);
    if ((check?.json?.manifests as Descriptor[] | undefined)?.some((m) => m?.digest === manifestDigest)) {
      return { manifestDigest, referrersTag };
    }
  }
  throw new RegistryError('bad_response', `could not update ${referrersTag}: concurrent writers kept replacing it`, { registry });
}

/** Reads the simple-signing layers of `<repo>:sha256-<hex>.sig` (empty when absent). */
export async function readCosignSignatures(client: RegistryClient, opts: ImageLocation): Promise<CosignSignatureLayer[]> {
  assertImageDigest(opts.digest);
  const manifest = await getOptionalManifest(client, opts.registry, opts.repository, signatureTag(opts.digest));
  if (!manifest) return [];
  if (!Array.isArray(manifest.json.layers)) {
    throw new RegistryError('bad_response', `${signatureTag(opts.digest)} is not an image manifest`, { registry: opts.registry });
  }
  const out: CosignSignatureLayer[] = [];
  for (const layer of manifest.json.layers as unknown[]) {
    if (!isValidDescriptor(layer) || layer.mediaType !== SIMPLE_SIGNING_MEDIA_TYPE) continue;
    const annotations = layer.annotations && typeof layer.annotations === 'object' ? layer.annotations : {};
    const signatureB64 = annotations[SIGNATURE_ANNOTATION];
    if (typeof signatureB64 !== 'string') continue;
    const payload = await client.getBlob(opts.registry, opts.repository, layer.digest);
    const item: CosignSignatureLayer = { payload, signatureB64, layerDigest: layer.digest, annotations };
    if (typeof annotations[CERTIFICATE_ANNOTATION] === 'string') item.certificate = annotations[CERTIFICATE_ANNOTATION];
    if (typeof annotations[CHAIN_ANNOTATION] === 'string') item.chain = annotations[CHAIN_ANNOTATION];
    out.push(item);
  }
  return out;
}

/** Reads sigstore bundles attached as referrers (API or tag-schema fallback). */
export async function readSigstoreBundles(client: RegistryClient, opts: ImageLocation): Promise<SigstoreBundleArtifact[]> {
  assertImageDigest(opts.digest);
  const { registry, repository, digest } = opts;
  const referrers = await client.getReferrers(registry, repository, digest);
  const out: SigstoreBundleArtifact[] = [];
  const seen = new Set<string>();
  for (const ref of referrers) {
    if (ref.artifactType !== undefined && !ref.artifactType.startsWith(SIGSTORE_BUNDLE_MEDIA_TYPE_PREFIX)) continue;
    if (seen.has(ref.digest)) continue;
    seen.add(ref.digest);
    const manifest = await getOptionalManifest(client, registry, repository, ref.digest);
    if (!manifest) continue;
    const m = manifest.json as {
      artifactType?: string;
      subject?: Descriptor;
      layers?: unknown[];
      annotations?: Record<string, string>;
    };
    if (typeof m.artifactType !== 'string' || !m.artifactType.startsWith(SIGSTORE_BUNDLE_MEDIA_TYPE_PREFIX)) continue;
    if (m.subject?.digest !== digest) continue; // a referrer must name this image as its subject
    const layer = (m.layers ?? []).find(
      (l): l is Descriptor => isValidDescriptor(l) && l.mediaType.startsWith(SIGSTORE_BUNDLE_MEDIA_TYPE_PREFIX),
    );
    if (!layer) continue;
    const blob = await client.getBlob(registry, repository, layer.digest);
    let bundleJson: unknown;
    try {
      bundleJson = JSON.parse(blob.toString('utf8'));
    } catch {
      continue;
    }
    const item: SigstoreBundleArtifact = { bundleJson, manifestDigest: manifest.digest };
    const p = m.annotations?.[BUNDLE_PAYLOAD_ANNOTATION];
    if (typeof p === 'string') item.payload = Buffer.from(p, 'base64');
    out.push(item);
  }
  return out;
}

interface PayloadProblem {
  reason: string;
  signedIdentity?: string;
  identityMismatch?: boolean;
}

/**
 * A verified payload still has to be about this image: the signed manifest digest must be the
 * image's, and the signed docker-reference must be a repository the policy accepts for it
 * (otherwise an image and its `.sig` copied into another repository would pass there too).
 */
function checkPayload(payload: Buffer, digest: string, identity: ExpectedIdentity): PayloadProblem | { signedIdentity: string } {
  let parsed;
  try {
    parsed = parseSimpleSigningPayload(payload);
  } catch (err) {
    return { reason: `invalid simple-signing payload: ${(err as Error).message}` };
  }
  if (parsed.critical.type !== COSIGN_SIGNATURE_TYPE) return { reason: 'unexpected payload type' };
  if (parsed.critical.image['docker-manifest-digest'] !== digest) {
    return { reason: `payload is for ${parsed.critical.image['docker-manifest-digest']}, not ${digest}` };
  }
  const match = checkSignedIdentity(parsed.critical.identity['docker-reference'], identity);
  if (!match.ok) {
    const problem: PayloadProblem = { reason: match.reason!, identityMismatch: true };
    if (match.signed) problem.signedIdentity = match.signed;
    return problem;
  }
  return { signedIdentity: match.signed! };
}

function bundleMessageDigest(bundleJson: unknown): Buffer | undefined {
  const d = (bundleJson as { messageSignature?: { messageDigest?: { digest?: unknown } } })?.messageSignature?.messageDigest?.digest;
  return typeof d === 'string' ? Buffer.from(d, 'base64') : undefined;
}

function isDsseBundle(bundleJson: unknown): boolean {
  return !!bundleJson && typeof bundleJson === 'object' && 'dsseEnvelope' in bundleJson;
}

/**
 * Verifies simple-signing signatures and sigstore bundles for image `digest`
 * against the trusted keys, and returns the distinct key ids with at least one
 * valid signature for this digest and an accepted identity (see signed-identity.ts).
 *
 * Bundles count only as message signatures over a simple-signing payload, because that payload
 * is what names the repository. DSSE (in-toto) bundles are refused: their subject carries only a
 * digest, so they cannot show which repository they were made for.
 */
export function verifyCosignSignatures(opts: {
  signatures: Array<Pick<CosignSignatureLayer, 'payload' | 'signatureB64'> & { layerDigest?: string }>;
  bundles: Array<{ bundleJson: unknown; manifestDigest?: string; payload?: Buffer }>;
  digest: string;
  /** the identities a signature for this image may name: expectedIdentity(image, policy.signedIdentity) */
  identity: ExpectedIdentity;
  trustedKeys: TrustedKey[];
}): CosignVerification {
  const results: SignatureCheck[] = [];
  const valid = new Set<string>();

  for (const sig of opts.signatures) {
    const base: Pick<SignatureCheck, 'source' | 'ref'> = { source: 'simple-signing' };
    if (sig.layerDigest) base.ref = sig.layerDigest;
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(sig.signatureB64)) {
      results.push({ ...base, ok: false, reason: 'signature annotation is not base64' });
      continue;
    }
    const signature = Buffer.from(sig.signatureB64, 'base64');
    const key = opts.trustedKeys.find((k) => verifyPayloadSignature(k.publicKey, sig.payload, signature));
    if (!key) {
      results.push({ ...base, ok: false, reason: 'signature does not verify with any trusted key' });
      continue;
    }
    const checked = checkPayload(sig.payload, opts.digest, opts.identity);
    if ('reason' in checked) {
      results.push({ ...base, ok: false, keyId: key.id, ...checked });
      continue;
    }
    valid.add(key.id);
    results.push({ ...base, ok: true, keyId: key.id, reason: 'signature verified', signedIdentity: checked.signedIdentity });
  }

  const bundleKeys = opts.trustedKeys.map((k) => ({ hint: k.id, publicKey: k.publicKey }));
  for (const b of opts.bundles) {
    const base: Pick<SignatureCheck, 'source' | 'ref'> = { source: 'bundle' };
    if (b.manifestDigest) base.ref = b.manifestDigest;
    if (isDsseBundle(b.bundleJson)) {
      results.push({ ...base, ok: false, reason: 'DSSE bundles are not accepted: their subject names only a digest, not the repository it was signed for' });
      continue;
    }
    const md = bundleMessageDigest(b.bundleJson);
    let payload = b.payload;
    if (!payload && md) {
      payload = opts.signatures.find((s) => createHash('sha256').update(s.payload).digest().equals(md))?.payload;
    }
    if (!payload) {
      // without the signed payload a bundle cannot show which image and repository it is for
      results.push({ ...base, ok: false, reason: 'no simple-signing payload matches the bundle message digest' });
      continue;
    }
    const res = verifyMessageSignatureBundle(b.bundleJson, payload, bundleKeys);
    if (!res.ok) {
      results.push({ ...base, ok: false, reason: res.reason ?? 'bundle verification failed' });
      continue;
    }
    const checked = checkPayload(payload, opts.digest, opts.identity);
    if ('reason' in checked) {
      results.push({ ...base, ok: false, keyId: res.keyHint!, ...checked });
      continue;
    }
    valid.add(res.keyHint!);
    results.push({ ...base, ok: true, keyId: res.keyHint!, reason: 'bundle verified', signedIdentity: checked.signedIdentity });
  }

  return { validKeyIds: [...valid], results };
}
