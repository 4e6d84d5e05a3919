/**
 * A cosign signature is bound to the repository it was signed for (critical.identity.docker-reference).
 *
 * The attack: a signer scoped to team/* signs team/app; anyone who can push to prod/app copies the
 * image, its `sha256-<hex>.sig` tag and its sigstore bundle referrer there. A prod/* policy
 * trusting the same key must not accept it, unless the policy explicitly widens signedIdentity.
 * Real docker-registry, real broker, real signatures; runs on SQLite and (with
 * KEYWARDEN_TEST_DATABASE_URL) on PostgreSQL.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { bundleToJSON, type Bundle } from '@sigstore/bundle';
import { DSSEBundleBuilder } from '@sigstore/sign';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyObjectSigner, signPayload, verifyCosignSignatures, publicKeyId } from '../../src/trust/cosign/cosign-signatures.js';
import {
  checkSignedIdentity,
  expectedIdentity,
  normalizeDockerRepository,
  normalizeIdentityPrefix,
  SignedIdentityError,
} from '../../src/trust/cosign/signed-identity.js';
import { buildSimpleSigningPayload } from '../../src/trust/cosign/simple-signing.js';
import { createMessageSignatureBundle } from '../../src/trust/cosign/sigstore-bundle.js';
import { gateCacheKey } from '../../src/trust/gate/gate-service.js';
import { policyDocumentSchema } from '../../src/trust/gate/policy-schema.js';
import { RegistryClient } from '../../src/trust/registry/registry-client.js';
import { bearer, startTestBroker, type TestBroker } from '../support/broker.js';
import { pushRawBlob, pushRawManifest, pushTestImage, registryAvailable, startRegistry, type PushedImage, type TestRegistry } from '../support/registry.js';
import { upsertPolicy } from '../support/policies.js';

const D = `sha256:${'ab'.repeat(32)}`;

describe('signed identity: normalization', () => {
  it('canonicalises Docker Hub aliases, library/ and case, and drops tags and digests', () => {
    for (const ref of [
      'docker.io/busybox',
      'docker.io/library/busybox',
      'index.docker.io/library/busybox',
      'registry-1.docker.io/library/busybox:1.36',
      'Index.Docker.IO/busybox:latest',
      'busybox',
      'library/busybox',
      `busybox@${D}`,
      `docker.io/busybox:1.36@${D}`,
    ]) {
      expect(normalizeDockerRepository(ref), ref).toBe('docker.io/library/busybox');
    }
    // a namespaced Hub repository gets no library/
    expect(normalizeDockerRepository('index.docker.io/org/app:v1')).toBe('docker.io/org/app');
    expect(normalizeDockerRepository('org/app')).toBe('docker.io/org/app');
    // other registries: host lower-cased, port kept, path untouched
    expect(normalizeDockerRepository('Registry.Example.com:5000/team/app:v1')).toBe('registry.example.com:5000/team/app');
    expect(normalizeDockerRepository(`127.0.0.1:5000/team/app@${D}`)).toBe('127.0.0.1:5000/team/app');
    expect(normalizeDockerRepository('localhost/app')).toBe('localhost/app');
    expect(normalizeDockerRepository('quay.io/busybox')).toBe('quay.io/busybox');
    for (const bad of ['', 'reg.io/Team/App', 'reg.io/a b', 'reg.io/app@sha256:nothex', 'https://reg.io/app']) {
      expect(() => normalizeDockerRepository(bad), bad).toThrow(SignedIdentityError);
    }
  });

  it('normalizes remap prefixes: a host, a namespace or a repository, never a tag or digest', () => {
    expect(normalizeIdentityPrefix('Mirror.Local:5000')).toBe('mirror.local:5000');
    expect(normalizeIdentityPrefix('index.docker.io/library')).toBe('docker.io/library');
    expect(normalizeIdentityPrefix('reg.io/vendor/product')).toBe('reg.io/vendor/product');
    for (const bad of ['vendor', 'vendor/product', 'reg.io/app:v1', `reg.io/app@${D}`, 'reg.io/Vendor', '']) {
      expect(() => normalizeIdentityPrefix(bad), bad).toThrow(SignedIdentityError);
    }
  });
});

describe('signed identity: matching', () => {
  const prodApp = { registry: '127.0.0.1:5000', repository: 'prod/app' };

  it('matchRepository (default): only the image’s own registry/repository, any tag', () => {
    const expected = expectedIdentity(prodApp);
    expect(expected).toEqual({ image: '127.0.0.1:5000/prod/app', accepted: [{ repository: '127.0.0.1:5000/prod/app', via: 'matchRepository' }] });
    expect(checkSignedIdentity('127.0.0.1:5000/prod/app', expected)).toEqual({ ok: true, signed: '127.0.0.1:5000/prod/app' });
    expect(checkSignedIdentity('127.0.0.1:5000/prod/app:v1', expected).ok).toBe(true);
    const wrong = checkSignedIdentity('127.0.0.1:5000/team/app', expected);
    expect(wrong).toEqual({
      ok: false,
      signed: '127.0.0.1:5000/team/app',
      reason: 'signed identity 127.0.0.1:5000/team/app does not match the expected identity 127.0.0.1:5000/prod/app',
    });
    // same path, other registry; a repository that merely starts with the name
    expect(checkSignedIdentity('127.0.0.2:5000/prod/app', expected).ok).toBe(false);
    expect(checkSignedIdentity('127.0.0.1:5000/prod/app2', expected).ok).toBe(false);
    expect(checkSignedIdentity('127.0.0.1:5000/prod', expected).ok).toBe(false);
    expect(checkSignedIdentity('not a reference', expected)).toMatchObject({ ok: false, reason: expect.stringMatching(/not a docker reference/) });
    // an explicit empty list means the default, never "accept anything"
    expect(expectedIdentity(prodApp, [])).toEqual(expected);
  });

  it('compares Docker Hub images in their canonical form on both sides', () => {
    const hub = expectedIdentity({ registry: 'registry-1.docker.io', repository: 'nginx' });
    expect(hub.image).toBe('docker.io/library/nginx');
    // what cosign (go-containerregistry) writes for docker.io/nginx
    expect(checkSignedIdentity('index.docker.io/library/nginx', hub).ok).toBe(true);
    expect(checkSignedIdentity('nginx', hub).ok).toBe(true);
    expect(checkSignedIdentity('index.docker.io/evil/nginx', hub).ok).toBe(false);
  });

  it('exactRepository, listed next to matchRepository, accepts exactly the named repositories', () => {
    const expected = expectedIdentity(prodApp, [
      { type: 'matchRepository' },
      { type: 'exactRepository', dockerRepository: '127.0.0.1:5000/team/app' },
    ]);
    expect(checkSignedIdentity('127.0.0.1:5000/prod/app', expected).ok).toBe(true);
    expect(checkSignedIdentity('127.0.0.1:5000/team/app', expected).ok).toBe(true);
    const other = checkSignedIdentity('127.0.0.1:5000/team/other', expected);
    expect(other.reason).toBe(
      'signed identity 127.0.0.1:5000/team/other does not match the expected identity 127.0.0.1:5000/prod/app or 127.0.0.1:5000/team/app (exactRepository)',
    );
    // exactRepository alone (containers-policy.json semantics): the image's own repository is not accepted
    const only = expectedIdentity(prodApp, [{ type: 'exactRepository', dockerRepository: '127.0.0.1:5000/team/app:ignored-tag' }]);
    expect(checkSignedIdentity('127.0.0.1:5000/prod/app', only).ok).toBe(false);
    expect(checkSignedIdentity('127.0.0.1:5000/team/app', only).ok).toBe(true);
  });

  it('remapIdentity replaces the prefix on a path-component boundary; outside the prefix nothing is remapped', () => {
    const mirror = [{ type: 'remapIdentity' as const, prefix: 'mirror.local:5000/vendor-mirror', signedPrefix: 'vendor.example.com' }];
    const product = expectedIdentity({ registry: 'mirror.local:5000', repository: 'vendor-mirror/product-a/image1' }, mirror);
    expect(product.accepted).toEqual([{ repository: 'vendor.example.com/product-a/image1', via: 'remapIdentity mirror.local:5000/vendor-mirror -> vendor.example.com' }]);
    expect(checkSignedIdentity('vendor.example.com/product-a/image1:1.0', product).ok).toBe(true);
    // the mirror's own name is not accepted once the prefix applies
    expect(checkSignedIdentity('mirror.local:5000/vendor-mirror/product-a/image1', product).ok).toBe(false);
    expect(checkSignedIdentity('vendor.example.com/product-a/image2', product).reason).toBe(
      'signed identity vendor.example.com/product-a/image2 does not match the expected identity vendor.example.com/product-a/image1 (remapIdentity mirror.local:5000/vendor-mirror -> vendor.example.com)',
    );
    // "vendor-mirror2" is not under "vendor-mirror": used unchanged
    const sibling = expectedIdentity({ registry: 'mirror.local:5000', repository: 'vendor-mirror2/app' }, mirror);
    expect(sibling.accepted.map((a) => a.repository)).toEqual(['mirror.local:5000/vendor-mirror2/app']);
    // a host-only prefix onto Docker Hub: the result is canonicalised (library/)
    const hub = expectedIdentity({ registry: 'mirror.local:5000', repository: 'busybox' }, [
      { type: 'remapIdentity', prefix: 'mirror.local:5000', signedPrefix: 'docker.io' },
    ]);
    expect(hub.accepted.map((a) => a.repository)).toEqual(['docker.io/library/busybox']);
    expect(checkSignedIdentity('index.docker.io/library/busybox', hub).ok).toBe(true);
  });

  it('policy documents accept signedIdentity as one requirement or a list, and reject what cannot be a repository', () => {
    const base = { name: 'p', images: ['reg.io/prod/*'] };
    const ok = [
      { type: 'matchRepository' },
      { type: 'exactRepository', dockerRepository: 'reg.io/team/app' },
      { type: 'remapIdentity', prefix: 'reg.io/prod', signedPrefix: 'reg.io/team' },
      [{ type: 'matchRepository' }, { type: 'exactRepository', dockerRepository: 'index.docker.io/library/busybox' }],
    ];
    for (const signedIdentity of ok) {
      const parsed = policyDocumentSchema.safeParse({ ...base, cosign: { keys: ['release'], signedIdentity } });
      expect(parsed.success, JSON.stringify(signedIdentity)).toBe(true);
    }
    const bad: Array<[unknown, RegExp]> = [
      [{ type: 'matchExact' }, /Invalid discriminator/],
      [{ type: 'exactRepository', dockerRepository: 'team/app' }, /fully qualified/],
      [{ type: 'exactRepository', dockerRepository: 'reg.io/team/app:v1' }, /no tag or digest/],
      [{ type: 'exactRepository', dockerRepository: 'reg.io/Team/App' }, /invalid repository path component/],
      [{ type: 'exactRepository' }, /Required/],
      [{ type: 'remapIdentity', prefix: 'prod', signedPrefix: 'reg.io/team' }, /registry host/],
      [{ type: 'remapIdentity', prefix: 'reg.io/prod', signedPrefix: 'reg.io/team:v1' }, /tag/],
      [{ type: 'matchRepository', extra: 1 }, /Unrecognized key/],
      [[], /at least 1/],
    ];
    for (const [signedIdentity, message] of bad) {
      const parsed = policyDocumentSchema.safeParse({ ...base, cosign: { keys: ['release'], signedIdentity } });
      expect(parsed.success, JSON.stringify(signedIdentity)).toBe(false);
      expect(JSON.stringify(parsed.error!.issues), JSON.stringify(signedIdentity)).toMatch(message);
    }
  });

  it('refuses DSSE bundles: their subject names a digest, not a repository', async () => {
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const signer = keyObjectSigner(key.privateKey);
    const statement = Buffer.from(
      JSON.stringify({
        _type: 'https://in-toto.io/Statement/v1',
        subject: [{ name: '127.0.0.1:5000/prod/app', digest: { sha256: D.slice(7) } }],
        predicateType: 'https://cosign.sigstore.dev/attestation/v1',
        predicate: {},
      }),
    );
    const builder = new DSSEBundleBuilder({
      signer: {
        sign: async (data: Buffer) => ({ signature: await signer.sign(data), key: { $case: 'publicKey', publicKey: signer.publicKeyPem, hint: signer.keyHint } }),
      },
      witnesses: [],
    });
    const dsse = bundleToJSON((await builder.create({ data: statement, type: 'application/vnd.in-toto+json' })) as Bundle);
    const v = verifyCosignSignatures({
      signatures: [],
      bundles: [{ bundleJson: dsse, payload: statement }],
      digest: D,
      identity: expectedIdentity(prodApp),
      trustedKeys: [{ id: publicKeyId(key.publicKey), publicKey: key.publicKey }],
    });
    expect(v.validKeyIds).toEqual([]);
    expect(v.results).toEqual([{ source: 'bundle', ok: false, reason: expect.stringMatching(/^DSSE bundles are not accepted: their subject names only a digest/) }]);
  });

  it('a message-signature bundle is held to the identity of the payload it signs', async () => {
    const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const trustedKeys = [{ id: publicKeyId(key.publicKey), publicKey: key.publicKey }];
    const payload = buildSimpleSigningPayload('127.0.0.1:5000/team/app', D);
    const { bundle } = await createMessageSignatureBundle(payload, keyObjectSigner(key.privateKey));
    const signatureB64 = signPayload(key.privateKey, payload).toString('base64');
    const run = (image: { registry: string; repository: string }) =>
      verifyCosignSignatures({ signatures: [{ payload, signatureB64 }], bundles: [{ bundleJson: bundle, payload }], digest: D, identity: expectedIdentity(image), trustedKeys });
    expect(run({ registry: '127.0.0.1:5000', repository: 'team/app' }).results.map((r) => [r.source, r.ok, r.signedIdentity])).toEqual([
      ['simple-signing', true, '127.0.0.1:5000/team/app'],
      ['bundle', true, '127.0.0.1:5000/team/app'],
    ]);
    const prod = run(prodApp);
    expect(prod.validKeyIds).toEqual([]);
    expect(prod.results.map((r) => [r.source, r.ok, r.identityMismatch, r.signedIdentity])).toEqual([
      ['simple-signing', false, true, '127.0.0.1:5000/team/app'],
      ['bundle', false, true, '127.0.0.1:5000/team/app'],
    ]);
    // without its payload a bundle proves nothing about the repository
    const bare = verifyCosignSignatures({ signatures: [], bundles: [{ bundleJson: bundle }], digest: D, identity: expectedIdentity({ registry: '127.0.0.1:5000', repository: 'team/app' }), trustedKeys });
    expect(bare.results[0]).toMatchObject({ ok: false, reason: expect.stringMatching(/no simple-signing payload/) });
  });
});

// ------------------------------------------------------------------------------ the attack, end to end

const avail = registryAvailable();

describe.skipIf(!avail.ok)('signed identity at the release gate (real registry, broker signing)', () => {
  let registry: TestRegistry;
  let R: string;
  let tb: TestBroker;
  let client: RegistryClient;
  let admin: Record<string, string>;
  let deployer: Record<string, string>;
  let teamSigner: Record<string, string>;
  let teamApp: PushedImage;

  /** What anyone with push access to `to` can do: copy a manifest (and its blobs) from `from`. */
  async function copyManifest(from: string, to: string, reference: string): Promise<void> {
    const m = await client.getManifest(R, from, reference);
    if (Array.isArray(m.json.manifests)) {
      for (const child of m.json.manifests as Array<{ digest: string }>) await copyManifest(from, to, child.digest);
    } else {
      for (const d of [m.json.config, ...((m.json.layers as unknown[] | undefined) ?? [])] as Array<{ digest: string }>) {
        await pushRawBlob(R, to, await client.getBlob(R, from, d.digest));
      }
    }
    await pushRawManifest(R, to, reference, m.bytes, m.mediaType);
  }

  async function copyImage(image: PushedImage, from: string, to: string, what: { sig: boolean; bundles: boolean }) {
    await copyManifest(from, to, 'v1');
    const tag = image.digest.replace(':', '-');
    if (what.sig) await copyManifest(from, to, `${tag}.sig`);
    if (what.bundles) await copyManifest(from, to, tag); // the referrers tag-schema index and each bundle referrer
  }

  const putPolicy = (doc: Record<string, unknown>) => upsertPolicy(tb, admin, doc);

  async function decide(image: string) {
    const res = await tb.request.post('/v1/releases').set(deployer).send({ image });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body as { decision: string; digest: string; policy: string; checks: Array<{ type: string; ok: boolean; detail: string; code?: string }> };
  }

  beforeAll(async () => {
    registry = await startRegistry();
    R = registry.hostPort;
    tb = await startTestBroker({ env: { KEYWARDEN_INSECURE_REGISTRIES: R } });
    client = new RegistryClient({ insecureRegistries: [R], timeoutMs: 5000 });
    admin = bearer(tb.adminKey);
    deployer = bearer(await tb.apiKey('writer'));
    const key = await tb.request.post('/v1/signing-keys').set(admin).send({ name: 'release' });
    expect(key.status, key.text).toBe(201);
    teamSigner = bearer(await tb.apiKey('signer', { scope: { keys: ['release'], images: [`${R}/team/*`] } }));

    // the team's CI signs its own image, legitimately, with a .sig signature and a sigstore bundle
    teamApp = await pushTestImage(R, 'team/app', 'v1', { user: '10001' });
    const signed = await tb.request.post('/v1/signatures').set(teamSigner).send({ image: `${R}/team/app:v1`, key: 'release', bundle: true });
    expect(signed.status, signed.text).toBe(201);
    expect(signed.body.bundleRef).toBeTruthy();
    // and the signer's scope is meant to be a boundary: it may not sign prod/*
    const refused = await tb.request.post('/v1/signatures').set(teamSigner).send({ image: `${R}/team/app:v1`.replace('/team/', '/prod/'), key: 'release' });
    expect(refused.status).toBe(403);
    expect(refused.body.detail).toBe(`image ${R}/prod/app is outside this signer's scope`);

    // someone who can push to prod/* copies the signed image with its signatures
    await copyImage(teamApp, 'team/app', 'prod/app', { sig: true, bundles: true });
    await copyImage(teamApp, 'team/app', 'prod/bundle-only', { sig: false, bundles: true });
    await copyImage(teamApp, 'team/app', 'prod/other', { sig: true, bundles: true });
  }, 60_000);

  afterAll(async () => {
    await tb?.close();
    await registry?.stop();
  });

  it('the team policy allows the original in team/app', async () => {
    await putPolicy({ name: 'team', images: [`${R}/team/*`], cosign: { keys: ['release'] } });
    const d = await decide(`${R}/team/app:v1`);
    expect(d.decision).toBe('allow');
    expect(d.checks[0]!.detail).toBe(`1 of 1 required trusted key(s) signed ${teamApp.digest} (release)`);
  });

  it('denies the copy in prod/app under a prod/* policy trusting the same key, naming signed and expected identity', async () => {
    // the copy is byte-identical: same digest, and the .sig and bundle are found at prod/app
    const sigs = await client.getManifest(R, 'prod/app', `${teamApp.digest.replace(':', '-')}.sig`);
    expect(sigs.json.layers).toHaveLength(1);
    await putPolicy({ name: 'prod', images: [`${R}/prod/*`], cosign: { keys: ['release'] } });
    const d = await decide(`${R}/prod/app:v1`);
    expect(d).toMatchObject({ decision: 'deny', digest: teamApp.digest, policy: 'prod' });
    expect(d.checks).toEqual([
      {
        type: 'cosign',
        ok: false,
        code: 'identity_mismatch',
        detail: `no valid signature by a trusted key for ${teamApp.digest}; signed identity ${R}/team/app does not match the expected identity ${R}/prod/app`,
      },
    ]);
  });

  it('an allow cached by a broker from before the identity check does not answer for the copy', async () => {
    const prod = await putPolicy({ name: 'prod', images: [`${R}/prod/*`], cosign: { keys: ['release'] } });
    // what an older broker (no identity binding, cache key without a rules version) stored
    const subject = `${R}/prod/app:v1`;
    const legacyKey = createHash('sha256').update(`${subject}\n${teamApp.digest}\nprod\n${prod.version}`).digest('hex');
    const decisionId = 'rd_legacy-allow';
    await tb.handle.knex('release_decisions').insert({
      id: decisionId, image: subject, digest: teamApp.digest, policy: 'prod', policy_version: prod.version, decision: 'allow',
      checks: '[]', cached: false, cached_from: null, valid_until: Date.now() + 3_600_000, decided_by: 'legacy', decided_at: Date.now(),
    });
    await tb.handle.knex('release_gate_cache').insert({
      cache_key: legacyKey, subject, digest: teamApp.digest, policy: 'prod', policy_version: prod.version,
      decision_id: decisionId, decision: 'allow', checks: '[]', valid_until: Date.now() + 3_600_000,
    });
    expect(gateCacheKey(subject, teamApp.digest, 'prod', prod.version, await tb.broker.services.gate.currentTrustEpoch())).not.toBe(legacyKey);
    const d = await decide(subject);
    expect(d).toMatchObject({ decision: 'deny', cached: false });
    expect(d.checks[0]).toMatchObject({ type: 'cosign', ok: false, code: 'identity_mismatch' });
  });

  it('binds sigstore bundles the same way (bundle referrer copied without the .sig)', async () => {
    await putPolicy({ name: 'prod', images: [`${R}/prod/*`], cosign: { keys: ['release'] } });
    // the bundle really is found at the copy: without any bundle the reason would be no_signatures
    expect((await client.getReferrers(R, 'prod/bundle-only', teamApp.digest)).length).toBe(1);
    const d = await decide(`${R}/prod/bundle-only:v1`);
    expect(d.decision).toBe('deny');
    expect(d.checks[0]).toMatchObject({ code: 'identity_mismatch' });
    expect(d.checks[0]!.detail).toContain(`signed identity ${R}/team/app does not match the expected identity ${R}/prod/bundle-only`);
  });

  it('a policy that explicitly accepts team/app as signed identity allows the promoted copy', async () => {
    const p = await putPolicy({
      name: 'prod',
      images: [`${R}/prod/*`],
      cosign: { keys: ['release'], signedIdentity: [{ type: 'matchRepository' }, { type: 'exactRepository', dockerRepository: `${R}/team/app` }] },
    });
    expect(p.document.cosign.signedIdentity).toEqual([{ type: 'matchRepository' }, { type: 'exactRepository', dockerRepository: `${R}/team/app` }]);
    const d = await decide(`${R}/prod/app:v1`);
    expect(d.decision).toBe('allow');
    expect(d.checks[0]!.detail).toBe(
      `1 of 1 required trusted key(s) signed ${teamApp.digest} (release); signed as ${R}/team/app, accepted by cosign.signedIdentity`,
    );
    expect((await decide(`${R}/prod/bundle-only:v1`)).decision).toBe('allow');
  });

  it('remapIdentity prod -> team accepts prod/app (signed as team/app) but not prod/other (expects team/other)', async () => {
    await putPolicy({
      name: 'prod',
      images: [`${R}/prod/*`],
      cosign: { keys: ['release'], signedIdentity: { type: 'remapIdentity', prefix: `${R}/prod`, signedPrefix: `${R}/team` } },
    });
    expect((await decide(`${R}/prod/app:v1`)).decision).toBe('allow');
    const other = await decide(`${R}/prod/other:v1`);
    expect(other.decision).toBe('deny');
    expect(other.checks[0]).toMatchObject({ code: 'identity_mismatch' });
    expect(other.checks[0]!.detail).toContain(
      `signed identity ${R}/team/app does not match the expected identity ${R}/team/other (remapIdentity ${R}/prod -> ${R}/team)`,
    );
  });

  it('rejects an invalid signedIdentity with a 400 problem saying what is wrong', async () => {
    const res = await tb.request
      .post('/v1/policies')
      .set(admin)
      .send({ name: 'bad-identity', images: [`${R}/prod/*`], cosign: { keys: ['release'], signedIdentity: { type: 'remapIdentity', prefix: 'prod', signedPrefix: `${R}/team` } } });
    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(JSON.stringify(res.body)).toMatch(/signedIdentity.*must start with a registry host/);
  });
});
