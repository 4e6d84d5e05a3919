/**
 * The release gate's decision cache (issue 27, target 6): decisions kept in memory per instance
 * under the trust epoch (migration 013), with a real docker-registry behind a counting proxy and
 * two broker instances on one database (SQLite file, or PostgreSQL with
 * KEYWARDEN_TEST_DATABASE_URL). Correctness only: what is asked of the registry, what is
 * recorded, and that a policy or key change (through the API, or by hand in the database) stops
 * cached decisions on every instance.
 */
import crypto, { generateKeyPairSync } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { attachCosignSignature } from '../../src/trust/cosign/cosign-signatures.js';
import { buildSimpleSigningPayload } from '../../src/trust/cosign/simple-signing.js';
import { RegistryClient } from '../../src/trust/registry/registry-client.js';
import { CACHE_STALENESS_BOUND_MS as TRUST_STALENESS_BOUND_MS } from '../../src/db/cache-epoch.js';
import { bearer, startTestBroker, type TestBroker } from '../support/broker.js';
import { pushTestImage, registryAvailable, startCountingProxy, startRegistry, type CountingProxy, type TestRegistry } from '../support/registry.js';

const reg = registryAvailable();
const describeReal = reg.ok ? describe : describe.skip;

interface Decision {
  id: string;
  decision: string;
  digest: string | null;
  policyVersion: number | null;
  cached: boolean;
  cachedFrom: string | null;
  checks: Array<{ type: string; ok: boolean; code?: string }>;
}

describeReal('release gate cache (memory, trust epoch, two instances)', () => {
  let registry: TestRegistry;
  let proxy: CountingProxy;
  let R: string;
  let a: TestBroker;
  let b: TestBroker;
  let adminA: Record<string, string>;
  let adminB: Record<string, string>;
  let signerA: Record<string, string>;
  let signerB: Record<string, string>;
  let client: RegistryClient;

  async function decide(tb: TestBroker, who: Record<string, string>, image: string): Promise<Decision> {
    const res = await tb.request.post('/v1/releases').set(who).send({ image });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body as Decision;
  }
  const decideA = (image: string) => decide(a, signerA, image);
  const decideB = (image: string) => decide(b, signerB, image);

  async function putPolicy(tb: TestBroker, admin: Record<string, string>, doc: Record<string, unknown>) {
    const existing = await tb.request.get(`/v1/policies/${doc.name}`).set(admin);
    const res = existing.status === 200 ? await tb.request.put(`/v1/policies/${doc.name}`).set(admin).send(doc) : await tb.request.post('/v1/policies').set(admin).send(doc);
    expect([200, 201], res.text).toContain(res.status);
    return res.body as { version: number };
  }

  async function signedImage(repo: string, keyName: string) {
    const img = await pushTestImage(R, repo, 'v1');
    const s = await a.broker.services.signingKeys.signer(keyName);
    const payload = buildSimpleSigningPayload(`${R}/${repo}`, img.digest);
    const signature = await s.sign(payload);
    await attachCosignSignature(client, { registry: R, repository: repo, digest: img.digest, payload, signatureB64: signature.toString('base64') });
    return img;
  }

  async function createKey(name: string) {
    const res = await a.request.post('/v1/signing-keys').set(adminA).send({ name });
    expect(res.status, res.text).toBe(201);
  }

  beforeAll(async () => {
    registry = await startRegistry();
    proxy = await startCountingProxy(registry.hostPort);
    R = proxy.hostPort;
    const rootKey = crypto.randomBytes(32).toString('base64');
    const env = { KEYWARDEN_INSECURE_REGISTRIES: R, KEYWARDEN_GATE_TIMEOUT_MS: '5000' };
    a = await startTestBroker({ env, rootKey });
    b = await startTestBroker({ env, rootKey, db: a.db, keepDatabase: true });
    adminA = bearer(a.adminKey);
    adminB = bearer(b.adminKey);
    signerA = bearer(await a.apiKey('signer'));
    signerB = bearer(await b.apiKey('signer'));
    client = new RegistryClient({ insecureRegistries: [R] });
  }, 60_000);

  afterAll(async () => {
    await b?.close();
    await a?.close();
    await proxy?.close();
    await registry?.stop();
  });

  it('answers a repeated decision by digest without asking the registry, and records every one', async () => {
    await createKey('memo');
    const img = await signedImage('memo/app', 'memo');
    await putPolicy(a, adminA, { name: 'memo', images: [`${R}/memo/app`], cosign: { keys: ['memo'] } });
    const image = `${R}/memo/app@${img.digest}`;
    const first = await decideA(image);
    expect(first).toMatchObject({ decision: 'allow', cached: false, digest: img.digest });

    // 16 at once, as an admission webhook calls: they share the audit's group commit
    const asked = proxy.requests.length;
    const repeated = await Promise.all(Array.from({ length: 16 }, () => decideA(image)));
    expect(proxy.requests.slice(asked)).toEqual([]);
    for (const d of repeated) expect(d).toMatchObject({ decision: 'allow', cached: true, cachedFrom: first.id, digest: img.digest });
    expect(new Set(repeated.map((d) => d.id)).size).toBe(16);

    // each one is on the record: its row, and its audit event naming it, committed before the answer
    const ids = repeated.map((d) => d.id);
    const rows = await a.broker.services.db('release_decisions').whereIn('id', ids);
    expect(rows.map((r: { id: string }) => r.id).sort()).toEqual([...ids].sort());
    expect(rows.every((r: { cached: number | boolean; cached_from: string }) => Boolean(r.cached) && r.cached_from === first.id)).toBe(true);
    const events = await a.broker.services.db('audit_events').where({ action: 'release.decide', resource_name: image });
    const recorded = events.map((e: { details: string }) => JSON.parse(e.details) as { decisionId: string; cached: boolean; cachedFrom?: string });
    for (const id of ids) expect(recorded.find((e) => e.decisionId === id)).toMatchObject({ cached: true, cachedFrom: first.id });
    // and readable through the API like any decision
    const one = await a.request.get(`/v1/releases/${ids[0]}`).set(signerA);
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ id: ids[0], cached: true, cachedFrom: first.id });
  });

  it('by tag: one manifest HEAD (the tag), then the cached decision', async () => {
    await createKey('tagged');
    const img = await signedImage('tagged/app', 'tagged');
    await putPolicy(a, adminA, { name: 'tagged', images: [`${R}/tagged/app`], cosign: { keys: ['tagged'] } });
    const image = `${R}/tagged/app:v1`;
    let asked = proxy.requests.length;
    const fresh = await decideA(image);
    expect(fresh).toMatchObject({ decision: 'allow', cached: false, digest: img.digest });
    // the tag is resolved once; the other requests are the signature's
    expect(proxy.requests.slice(asked).filter((r) => r.endsWith('/tagged/app/manifests/v1'))).toEqual(['HEAD /v2/tagged/app/manifests/v1']);

    for (let i = 0; i < 3; i++) {
      asked = proxy.requests.length;
      expect(await decideA(image)).toMatchObject({ decision: 'allow', cached: true, cachedFrom: fresh.id, digest: img.digest });
      expect(proxy.requests.slice(asked)).toEqual(['HEAD /v2/tagged/app/manifests/v1']);
    }
  });

  it('a policy change through the API voids cached decisions at once here, and on the other instance', async () => {
    await createKey('pol');
    const img = await signedImage('pol/app', 'pol');
    const doc = { name: 'pol', images: [`${R}/pol/app`], cosign: { keys: ['pol'] } };
    const v1 = await putPolicy(a, adminA, doc);
    const image = `${R}/pol/app@${img.digest}`;
    await decideA(image);
    await decideB(image);
    expect(await decideA(image)).toMatchObject({ cached: true, policyVersion: v1.version });
    expect(await decideB(image)).toMatchObject({ cached: true, policyVersion: v1.version });

    // changed on b: b's own next decision is fresh at once (its epoch expired at commit)
    const v2 = await putPolicy(b, adminB, { ...doc, mode: 'warn' });
    expect(await decideB(image)).toMatchObject({ cached: false, policyVersion: v2.version });
    // a sees it once it has read the epoch (the poll does, within the bound): never the old version after that
    await a.broker.services.gate.trustEpoch.refresh();
    expect(await decideA(image)).toMatchObject({ cached: true, policyVersion: v2.version });
  });

  it('a change on the other instance reaches this one without it being told (poll, or an unconfirmed epoch read again)', async () => {
    await createKey('poll');
    const img = await signedImage('poll/app', 'poll');
    const doc = { name: 'poll', images: [`${R}/poll/app`], cosign: { keys: ['poll'] } };
    await putPolicy(a, adminA, doc);
    const image = `${R}/poll/app@${img.digest}`;
    await decideA(image);
    const before = await decideA(image);
    expect(before.cached).toBe(true);
    const v2 = await putPolicy(b, adminB, { ...doc, mode: 'warn' });
    // nothing here tells a: its poll (or, once its last confirmation is too old, a read before deciding) must, within TRUST_STALENESS_BOUND_MS
    await vi.waitFor(
      async () => {
        expect((await decideA(image)).policyVersion).toBe(v2.version);
      },
      { timeout: TRUST_STALENESS_BOUND_MS * 5, interval: 50 },
    );
  });

  it('a signing key removed by hand in the database stops cached allows on both instances', async () => {
    await createKey('byhand');
    const img = await signedImage('byhand/app', 'byhand');
    await putPolicy(a, adminA, { name: 'byhand', images: [`${R}/byhand/app`], cosign: { keys: ['byhand'] } });
    const image = `${R}/byhand/app@${img.digest}`;
    await decideA(image);
    await decideB(image);
    expect(await decideA(image)).toMatchObject({ decision: 'allow', cached: true });
    expect(await decideB(image)).toMatchObject({ decision: 'allow', cached: true });

    // not through the broker: the triggers move the epoch all the same
    await b.handle.knex.transaction(async (trx) => {
      await trx('signing_key_versions').where({ name: 'byhand' }).delete();
      await trx('signing_keys').where({ name: 'byhand' }).delete();
    });
    for (const [tb, who] of [
      [a, signerA],
      [b, signerB],
    ] as const) {
      await vi.waitFor(
        async () => {
          const d = await decide(tb, who, image);
          expect(d).toMatchObject({ decision: 'deny', cached: false });
          expect(d.checks[0]).toMatchObject({ type: 'cosign', code: 'no_trusted_keys' });
        },
        { timeout: TRUST_STALENESS_BOUND_MS * 5, interval: 50 },
      );
    }
  });

  it('a key rotation through the API is a fresh decision at once on the instance that made it', async () => {
    await createKey('rot');
    const img = await signedImage('rot/app', 'rot');
    await putPolicy(a, adminA, { name: 'rot', images: [`${R}/rot/app`], cosign: { keys: ['rot'] } });
    const image = `${R}/rot/app@${img.digest}`;
    const first = await decideA(image);
    expect(await decideA(image)).toMatchObject({ cached: true, cachedFrom: first.id });
    expect((await a.request.post('/v1/signing-keys/rot/rotate').set(adminA)).status).toBe(200);
    // old versions keep verifying: the same outcome, decided afresh under the new epoch
    const after = await decideA(image);
    expect(after).toMatchObject({ decision: 'allow', cached: false });
    expect(await decideA(image)).toMatchObject({ cached: true, cachedFrom: after.id });
  });

  it('moves the epoch on hand-written changes to every table a decision depends on', async () => {
    const epoch = async () => {
      await a.broker.services.gate.trustEpoch.refresh();
      return a.broker.services.gate.currentTrustEpoch();
    };
    const pem = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    await putPolicy(a, adminA, { name: 'watched', images: [`${R}/watched/app`], cosign: { keys: [pem] } });
    await createKey('watched');
    const changes: Array<[string, () => Promise<unknown>]> = [
      ['trust_policies', () => a.handle.knex('trust_policies').where({ name: 'watched' }).update({ updated_by: 'by hand' })],
      ['signing_keys', () => a.handle.knex('signing_keys').where({ name: 'watched' }).update({ updated_at: Date.now() })],
      ['signing_key_versions', () => a.handle.knex('signing_key_versions').where({ name: 'watched' }).update({ created_at: Date.now() })],
    ];
    for (const [table, change] of changes) {
      const before = await epoch();
      await change();
      expect(await epoch(), table).toBeGreaterThan(before);
    }
    // a decision's own rows are not trust material: recording decisions never moves it
    const before = await epoch();
    await decideA(`${R}/watched/app@sha256:${'c'.repeat(64)}`);
    expect(await epoch()).toBe(before);
  });
});
