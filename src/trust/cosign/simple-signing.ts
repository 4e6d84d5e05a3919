/**
 * Cosign "simple signing" payloads (containers/image signature JSON format as
 * emitted by sigstore's payload.Cosign MarshalJSON).
 *
 * Serialization mirrors Go's encoding/json: struct field order for
 * critical/identity/image/type, lexicographically sorted map keys inside
 * "optional", HTML-escaped "<", ">", "&", and `"optional":null` when there
 * are no annotations.
 */
import { isDigest } from '../registry/image-ref.js';

export const COSIGN_SIGNATURE_TYPE = 'cosign container image signature';

export interface SimpleSigningPayload {
  critical: {
    identity: { 'docker-reference': string };
    image: { 'docker-manifest-digest': string };
    type: string;
  };
  optional: Record<string, unknown> | null;
}

export class SimpleSigningError extends Error {
  override readonly name = 'SimpleSigningError';
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value as Record<string, unknown>).sort()) {
      out[k] = sortKeys((value as Record<string, unknown>)[k]);
    }
    return out;
  }
  return value;
}

/** JSON.stringify with Go encoding/json's default escaping. */
export function goJsonStringify(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/**
 * Builds the exact payload bytes cosign signs.
 * @param dockerReference "registry/repository" (no tag, no digest)
 * @param digest "sha256:<hex>" manifest digest of the image
 */
export function buildSimpleSigningPayload(
  dockerReference: string,
  digest: string,
  annotations?: Record<string, unknown>,
): Buffer {
  if (typeof dockerReference !== 'string' || dockerReference.length === 0) {
    throw new SimpleSigningError('docker reference must be a non-empty string');
  }
  if (dockerReference.includes('@')) {
    throw new SimpleSigningError('docker reference must not include a digest');
  }
  if (!isDigest(digest)) throw new SimpleSigningError(`invalid manifest digest "${digest}"`);
  const optional = annotations && Object.keys(annotations).length > 0 ? sortKeys(annotations) : null;
  const doc = {
    critical: {
      identity: { 'docker-reference': dockerReference },
      image: { 'docker-manifest-digest': digest },
      type: COSIGN_SIGNATURE_TYPE,
    },
    optional,
  };
  return Buffer.from(goJsonStringify(doc), 'utf8');
}

/** Parses and validates a simple-signing payload. Throws SimpleSigningError. */
export function parseSimpleSigningPayload(bytes: Uint8Array | string): SimpleSigningPayload {
  const text = typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8');
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new SimpleSigningError('payload is not valid JSON');
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new SimpleSigningError('payload is not a JSON object');
  const critical = (doc as { critical?: unknown }).critical;
  if (!critical || typeof critical !== 'object' || Array.isArray(critical)) {
    throw new SimpleSigningError('payload has no "critical" object');
  }
  const c = critical as { identity?: unknown; image?: unknown; type?: unknown };
  if (c.type !== COSIGN_SIGNATURE_TYPE) {
    throw new SimpleSigningError(`unexpected critical.type ${JSON.stringify(c.type)}`);
  }
  const identity = c.identity as { 'docker-reference'?: unknown } | undefined;
  if (!identity || typeof identity !== 'object' || typeof identity['docker-reference'] !== 'string') {
    throw new SimpleSigningError('payload has no critical.identity.docker-reference string');
  }
  const image = c.image as { 'docker-manifest-digest'?: unknown } | undefined;
  if (!image || typeof image !== 'object' || typeof image['docker-manifest-digest'] !== 'string') {
    throw new SimpleSigningError('payload has no critical.image.docker-manifest-digest string');
  }
  if (!isDigest(image['docker-manifest-digest'])) {
    throw new SimpleSigningError(`invalid critical.image.docker-manifest-digest "${image['docker-manifest-digest']}"`);
  }
  const optional = (doc as { optional?: unknown }).optional;
  if (optional !== undefined && optional !== null && (typeof optional !== 'object' || Array.isArray(optional))) {
    throw new SimpleSigningError('payload "optional" must be an object or null');
  }
  return {
    critical: {
      identity: { 'docker-reference': identity['docker-reference'] },
      image: { 'docker-manifest-digest': image['docker-manifest-digest'] },
      type: c.type,
    },
    optional: (optional as Record<string, unknown> | null | undefined) ?? null,
  };
}
