/**
 * Key-based ("offline": no Fulcio, no Rekor, no TSA) sigstore message-signature
 * bundles.
 *
 * @sigstore/sign@4 emits public-key message-signature bundles with the v0.2
 * media type. For public-key verification material, v0.2 and v0.3 are
 * structurally identical (v0.3 only forbids x509CertificateChain), and
 * @sigstore/bundle itself labels such bundles v0.3 when no certificate chain is
 * used, so we label them `application/vnd.dev.sigstore.bundle.v0.3+json` — the
 * media type cosign's OCI bundle spec uses for artifactType and the layer.
 */
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { MessageSignatureBundleBuilder, type Signer as SigstoreSigner } from '@sigstore/sign';
import {
  BUNDLE_V03_MEDIA_TYPE,
  assertBundleLatest,
  bundleFromJSON,
  bundleToJSON,
  type Bundle,
} from '@sigstore/bundle';
import { Verifier, toSignedEntity, type TrustMaterial } from '@sigstore/verify';

export { BUNDLE_V03_MEDIA_TYPE };

export interface PayloadSigner {
  sign(data: Buffer): Promise<Buffer>;
  publicKeyPem: string;
  keyHint: string;
}

export interface TrustedBundleKey {
  hint: string;
  publicKey: KeyObject;
}

export interface BundleVerification {
  ok: boolean;
  keyHint?: string;
  reason?: string;
}

/** Signs `payload` and wraps the signature in a sigstore bundle (JSON form). */
export async function createMessageSignatureBundle(
  payload: Buffer,
  signer: PayloadSigner,
): Promise<{ bundle: Record<string, unknown>; signature: Buffer }> {
  let captured: Buffer | undefined;
  const sigstoreSigner: SigstoreSigner = {
    async sign(data: Buffer) {
      const signature = await signer.sign(data);
      captured = signature;
      return {
        signature,
        key: { $case: 'publicKey', publicKey: signer.publicKeyPem, hint: signer.keyHint },
      };
    },
  };
  const builder = new MessageSignatureBundleBuilder({ signer: sigstoreSigner, witnesses: [] });
  const bundle = (await builder.create({ data: payload })) as Bundle;
  if (bundle.verificationMaterial?.content?.$case === 'publicKey') {
    bundle.mediaType = BUNDLE_V03_MEDIA_TYPE;
    assertBundleLatest(bundle);
  }
  if (!captured) throw new Error('signer was not invoked');
  return { bundle: bundleToJSON(bundle) as unknown as Record<string, unknown>, signature: captured };
}

function trustMaterialFor(hint: string, key: KeyObject): TrustMaterial {
  return {
    certificateAuthorities: [],
    timestampAuthorities: [],
    tlogs: [],
    ctlogs: [],
    publicKey: (h: string) => {
      if (h !== hint) throw new Error(`unknown key hint ${h}`);
      return { publicKey: key, validFor: () => true };
    },
  };
}

function describe(err: unknown): string {
  if (err && typeof err === 'object') {
    const e = err as { code?: unknown; message?: unknown };
    return [typeof e.code === 'string' ? e.code : undefined, typeof e.message === 'string' ? e.message : undefined]
      .filter(Boolean)
      .join(': ');
  }
  return String(err);
}

/**
 * Verifies a key-based message-signature bundle over `payload` against the
 * trusted keys. The bundle's key hint picks the first candidate, but every
 * trusted key is tried (the hint is not authenticated). Requires the bundle's
 * messageDigest to equal sha256(payload).
 *
 * Ed25519 keys: @sigstore/verify@3 always verifies message signatures with a
 * sha256 pre-hash algorithm argument, which Node rejects for Ed25519, so for
 * Ed25519 keys the same checks are done here with crypto.verify(null, ...).
 */
export function verifyMessageSignatureBundle(
  bundleJson: unknown,
  payload: Buffer,
  trustedKeys: TrustedBundleKey[],
): BundleVerification {
  let bundle: Bundle;
  try {
    bundle = bundleFromJSON(bundleJson);
  } catch (err) {
    return { ok: false, reason: `invalid bundle: ${describe(err)}` };
  }
  if (bundle.content.$case !== 'messageSignature') {
    // a DSSE/in-toto statement's subject is only a digest: it cannot bind the repository
    return { ok: false, reason: `unsupported bundle content ${bundle.content.$case} (only message signatures over a simple-signing payload name the repository)` };
  }
  const vm = bundle.verificationMaterial.content;
  if (vm.$case !== 'publicKey') {
    return { ok: false, reason: `unsupported verification material ${vm.$case} (only public-key bundles are accepted)` };
  }
  const ms = bundle.content.messageSignature;
  const payloadDigest = createHash('sha256').update(payload).digest();
  if (!ms.messageDigest || !Buffer.from(ms.messageDigest.digest).equals(payloadDigest)) {
    return { ok: false, reason: 'bundle message digest does not match the payload' };
  }
  if (trustedKeys.length === 0) return { ok: false, reason: 'no trusted keys' };
  const hint = vm.publicKey.hint ?? '';
  const ordered = [...trustedKeys.filter((k) => k.hint === hint), ...trustedKeys.filter((k) => k.hint !== hint)];
  let lastReason = 'signature does not verify with any trusted key';
  for (const key of ordered) {
    const keyType = key.publicKey.asymmetricKeyType;
    if (keyType === 'ed25519' || keyType === 'ed448') {
      let ok = false;
      try {
        ok = cryptoVerify(null, payload, key.publicKey, Buffer.from(ms.signature));
      } catch {
        ok = false;
      }
      if (ok) return { ok: true, keyHint: key.hint };
      continue;
    }
    try {
      const verifier = new Verifier(trustMaterialFor(hint, key.publicKey), {
        tlogThreshold: 0,
        ctlogThreshold: 0,
        timestampThreshold: 0,
      });
      verifier.verify(toSignedEntity(bundle, payload));
      return { ok: true, keyHint: key.hint };
    } catch (err) {
      lastReason = `signature does not verify with any trusted key (${describe(err)})`;
    }
  }
  return { ok: false, reason: lastReason };
}

/** Parses a PEM (or KeyObject passthrough) into a public KeyObject. */
export function toPublicKey(key: string | KeyObject): KeyObject {
  return typeof key === 'string' ? createPublicKey(key) : key;
}
