import crypto from 'node:crypto';
import { bundleFromJSON } from '@sigstore/bundle';
import { Verifier, toSignedEntity } from '@sigstore/verify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { pushTestImage, registryAvailable, startRegistry, type PushedImage, type TestRegistry } from '../support/registry.js';
import {
  auth,
  capture,
  createKey,
  exchange,
  expectProblem,
  registerIssuer,
  registryBlob,
  registryManifest,
  sha256Hex,
  startCiIssuer,
  type CiIssuer,
} from './helpers.js';

const available = registryAvailable().ok;
const SIMPLE_SIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
const SIG_ANNOTATION = 'dev.cosignproject.cosign/signature';

let tb: TestBroker;
let reg: TestRegistry;
let ci: CiIssuer;
let host: string;
let app: PushedImage;
let signerToken: string;
const keys: Record<string, { publicKeyPem: string; keyId: string }> = {};

const tagOf = (digest: string) => digest.replace(':', '-');

describe.skipIf(!available)('signing images in a real registry', () => {
  beforeAll(async () => {
    [reg, ci] = await Promise.all([startRegistry(), startCiIssuer('ES256')]);
    host = reg.hostPort;
    tb = await startTestBroker({ env: { KEYWARDEN_INSECURE_REGISTRIES: host } });
    for (const [name, alg] of [['release', undefined], ['other', 'ed25519'], ['bundled', undefined]] as const) {
      keys[name] = await createKey(tb, name, alg);
    }
    await registerIssuer(tb, ci, [`${host}/org/*`]);
    app = await pushTestImage(host, 'org/app', 'v1');
    const res = await exchange(tb, await ci.mint());
    expect(res.status, res.text).toBe(200);
    signerToken = res.body.access_token;
  });
  afterAll(async () => {
    await Promise.all([tb?.close(), reg?.stop(), ci?.close()]);
  });

  function sign(credential: string, body: Record<string, unknown>) {
    return tb.request.post('/v1/signatures').set(auth(credential)).send(body);
  }

  it('signs a tag with the exchanged signer token and publishes a cosign .sig layer', async () => {
    const { result: res, events } = await capture(tb, () => sign(signerToken, { image: `${host}/org/app:v1`, key: 'release' }));
    expect(res.status, res.text).toBe(201);
    expect(res.body).toMatchObject({
      digest: app.digest,
      image: `${host}/org/app@${app.digest}`,
      requested: `${host}/org/app:v1`,
      key: 'release',
      keyId: keys.release!.keyId,
      keyVersion: 1,
      signatureTag: `${tagOf(app.digest)}.sig`,
      signatureRef: `${host}/org/app:${tagOf(app.digest)}.sig`,
      bundleRef: null,
    });
    expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual(['image.sign:allow']);
    expect(events[0]).toMatchObject({ actorKind: 'ci', resourceName: `${host}/org/app` });
    expect(events[0]!.details).toMatchObject({ digest: app.digest, key: 'release', keyId: keys.release!.keyId });

    // what verifiers see in the registry
    const sig = await registryManifest(host, 'org/app', `${tagOf(app.digest)}.sig`);
    expect(sig.status).toBe(200);
    expect(sig.json.layers).toHaveLength(1);
    const layer = sig.json.layers[0];
    expect(layer.mediaType).toBe(SIMPLE_SIGNING);
    const payload = await registryBlob(host, 'org/app', layer.digest);
    expect(`sha256:${sha256Hex(payload)}`).toBe(layer.digest);
    expect(payload.toString('base64')).toBe(res.body.payload);
    const signature = Buffer.from(layer.annotations[SIG_ANNOTATION], 'base64');
    expect(layer.annotations[SIG_ANNOTATION]).toBe(res.body.signature);
    const pem = (await tb.request.get('/v1/signing-keys/release/public.pem')).text;
    expect(crypto.verify('sha256', payload, crypto.createPublicKey(pem), signature)).toBe(true);
    // not over anything else
    expect(crypto.verify('sha256', Buffer.concat([payload, Buffer.from(' ')]), crypto.createPublicKey(pem), signature)).toBe(false);

    const doc = JSON.parse(payload.toString('utf8'));
    expect(doc.critical).toEqual({
      identity: { 'docker-reference': `${host}/org/app` },
      image: { 'docker-manifest-digest': app.digest },
      type: 'cosign container image signature',
    });
    expect(doc.optional).toBeNull();
    // the image itself is untouched
    expect((await registryManifest(host, 'org/app', 'v1')).bytes.equals(app.manifestBytes)).toBe(true);
  });

  it('appends a second signature with another key under the same .sig tag', async () => {
    const res = await sign(tb.adminKey, { image: `${host}/org/app:v1`, key: 'other', annotations: { 'git.sha': 'abc123', env: 'prod' } });
    expect(res.status, res.text).toBe(201);
    const sig = await registryManifest(host, 'org/app', `${tagOf(app.digest)}.sig`);
    expect(sig.json.layers).toHaveLength(2);
    const byKey = new Map<string, boolean>();
    for (const layer of sig.json.layers) {
      expect(layer.mediaType).toBe(SIMPLE_SIGNING);
      const payload = await registryBlob(host, 'org/app', layer.digest);
      const signature = Buffer.from(layer.annotations[SIG_ANNOTATION], 'base64');
      for (const [name, k] of Object.entries(keys)) {
        const pub = crypto.createPublicKey(k.publicKeyPem);
        if (crypto.verify(pub.asymmetricKeyType === 'ed25519' ? null : 'sha256', payload, pub, signature)) byKey.set(name, true);
      }
      expect(JSON.parse(payload.toString()).critical.image['docker-manifest-digest']).toBe(app.digest);
    }
    expect([...byKey.keys()].sort()).toEqual(['other', 'release']);
    const second = JSON.parse(Buffer.from(res.body.payload, 'base64').toString());
    expect(second.optional).toEqual({ env: 'prod', 'git.sha': 'abc123' });
  });

  it('signs by digest reference and attaches a sigstore bundle discoverable through the referrers tag index', async () => {
    const lib = await pushTestImage(host, 'org/lib', 'v2');
    const res = await sign(tb.adminKey, { image: `${host}/org/lib@${lib.digest}`, key: 'bundled', bundle: true });
    expect(res.status, res.text).toBe(201);
    expect(res.body.digest).toBe(lib.digest);
    expect(res.body.bundleRef).toMatch(new RegExp(`^${host.replace(/\./g, '\\.')}/org/lib@sha256:[a-f0-9]{64}$`));
    const referrerDigest = res.body.bundleRef.split('@')[1];

    // docker-registry 2.8 has no referrers API: the sha256-<hex> index lists the referrer
    const index = await registryManifest(host, 'org/lib', tagOf(lib.digest));
    expect(index.status).toBe(200);
    expect(index.json.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    const entry = index.json.manifests.find((m: any) => m.digest === referrerDigest);
    expect(entry).toMatchObject({ artifactType: expect.stringMatching(/^application\/vnd\.dev\.sigstore\.bundle/) });
    const referrer = await registryManifest(host, 'org/lib', referrerDigest);
    expect(referrer.json.subject.digest).toBe(lib.digest);
    const bundleJson = JSON.parse((await registryBlob(host, 'org/lib', referrer.json.layers[0].digest)).toString('utf8'));
    expect(bundleJson).toEqual(res.body.bundle);

    // @sigstore/verify with the key's public PEM and no transparency log / timestamps
    const payload = Buffer.from(res.body.payload, 'base64');
    const pub = crypto.createPublicKey((await tb.request.get('/v1/signing-keys/bundled/public.pem')).text);
    const trust = {
      certificateAuthorities: [],
      timestampAuthorities: [],
      tlogs: [],
      ctlogs: [],
      publicKey: (hint: string) => {
        if (hint !== keys.bundled!.keyId) throw new Error(`unknown key ${hint}`);
        return { publicKey: pub, validFor: () => true };
      },
    };
    const verifier = new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
    const bundle = bundleFromJSON(bundleJson);
    expect(verifier.verify(toSignedEntity(bundle, payload)).key).toBe(pub);
    const tampered = Buffer.from(payload.toString().replace('org/lib', 'org/evil'));
    expect(() => verifier.verify(toSignedEntity(bundle, tampered))).toThrow();
    expect(JSON.parse(payload.toString()).critical.image['docker-manifest-digest']).toBe(lib.digest);

    // the simple-signing layer is there too
    const sig = await registryManifest(host, 'org/lib', `${tagOf(lib.digest)}.sig`);
    expect(sig.json.layers).toHaveLength(1);
  });

  it('keeps verifying old signatures after rotation and signs with the new version', async () => {
    await tb.request.post('/v1/signing-keys/release/rotate').set(auth(tb.adminKey)).expect(200);
    const img = await pushTestImage(host, 'org/app', 'v2');
    const res = await sign(signerToken, { image: `${host}/org/app:v2`, key: 'release' });
    expect(res.status, res.text).toBe(201);
    expect(res.body.keyVersion).toBe(2);
    expect(res.body.digest).toBe(img.digest);
    const key = (await tb.request.get('/v1/signing-keys/release').set(auth(signerToken))).body;
    expect(res.body.keyId).toBe(key.keyId);
    expect(crypto.verify('sha256', Buffer.from(res.body.payload, 'base64'), crypto.createPublicKey(key.publicKeyPem), Buffer.from(res.body.signature, 'base64'))).toBe(true);
  });

  describe('scope', () => {
    async function expectDenied(credential: string, body: Record<string, unknown>, detail: RegExp) {
      const { result: res, events } = await capture(tb, () => sign(credential, body));
      const problem = expectProblem(res, 403);
      expect(problem.detail).toMatch(detail);
      expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual(['image.sign:deny']);
      expect(events[0]!.reason).toMatch(detail);
      return problem;
    }

    it('an exchanged token cannot use another key or an image outside its patterns', async () => {
      await expectDenied(signerToken, { image: `${host}/org/app:v1`, key: 'other' }, /signing key other is outside/);
      await expectDenied(signerToken, { image: `${host}/team/app:v1`, key: 'release' }, /outside this signer's scope/);
      // `*` does not cross path segments
      await expectDenied(signerToken, { image: `${host}/org/app/nested:v1`, key: 'release' }, /outside this signer's scope/);
      await expectDenied(signerToken, { image: `127.0.0.1:1/org/app:v1`, key: 'release' }, /outside this signer's scope/);
    });

    it('a scoped signer API key works within its scope and nowhere else', async () => {
      const scoped = await tb.apiKey('signer', { scope: { keys: ['other'], images: [`${host}/org/lib`] } });
      const ok = await sign(scoped, { image: `${host}/org/lib:v2`, key: 'other' });
      expect(ok.status, ok.text).toBe(201);
      await expectDenied(scoped, { image: `${host}/org/lib:v2`, key: 'release' }, /outside/);
      await expectDenied(scoped, { image: `${host}/org/app:v1`, key: 'other' }, /outside/);
      const { events } = await capture(tb, () => sign(scoped, { image: `${host}/org/lib:v2`, key: 'other' }));
      expect(events[0]).toMatchObject({ action: 'image.sign', outcome: 'allow', actorKind: 'operator' });
    });

    it('a signer API key without scope, writers and auditors may not sign', async () => {
      const unscoped = await tb.apiKey('signer');
      await expectDenied(unscoped, { image: `${host}/org/app:v1`, key: 'release' }, /no signing scope/);
      for (const role of ['writer', 'auditor'] as const) {
        const key = await tb.apiKey(role);
        const { result: res, events } = await capture(tb, () => sign(key, { image: `${host}/org/app:v1`, key: 'release' }));
        expectProblem(res, 403, 'signing_not_allowed');
        expect(events.map((e) => `${e.action}:${e.outcome}`), role).toEqual(['image.sign:deny']);
        expect(events[0]!.reason).toBe(`role ${role} may not sign`);
      }
      const { result: anon } = await capture(tb, () => sign('', { image: `${host}/org/app:v1`, key: 'release' }));
      expectProblem(anon, 401);
    });

    it('an unknown key is 404 and a disabled key 403, both audited', async () => {
      const { result: missing, events } = await capture(tb, () => sign(tb.adminKey, { image: `${host}/org/app:v1`, key: 'ghost' }));
      expectProblem(missing, 404);
      expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual(['image.sign:deny']);
      await tb.request.post('/v1/signing-keys/release/disable').set(auth(tb.adminKey)).expect(200);
      await expectDenied(signerToken, { image: `${host}/org/app:v1`, key: 'release' }, /disabled/);
      await tb.request.post('/v1/signing-keys/release/enable').set(auth(tb.adminKey)).expect(200);
      expect((await sign(signerToken, { image: `${host}/org/app:v1`, key: 'release' })).status).toBe(201);
    });
  });

  it('maps registry failures: missing image 404, malformed reference 400', async () => {
    const { result: missing, events } = await capture(tb, () => sign(tb.adminKey, { image: `${host}/org/app:does-not-exist`, key: 'release' }));
    expectProblem(missing, 404, 'image_not_found');
    expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual(['image.sign:error']);
    expectProblem(await sign(tb.adminKey, { image: `${host}/org/app@sha256:${'0'.repeat(64)}`, key: 'release' }), 404, 'image_not_found');
    for (const image of ['org/app:v1', `${host}/Org/App:v1`, `http://${host}/org/app:v1`, `${host}/org/app`, `${host}/org/app@sha256:abc`, 'x'.repeat(600)]) {
      const res = await sign(tb.adminKey, { image, key: 'release' });
      expectProblem(res, 400);
    }
    expectProblem(await sign(tb.adminKey, { image: `${host}/org/app:v1`, key: 'release', extra: 1 }), 400);
  });

  it('lists what was signed, filtered by image', async () => {
    const auditor = await tb.apiKey('auditor');
    const all = await tb.request.get('/v1/signatures').set(auth(auditor));
    expect(all.status).toBe(200);
    const appSigs = await tb.request.get('/v1/signatures').query({ image: `${host}/org/app` }).set(auth(auditor));
    expect(appSigs.body.items.length).toBeGreaterThanOrEqual(4);
    for (const s of appSigs.body.items) expect(s.image.startsWith(`${host}/org/app@`)).toBe(true);
    expect(appSigs.body.items.map((s: any) => s.key)).toEqual(expect.arrayContaining(['release', 'other']));
    const v1 = await tb.request.get('/v1/signatures').query({ image: `${host}/org/app@${app.digest}` }).set(auth(auditor));
    expect(v1.body.items.length).toBeGreaterThanOrEqual(3);
    for (const s of v1.body.items) {
      expect(s).toMatchObject({ digest: app.digest, signatureRef: `${host}/org/app:${tagOf(app.digest)}.sig` });
    }
    const ci = v1.body.items.find((s: any) => s.key === 'release' && s.signedBy === 'signer:github');
    expect(ci).toBeDefined();
    const lib = await tb.request.get('/v1/signatures').query({ image: `${host}/org/lib:v2` }).set(auth(auditor));
    expect(lib.body.items.length).toBeGreaterThanOrEqual(2);
    expect(lib.body.items.some((s: any) => s.bundleRef)).toBe(true);
    expect(all.body.items.length).toBe(appSigs.body.items.length + lib.body.items.length);
    expectProblem(await tb.request.get('/v1/signatures').query({ image: 'nope' }).set(auth(auditor)), 400);
    expectProblem(await tb.request.get('/v1/signatures').set(auth(await tb.apiKey('writer'))), 403);
  });
});
