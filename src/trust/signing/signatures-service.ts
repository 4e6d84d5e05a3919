import { z } from 'zod';
import type { AuditService } from '../../audit/audit-service.js';
import { ForbiddenError, NotFoundError } from '../../core/errors.js';
import type { RequestMeta } from '../../core/principal.js';
import { actorOf, principalLabel, type Principal } from '../../identity/identity-types.js';
import { iso, type Clock } from '../../core/clock.js';
import { attachCosignSignature, attachSigstoreBundle, signatureTag } from '../cosign/cosign-signatures.js';
import { createMessageSignatureBundle } from '../cosign/sigstore-bundle.js';
import { buildSimpleSigningPayload } from '../cosign/simple-signing.js';
import { parseImageRef, repositoryName, type ImageRef } from '../registry/image-ref.js';
import { registryProblem } from '../registry/registry-access.js';
import type { RegistryClient } from '../registry/registry-client.js';
import { literalRegistryOf } from '../registry/egress-policy.js';
import type { StoredPolicy } from '../gate/policy-schema.js';
import { matchesImagePattern } from '../glob.js';
import type { Database } from '../../db/database.js';
import { SignatureDal } from './signature-dal.js';
import type { SigningKeysService } from './signing-keys-service.js';

export const signRequestSchema = z
  .object({
    image: z.string().min(3).max(1024),
    key: z.string().regex(/^[A-Za-z0-9._-]{1,128}$/),
    annotations: z.record(z.string().regex(/^[A-Za-z0-9._/-]{1,128}$/), z.string().max(1024)).refine((a) => Object.keys(a).length <= 32, 'at most 32 annotations')
      .describe("Added to the payload's `optional` section; at most 32 annotations.")
      .optional(),
    bundle: z.boolean().default(false),
  })
  .strict();

/** Deny by default: admins may sign anything, signers only what their scope names. */
export function signingScopeProblem(principal: Principal, keyName: string, repository: string): string | undefined {
  if (principal.kind !== 'operator') return 'only operators and CI signers may sign';
  if (principal.role === 'admin') return undefined;
  if (principal.role !== 'signer') return `role ${principal.role} may not sign`;
  const scope = principal.scope;
  if (!scope) return 'this signer credential has no signing scope';
  if (!scope.keys.includes('*') && !scope.keys.includes(keyName)) return `signing key ${keyName} is outside this signer's scope`;
  if (!scope.images.some((pattern) => matchesImagePattern(pattern, repository))) return `image ${repository} is outside this signer's scope`;
  return undefined;
}

/**
 * Registries a signing request may reach: those named literally (no wildcard in the registry
 * part) by the signer's scope or by a trust policy. Operator-configured registries
 * (KEYWARDEN_INSECURE_REGISTRIES, KEYWARDEN_EGRESS_ALLOW) are added by the egress policy.
 */
export function namedRegistriesForSigning(principal: Principal, policies: StoredPolicy[]): string[] {
  const patterns = policies.flatMap((p) => p.document.images);
  if (principal.kind === 'operator' && principal.scope) patterns.push(...principal.scope.images);
  return patterns.map(literalRegistryOf).filter((r): r is string => r !== undefined);
}

/**
 * Signs image digests with broker-held keys and publishes the signatures where verifiers look:
 * cosign's legacy `.sig` tag (appending, never replacing) and, on request, a sigstore bundle as
 * an OCI 1.1 referrer.
 */
export class SignaturesService {
  private readonly dal: SignatureDal;

  constructor(
    private readonly deps: {
      db: Database;
      audit: AuditService;
      registry: RegistryClient;
      signingKeys: SigningKeysService;
      clock: Clock;
      /** trust policies, whose literal registries may be contacted */
      policies?: { all(): Promise<StoredPolicy[]> };
    },
  ) {
    this.dal = new SignatureDal(deps.db);
  }

  private async deny(principal: Principal, meta: RequestMeta, image: string, key: string, reason: string, status: 403 | 404 = 403): Promise<never> {
    await this.deps.audit.record({ actor: actorOf(principal), action: 'image.sign', resource: { kind: 'image', name: image }, outcome: 'deny', reason, details: { key }, request: meta });
    throw status === 404 ? new NotFoundError(`signing key ${key}`) : new ForbiddenError(reason, 'signing_not_allowed');
  }

  async sign(principal: Principal, meta: RequestMeta, input: z.infer<typeof signRequestSchema>) {
    let ref: ImageRef;
    try {
      ref = parseImageRef(input.image);
    } catch (err) {
      throw registryProblem(err);
    }
    const repository = repositoryName(ref);
    const scopeProblem = signingScopeProblem(principal, input.key, repository);
    if (scopeProblem) return this.deny(principal, meta, repository, input.key, scopeProblem);
    const keyStatus = await this.deps.signingKeys.statusOf(input.key);
    if (!keyStatus) return this.deny(principal, meta, repository, input.key, `signing key ${input.key} does not exist`, 404);
    if (keyStatus !== 'active') return this.deny(principal, meta, repository, input.key, `signing key ${input.key} is disabled`);
    // no connection to a registry nobody named: a wildcard scope alone does not open egress
    const named = namedRegistriesForSigning(principal, (await this.deps.policies?.all()) ?? []);
    if (!this.deps.registry.egress.registryPermitted(ref.registry, named)) {
      const reason = `registry ${ref.registry} is not named by a signer scope or trust policy (without wildcards) nor configured in KEYWARDEN_EGRESS_ALLOW or KEYWARDEN_INSECURE_REGISTRIES`;
      await this.deps.audit.record({ actor: actorOf(principal), action: 'image.sign', resource: { kind: 'image', name: repository }, outcome: 'deny', reason, details: { key: input.key }, request: meta });
      throw new ForbiddenError(reason, 'registry_not_allowed');
    }

    let digest: string;
    try {
      digest = ref.digest ?? (await this.deps.registry.resolveDigest(ref));
      if (ref.digest) await this.deps.registry.getManifest(ref.registry, ref.repository, ref.digest);
    } catch (err) {
      const problem = registryProblem(err);
      await this.deps.audit.record({ actor: actorOf(principal), action: 'image.sign', resource: { kind: 'image', name: repository }, outcome: 'error', reason: problem.detail ?? problem.title, details: { key: input.key }, request: meta });
      throw problem;
    }

    const signer = await this.deps.signingKeys.signer(input.key);
    const payload = buildSimpleSigningPayload(repository, digest, input.annotations);
    const { bundle, signature } = await createMessageSignatureBundle(payload, {
      sign: (data) => signer.sign(data),
      publicKeyPem: signer.publicKeyPem,
      keyHint: signer.keyId,
    });
    const signatureB64 = signature.toString('base64');
    let signatureRef: string;
    let bundleRef: string | undefined;
    try {
      const attached = await attachCosignSignature(this.deps.registry, { registry: ref.registry, repository: ref.repository, digest, payload, signatureB64 });
      signatureRef = `${repository}:${attached.tag}`;
      if (input.bundle) {
        const referrer = await attachSigstoreBundle(this.deps.registry, { registry: ref.registry, repository: ref.repository, digest, bundleJson: bundle, payload });
        bundleRef = `${repository}@${referrer.manifestDigest}`;
      }
    } catch (err) {
      const problem = registryProblem(err);
      await this.deps.audit.record({ actor: actorOf(principal), action: 'image.sign', resource: { kind: 'image', name: repository }, outcome: 'error', reason: problem.detail ?? problem.title, details: { key: input.key, digest }, request: meta });
      throw problem;
    }

    const now = this.deps.clock();
    let id = 0;
    await this.deps.audit.transact(async (trx, record) => {
      id = await this.dal.insert(trx, {
        image: `${repository}@${digest}`,
        repository,
        digest,
        key_name: input.key,
        key_version: signer.version,
        key_id: signer.keyId,
        signature: signatureB64,
        payload: payload.toString('utf8'),
        bundle: JSON.stringify(bundle),
        signature_ref: signatureRef,
        bundle_ref: bundleRef ?? null,
        signed_by: principalLabel(principal),
        created_at: now,
      });
      await record({
        actor: actorOf(principal),
        action: 'image.sign',
        resource: { kind: 'image', name: repository },
        outcome: 'allow',
        details: { digest, key: input.key, keyId: signer.keyId, keyVersion: signer.version, signatureRef, bundleRef: bundleRef ?? null },
        request: meta,
      });
    });
    return {
      id,
      image: `${repository}@${digest}`,
      requested: input.image,
      digest,
      key: input.key,
      keyId: signer.keyId,
      keyVersion: signer.version,
      signature: signatureB64,
      payload: payload.toString('base64'),
      signatureRef,
      signatureTag: signatureTag(digest),
      bundleRef: bundleRef ?? null,
      bundle,
      signedAt: iso(now),
    };
  }

  async list(image?: string) {
    const filter: { repository?: string; digest?: string } = {};
    if (image) {
      try {
        const ref = parseImageRef(image.includes('@') || /:[^/]+$/.test(image) ? image : `${image}:latest`);
        filter.repository = repositoryName(ref);
        if (ref.digest) filter.digest = ref.digest;
      } catch (err) {
        throw registryProblem(err);
      }
    }
    return (await this.dal.list(filter)).map((r) => ({
      id: r.id,
      image: r.image,
      digest: r.digest,
      key: r.key_name,
      keyId: r.key_id,
      keyVersion: r.key_version,
      signature: r.signature,
      signatureRef: r.signature_ref,
      bundleRef: r.bundle_ref,
      signedBy: r.signed_by,
      signedAt: iso(r.created_at),
    }));
  }
}
