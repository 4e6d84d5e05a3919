import { createHash, createPublicKey, generateKeyPairSync, sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleFromJSON } from '@sigstore/bundle';
import { Verifier, toSignedEntity } from '@sigstore/verify';
import { RegistryClient, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST, type ManifestResult } from '../../src/trust/registry/registry-client.js';
import {
  buildSimpleSigningPayload,
  parseSimpleSigningPayload,
  SimpleSigningError,
} from '../../src/trust/cosign/simple-signing.js';
import {
  BUNDLE_V03_MEDIA_TYPE,
  createMessageSignatureBundle,
  verifyMessageSignatureBundle,
} from '../../src/trust/cosign/sigstore-bundle.js';
import {
  SIGNATURE_ANNOTATION,
  SIMPLE_SIGNING_MEDIA_TYPE,
  attachCosignSignature,
  attachSigstoreBundle,
  keyObjectSigner,
  publicKeyId,
  readCosignSignatures,
  readSigstoreBundles,
  signPayload,
  verifyCosignSignatures,
} from '../../src/trust/cosign/cosign-signatures.js';
import { expectedIdentity } from '../../src/trust/cosign/signed-identity.js';
import {
  pushRawBlob,
  pushRawManifest,
  pushTestImage,
  registryAvailable,
  startRegistry,
  type TestRegistry,
} from '../support/registry.js';

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const D = `sha256:${'ab'.repeat(32)}`;

/** The manifests read back here are ones this code wrote: a typed view of the fields the tests look at. */
interface ManifestView {
  artifactType?: string;
  config: { mediaType: string; digest: string };
  subject?: unknown;
  layers: Array<{ mediaType: string; digest: string; size: number; annotations: Record<string, string> }>;
  manifests: Array<{ digest: string }>;
}
const viewOf = (m: ManifestResult) => ({ ...m, json: m.json as unknown as ManifestView });

describe('simple-signing payload', () => {
  it('is byte-identical to what cosign emits (optional null without annotations)', () => {
    const p = buildSimpleSigningPayload('127.0.0.1:5000/team/app', D);
    expect(p.toString()).toBe(
      `{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/team/app"},"image":{"docker-manifest-digest":"${D}"},"type":"cosign container image signature"},"optional":null}`,
    );
  });
  it('sorts annotation keys and HTML-escapes like Go encoding/json', () => {
    const p = buildSimpleSigningPayload('r.io/app', D, { z: 'last', a: 'x&y<z>', m: { b: 1, a: 2 } });
    expect(p.toString()).toContain(`"optional":{"a":"x\\u0026y\\u003cz\\u003e","m":{"a":2,"b":1},"z":"last"}`);
    expect(parseSimpleSigningPayload(p).optional).toEqual({ a: 'x&y<z>', m: { a: 2, b: 1 }, z: 'last' });
  });
  it('parses and validates', () => {
    const parsed = parseSimpleSigningPayload(buildSimpleSigningPayload('r.io/app', D));
    expect(parsed.critical.image['docker-manifest-digest']).toBe(D);
    expect(parsed.critical.identity['docker-reference']).toBe('r.io/app');
    expect(parsed.optional).toBeNull();
    const bad = [
      'not json',
      '[]',
      '{"critical":{}}',
      `{"critical":{"identity":{"docker-reference":"r/a"},"image":{"docker-manifest-digest":"${D}"},"type":"other"}}`,
      `{"critical":{"identity":{"docker-reference":"r/a"},"image":{"docker-manifest-digest":"sha256:xyz"},"type":"cosign container image signature"}}`,
      `{"critical":{"identity":{},"image":{"docker-manifest-digest":"${D}"},"type":"cosign container image signature"}}`,
      `{"critical":{"identity":{"docker-reference":"r/a"},"image":{"docker-manifest-digest":"${D}"},"type":"cosign container image signature"},"optional":[1]}`,
    ];
    for (const b of bad) expect(() => parseSimpleSigningPayload(Buffer.from(b)), b).toThrow(SimpleSigningError);
    expect(() => buildSimpleSigningPayload('r.io/app', 'sha256:nothex')).toThrow(SimpleSigningError);
  });
});

describe('sigstore message-signature bundles (offline, key-based)', () => {
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ed = generateKeyPairSync('ed25519');
  const payload = buildSimpleSigningPayload('r.io/app', D);

  it('creates a v0.3 public-key bundle that @sigstore/verify accepts with all thresholds 0', async () => {
    const signer = keyObjectSigner(ec.privateKey);
    const { bundle, signature } = await createMessageSignatureBundle(payload, signer);
    expect(bundle.mediaType).toBe(BUNDLE_V03_MEDIA_TYPE);
    const vm = bundle.verificationMaterial as { publicKey: { hint: string }; tlogEntries: unknown[] };
    expect(vm.publicKey.hint).toBe(publicKeyId(ec.publicKey));
    expect(vm.tlogEntries ?? []).toEqual([]); // no Rekor entries (bundleToJSON omits empty lists)
    const ms = bundle.messageSignature as { signature: string; messageDigest: { digest: string; algorithm: string } };
    expect(Buffer.from(ms.signature, 'base64').equals(signature)).toBe(true);
    expect(Buffer.from(ms.messageDigest.digest, 'base64').toString('hex')).toBe(sha256(payload).slice(7));
    expect(cryptoVerify('sha256', payload, ec.publicKey, signature)).toBe(true);

    // straight @sigstore/verify usage
    const trust = {
      certificateAuthorities: [],
      timestampAuthorities: [],
      tlogs: [],
      ctlogs: [],
      publicKey: (hint: string) => {
        if (hint !== signer.keyHint) throw new Error('unknown key');
        return { publicKey: ec.publicKey, validFor: () => true };
      },
    };
    const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
    const parsed = bundleFromJSON(bundle);
    expect(verifier.verify(toSignedEntity(parsed, payload)).key).toBe(ec.publicKey);
    const tampered = Buffer.from(payload.toString().replace('r.io/app', 'r.io/evil'));
    expect(() => verifier.verify(toSignedEntity(parsed, tampered))).toThrow(/signature verification failed/);

    // our wrapper
    const trusted = [{ hint: signer.keyHint, publicKey: ec.publicKey }];
    expect(verifyMessageSignatureBundle(bundle, payload, trusted)).toEqual({ ok: true, keyHint: signer.keyHint });
    const t = verifyMessageSignatureBundle(bundle, tampered, trusted);
    expect(t.ok).toBe(false);
    expect(t.reason).toMatch(/message digest/);
    // untrusted key
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(verifyMessageSignatureBundle(bundle, payload, [{ hint: signer.keyHint, publicKey: other.publicKey }]).ok).toBe(false);
    // bundle whose digest matches but signature was altered
    const forged = structuredClone(bundle) as typeof bundle;
    const sigBytes = Buffer.from(ms.signature, 'base64');
    sigBytes[sigBytes.length - 1] = sigBytes[sigBytes.length - 1]! ^ 0xff;
    (forged.messageSignature as { signature: string }).signature = sigBytes.toString('base64');
    const f = verifyMessageSignatureBundle(forged, payload, trusted);
    expect(f.ok).toBe(false);
    expect(f.reason).toMatch(/SIGNATURE_ERROR|does not verify/);
    expect(verifyMessageSignatureBundle({ mediaType: 'nope' }, payload, trusted).ok).toBe(false);
  });

  it('handles Ed25519 signers (pure Ed25519 over the payload)', async () => {
    const signer = keyObjectSigner(ed.privateKey);
    const { bundle, signature } = await createMessageSignatureBundle(payload, signer);
    expect(cryptoVerify(null, payload, ed.publicKey, signature)).toBe(true);
    const trusted = [
      { hint: 'ec', publicKey: ec.publicKey },
      { hint: signer.keyHint, publicKey: ed.publicKey },
    ];
    expect(verifyMessageSignatureBundle(bundle, payload, trusted)).toEqual({ ok: true, keyHint: signer.keyHint });
    expect(verifyMessageSignatureBundle(bundle, Buffer.concat([payload, Buffer.from(' ')]), trusted).ok).toBe(false);
    expect(verifyMessageSignatureBundle(bundle, payload, [{ hint: signer.keyHint, publicKey: generateKeyPairSync('ed25519').publicKey }]).ok).toBe(false);
  });
});

const avail = registryAvailable();
const d = avail.ok ? describe : describe.skip;

d('cosign signatures in a real docker-registry', () => {
  let reg: TestRegistry;
  let client: RegistryClient;
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ed = generateKeyPairSync('ed25519');
  const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const ecId = publicKeyId(ec.publicKey);
  const edId = publicKeyId(ed.publicKey);
  const trustedBoth = [
    { id: ecId, publicKey: ec.publicKey },
    { id: edId, publicKey: ed.publicKey },
  ];

  /** the identity the gate expects for an image in `repo` (default policy: matchRepository) */
  const identityOf = (repo: string) => expectedIdentity({ registry: reg.hostPort, repository: repo });

  beforeAll(async () => {
    reg = await startRegistry();
    client = new RegistryClient({ insecureRegistries: [reg.hostPort], timeoutMs: 5000 });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  async function signImage(repo: string, digest: string, key: KeyObject, payloadDigest = digest) {
    const payload = buildSimpleSigningPayload(`${reg.hostPort}/${repo}`, payloadDigest);
    const signatureB64 = signPayload(key, payload).toString('base64');
    const res = await attachCosignSignature(client, { registry: reg.hostPort, repository: repo, digest, payload, signatureB64 });
    return { payload, signatureB64, ...res };
  }

  it('publicKeyId is the hex sha256 of the SPKI DER and stable for private/public forms', () => {
    const der = ec.publicKey.export({ type: 'spki', format: 'der' });
    expect(ecId).toBe(createHash('sha256').update(der).digest('hex'));
    expect(publicKeyId(ec.privateKey)).toBe(ecId);
    expect(publicKeyId(createPublicKey(ec.publicKey.export({ type: 'spki', format: 'pem' })))).toBe(ecId);
    expect(ecId).not.toBe(edId);
  });

  it('writes a cosign-format .sig manifest; ECDSA and Ed25519 signatures coexist; identical re-attach is a no-op', async () => {
    const repo = 'team/signed';
    const img = await pushTestImage(reg.hostPort, repo, 'v1');
    const hex = img.digest.slice('sha256:'.length);

    const a = await signImage(repo, img.digest, ec.privateKey);
    expect(a.tag).toBe(`sha256-${hex}.sig`);
    const m1 = viewOf(await client.getManifest(reg.hostPort, repo, a.tag));
    expect(m1.digest).toBe(a.manifestDigest);
    expect(m1.mediaType).toBe(MEDIA_TYPE_OCI_MANIFEST);
    expect(m1.json.config.mediaType).toBe('application/vnd.oci.image.config.v1+json');
    expect(m1.json.layers).toHaveLength(1);
    const layer = m1.json.layers[0];
    expect(layer.mediaType).toBe(SIMPLE_SIGNING_MEDIA_TYPE);
    expect(layer.digest).toBe(sha256(a.payload));
    expect(layer.size).toBe(a.payload.length);
    expect(layer.annotations[SIGNATURE_ANNOTATION]).toBe(a.signatureB64);
    const blob = await client.getBlob(reg.hostPort, repo, layer.digest);
    expect(blob.equals(a.payload)).toBe(true);
    // ECDSA P-256: DER signature over SHA-256 of the exact payload bytes
    const der = Buffer.from(layer.annotations[SIGNATURE_ANNOTATION], 'base64');
    expect(der[0]).toBe(0x30);
    expect(cryptoVerify('sha256', blob, ec.publicKey, der)).toBe(true);
    const cfg1 = JSON.parse((await client.getBlob(reg.hostPort, repo, m1.json.config.digest)).toString());
    expect(cfg1).toEqual({
      architecture: '',
      created: '0001-01-01T00:00:00Z',
      history: [{ created: '0001-01-01T00:00:00Z' }],
      os: '',
      rootfs: { type: 'layers', diff_ids: [layer.digest] },
      config: {},
    });

    const b = await signImage(repo, img.digest, ed.privateKey);
    expect(b.tag).toBe(a.tag);
    const m2 = viewOf(await client.getManifest(reg.hostPort, repo, a.tag));
    expect(m2.json.layers).toHaveLength(2);
    expect(m2.json.layers[0]).toEqual(layer); // existing layer kept verbatim
    const edSig = Buffer.from(m2.json.layers[1].annotations[SIGNATURE_ANNOTATION], 'base64');
    expect(edSig).toHaveLength(64);
    expect(cryptoVerify(null, b.payload, ed.publicKey, edSig)).toBe(true);
    const cfg2 = JSON.parse((await client.getBlob(reg.hostPort, repo, m2.json.config.digest)).toString());
    expect(cfg2.rootfs.diff_ids).toHaveLength(2);

    // identical signature again: no duplicate layer, same manifest
    const again = await attachCosignSignature(client, {
      registry: reg.hostPort,
      repository: repo,
      digest: img.digest,
      payload: a.payload,
      signatureB64: a.signatureB64,
    });
    expect(again.manifestDigest).toBe(m2.digest);
    expect((await client.getManifest(reg.hostPort, repo, a.tag)).json.layers).toHaveLength(2);

    const sigs = await readCosignSignatures(client, { registry: reg.hostPort, repository: repo, digest: img.digest });
    expect(sigs).toHaveLength(2);
    expect(sigs[0]!.payload.equals(a.payload)).toBe(true);
    expect(sigs[1]!.signatureB64).toBe(b.signatureB64);

    const both = verifyCosignSignatures({ signatures: sigs, bundles: [], digest: img.digest, identity: identityOf(repo), trustedKeys: trustedBoth });
    expect(both.validKeyIds.sort()).toEqual([ecId, edId].sort());
    expect(both.results.every((r) => r.ok && r.source === 'simple-signing')).toBe(true);

    const onlyEc = verifyCosignSignatures({ signatures: sigs, bundles: [], digest: img.digest, identity: identityOf(repo), trustedKeys: [trustedBoth[0]!] });
    expect(onlyEc.validKeyIds).toEqual([ecId]);
    expect(onlyEc.results[1]).toMatchObject({ ok: false, reason: expect.stringMatching(/any trusted key/) });

    const none = verifyCosignSignatures({
      signatures: sigs,
      bundles: [],
      digest: img.digest, identity: identityOf(repo),
      trustedKeys: [{ id: 'stranger', publicKey: stranger.publicKey }],
    });
    expect(none.validKeyIds).toEqual([]);
    expect(none.results.every((r) => !r.ok)).toBe(true);

    // an unsigned image has no signatures
    const unsigned = await pushTestImage(reg.hostPort, repo, 'unsigned');
    expect(await readCosignSignatures(client, { registry: reg.hostPort, repository: repo, digest: unsigned.digest })).toEqual([]);
  });

  it('counts distinct keys, and rejects payloads for a different digest and tampered payloads', async () => {
    const repo = 'team/count';
    const img = await pushTestImage(reg.hostPort, repo, 'v1');
    const other = await pushTestImage(reg.hostPort, repo, 'v2');
    await signImage(repo, img.digest, ec.privateKey);
    // same key, different annotations -> second valid signature by the same key
    const p2 = buildSimpleSigningPayload(`${reg.hostPort}/${repo}`, img.digest, { run: '2' });
    await attachCosignSignature(client, {
      registry: reg.hostPort,
      repository: repo,
      digest: img.digest,
      payload: p2,
      signatureB64: signPayload(ec.privateKey, p2).toString('base64'),
    });
    // a validly signed payload for ANOTHER image, attached to this image's .sig
    await signImage(repo, img.digest, ed.privateKey, other.digest);
    const sigs = await readCosignSignatures(client, { registry: reg.hostPort, repository: repo, digest: img.digest });
    expect(sigs).toHaveLength(3);
    const v = verifyCosignSignatures({ signatures: sigs, bundles: [], digest: img.digest, identity: identityOf(repo), trustedKeys: trustedBoth });
    expect(v.validKeyIds).toEqual([ecId]);
    expect(v.results.map((r) => r.ok)).toEqual([true, true, false]);
    expect(v.results[2]).toMatchObject({ keyId: edId, reason: expect.stringMatching(/not sha256:/) });

    // tampered payload bytes (signature no longer matches)
    const tampered = { ...sigs[0]!, payload: Buffer.from(sigs[0]!.payload.toString().replace('"optional":null', '"optional":{}')) };
    const t = verifyCosignSignatures({ signatures: [tampered], bundles: [], digest: img.digest, identity: identityOf(repo), trustedKeys: trustedBoth });
    expect(t.validKeyIds).toEqual([]);
    expect(t.results[0]!.ok).toBe(false);
  });

  it('verifies a .sig manifest hand-built exactly as cosign writes it', async () => {
    const repo = 'team/foreign';
    const img = await pushTestImage(reg.hostPort, repo, 'v1');
    const payload = Buffer.from(
      `{"critical":{"identity":{"docker-reference":"${reg.hostPort}/${repo}"},"image":{"docker-manifest-digest":"${img.digest}"},"type":"cosign container image signature"},"optional":null}`,
    );
    const sig = cryptoSign('sha256', payload, ec.privateKey).toString('base64'); // ECDSA DER, as cosign
    const payloadDigest = await pushRawBlob(reg.hostPort, repo, payload);
    const config = Buffer.from(
      `{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":["${payloadDigest}"]},"config":{}}`,
    );
    const configDigest = await pushRawBlob(reg.hostPort, repo, config);
    const manifest = Buffer.from(
      `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":${config.length},"digest":"${configDigest}"},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":${payload.length},"digest":"${payloadDigest}","annotations":{"dev.cosignproject.cosign/signature":"${sig}"}}]}`,
    );
    const tag = `${img.digest.replace(':', '-')}.sig`;
    await pushRawManifest(reg.hostPort, repo, tag, manifest, MEDIA_TYPE_OCI_MANIFEST);

    const sigs = await readCosignSignatures(client, { registry: reg.hostPort, repository: repo, digest: img.digest });
    expect(sigs).toHaveLength(1);
    expect(sigs[0]!.payload.equals(payload)).toBe(true);
    expect(sigs[0]!.payload.equals(buildSimpleSigningPayload(`${reg.hostPort}/${repo}`, img.digest))).toBe(true);
    const v = verifyCosignSignatures({ signatures: sigs, bundles: [], digest: img.digest, identity: identityOf(repo), trustedKeys: trustedBoth });
    expect(v.validKeyIds).toEqual([ecId]);

    // our attach appends to the foreign manifest without dropping its layer
    await signImage(repo, img.digest, ed.privateKey);
    const after = await readCosignSignatures(client, { registry: reg.hostPort, repository: repo, digest: img.digest });
    expect(after.map((s) => s.signatureB64)[0]).toBe(sig);
    expect(after).toHaveLength(2);
    expect(verifyCosignSignatures({ signatures: after, bundles: [], digest: img.digest, identity: identityOf(repo), trustedKeys: trustedBoth }).validKeyIds).toHaveLength(2);
  });

  it('attaches sigstore bundles as OCI 1.1 referrers with the sha256-<hex> fallback index, reads and verifies them', async () => {
    const repo = 'team/bundled';
    const img = await pushTestImage(reg.hostPort, repo, 'v1');
    const payload = buildSimpleSigningPayload(`${reg.hostPort}/${repo}`, img.digest);
    const b1 = await createMessageSignatureBundle(payload, keyObjectSigner(ec.privateKey));
    const r1 = await attachSigstoreBundle(client, { registry: reg.hostPort, repository: repo, digest: img.digest, bundleJson: b1.bundle });
    expect(r1.referrersTag).toBe(img.digest.replace(':', '-'));

    const art = viewOf(await client.getManifest(reg.hostPort, repo, r1.manifestDigest));
    expect(art.json.artifactType).toBe(BUNDLE_V03_MEDIA_TYPE);
    expect(art.json.config).toEqual({ mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(Buffer.from('{}')), size: 2 });
    expect(art.json.subject).toEqual({ mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: img.digest, size: img.manifestBytes.length });
    expect(art.json.layers).toHaveLength(1);
    expect(art.json.layers[0].mediaType).toBe(BUNDLE_V03_MEDIA_TYPE);
    const bundleBlob = await client.getBlob(reg.hostPort, repo, art.json.layers[0].digest);
    expect(JSON.parse(bundleBlob.toString())).toEqual(b1.bundle);

    const idx1 = viewOf(await client.getManifest(reg.hostPort, repo, r1.referrersTag!));
    expect(idx1.mediaType).toBe(MEDIA_TYPE_OCI_INDEX);
    expect(idx1.json.manifests).toHaveLength(1);
    expect(idx1.json.manifests[0]).toMatchObject({
      mediaType: MEDIA_TYPE_OCI_MANIFEST,
      digest: r1.manifestDigest,
      size: art.bytes.length,
      artifactType: BUNDLE_V03_MEDIA_TYPE,
    });

    // second bundle (Ed25519, payload stored alongside) is appended, the first kept
    const b2 = await createMessageSignatureBundle(payload, keyObjectSigner(ed.privateKey));
    const r2 = await attachSigstoreBundle(client, {
      registry: reg.hostPort,
      repository: repo,
      digest: img.digest,
      bundleJson: b2.bundle,
      payload,
    });
    const idx2 = viewOf(await client.getManifest(reg.hostPort, repo, r1.referrersTag!));
    expect(idx2.json.manifests.map((m: { digest: string }) => m.digest)).toEqual([r1.manifestDigest, r2.manifestDigest]);
    // re-attaching the same bundle does not create another referrer
    const again = await attachSigstoreBundle(client, { registry: reg.hostPort, repository: repo, digest: img.digest, bundleJson: b1.bundle });
    expect(again.manifestDigest).toBe(r1.manifestDigest);
    expect((await client.getManifest(reg.hostPort, repo, r1.referrersTag!)).json.manifests).toHaveLength(2);
    const refs = await client.getReferrers(reg.hostPort, repo, img.digest, BUNDLE_V03_MEDIA_TYPE);
    expect(refs).toHaveLength(2);

    const bundles = await readSigstoreBundles(client, { registry: reg.hostPort, repository: repo, digest: img.digest });
    expect(bundles.map((b) => b.manifestDigest)).toEqual([r1.manifestDigest, r2.manifestDigest]);
    expect(bundles[0]!.payload).toBeUndefined();
    expect(bundles[1]!.payload!.equals(payload)).toBe(true);

    // bundle 1 has no stored payload: it is matched against the .sig payloads by message digest
    const noSigs = verifyCosignSignatures({ signatures: [], bundles, digest: img.digest, identity: identityOf(repo), trustedKeys: trustedBoth });
    expect(noSigs.validKeyIds).toEqual([edId]);
    expect(noSigs.results[0]).toMatchObject({ source: 'bundle', ok: false, reason: expect.stringMatching(/payload/) });

    await attachCosignSignature(client, {
      registry: reg.hostPort,
      repository: repo,
      digest: img.digest,
      payload,
      signatureB64: b1.signature.toString('base64'),
    });
    const sigs = await readCosignSignatures(client, { registry: reg.hostPort, repository: repo, digest: img.digest });
    const all = verifyCosignSignatures({ signatures: sigs, bundles, digest: img.digest, identity: identityOf(repo), trustedKeys: trustedBoth });
    expect(all.results.map((r) => [r.source, r.ok, r.keyId])).toEqual([
      ['simple-signing', true, ecId],
      ['bundle', true, ecId],
      ['bundle', true, edId],
    ]);
    expect(all.validKeyIds.sort()).toEqual([ecId, edId].sort());

    // untrusted keys: nothing counts
    const strangers = verifyCosignSignatures({
      signatures: sigs,
      bundles,
      digest: img.digest, identity: identityOf(repo),
      trustedKeys: [{ id: 's', publicKey: stranger.publicKey }],
    });
    expect(strangers.validKeyIds).toEqual([]);

    // a bundle signing a payload for another digest is rejected
    const other = await pushTestImage(reg.hostPort, repo, 'v2');
    const otherPayload = buildSimpleSigningPayload(`${reg.hostPort}/${repo}`, other.digest);
    const b3 = await createMessageSignatureBundle(otherPayload, keyObjectSigner(ec.privateKey));
    const wrong = verifyCosignSignatures({
      signatures: [],
      bundles: [{ bundleJson: b3.bundle, payload: otherPayload }],
      digest: img.digest, identity: identityOf(repo),
      trustedKeys: trustedBoth,
    });
    expect(wrong.validKeyIds).toEqual([]);
    expect(wrong.results[0]!.reason).toMatch(/not sha256:/);
    // a bundle presented with a payload it did not sign is rejected
    const mismatch = verifyCosignSignatures({
      signatures: [],
      bundles: [{ bundleJson: b3.bundle, payload }],
      digest: img.digest, identity: identityOf(repo),
      trustedKeys: trustedBoth,
    });
    expect(mismatch.results[0]).toMatchObject({ ok: false, reason: expect.stringMatching(/message digest/) });

    // an image without bundles
    expect(await readSigstoreBundles(client, { registry: reg.hostPort, repository: repo, digest: other.digest })).toEqual([]);
  });
});
