/**
 * Release gate end to end: a real docker-registry, a real notary-server and the real notary
 * client, the broker's own signing keys, policies over HTTP. Runs on SQLite and (with
 * KEYWARDEN_TEST_DATABASE_URL) on PostgreSQL.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attachCosignSignature, signPayload } from '../../src/trust/cosign/cosign-signatures.js';
import { buildSimpleSigningPayload } from '../../src/trust/cosign/simple-signing.js';
import { RegistryClient } from '../../src/trust/registry/registry-client.js';
import { bearer, startTestBroker, type TestBroker } from '../support/broker.js';
import { NotaryCli, notaryToolsAvailable, startNotaryServer, type NotaryServerHandle } from '../support/notary-server.js';
import { freePort, pushTestImage, registryAvailable, startRegistry, type PushedImage, type TestRegistry } from '../support/registry.js';
import { upsertPolicy } from '../support/policies.js';

const tools = notaryToolsAvailable();
const reg = registryAvailable();
const describeReal = tools.ok && reg.ok ? describe : describe.skip;

const sha256Hex = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

function listen(server: Server): Promise<string> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const a = server.address();
      resolve(`http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`);
    }),
  );
}

/** Forwards to the notary server and lets the test rewrite one role's metadata. */
async function tamperProxy(upstream: string, role: string, edit: (body: Buffer) => Buffer): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      try {
        const r = await fetch(upstream + (req.url ?? '/'));
        let body: Buffer = Buffer.from(await r.arrayBuffer());
        if (req.url?.endsWith(`/_trust/tuf/${role}.json`)) body = edit(body);
        res.writeHead(r.status, { 'content-type': 'application/json', 'content-length': body.length });
        res.end(body);
      } catch (err) {
        res.statusCode = 502;
        res.end(String(err));
      }
    })();
  });
  const url = await listen(server);
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describeReal('release gate (real registry, real notary)', () => {
  let registry: TestRegistry;
  let notary: NotaryServerHandle;
  let cli: NotaryCli;
  let tb: TestBroker;
  let gateDefaultAllow: TestBroker;
  let client: RegistryClient;
  let R: string;
  let deadRegistry: string;
  let slowRegistry: { hostPort: string; close(): Promise<void> };
  let offsetMs = 0;
  const clock = () => Date.now() + offsetMs;
  let admin: Record<string, string>;
  let signer: Record<string, string>;
  let notaryRoot: { publicB64: string };
  const NOTARY_REPO = 'team/notary';
  let notaryImage: PushedImage;

  async function push(repo: string, tag: string, opts: Parameters<typeof pushTestImage>[3] = {}) {
    return pushTestImage(R, repo, tag, opts);
  }

  async function signWithBrokerKey(repo: string, digest: string, payloadDigest = digest, keyName = 'release') {
    const s = await tb.broker.services.signingKeys.signer(keyName);
    const payload = buildSimpleSigningPayload(`${R}/${repo}`, payloadDigest);
    const signature = await s.sign(payload);
    await attachCosignSignature(client, { registry: R, repository: repo, digest, payload, signatureB64: signature.toString('base64') });
  }

  const putPolicy = (doc: Record<string, unknown>) => upsertPolicy(tb, admin, doc);

  async function decide(image: string, who: Record<string, string> = signer, broker: TestBroker = tb) {
    const res = await broker.request.post('/v1/releases').set(who).send({ image });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body as {
      id: string;
      decision: string;
      digest: string | null;
      policy: string | null;
      policyVersion: number | null;
      cached: boolean;
      cachedFrom: string | null;
      checks: Array<{ type: string; ok: boolean; detail: string; code?: string }>;
    };
  }

  const failing = (d: Awaited<ReturnType<typeof decide>>) => d.checks.find((c) => !c.ok);

  beforeAll(async () => {
    registry = await startRegistry();
    R = registry.hostPort;
    deadRegistry = `127.0.0.1:${await freePort()}`;
    // accepts connections and never answers
    const sockets = new Set<net.Socket>();
    const slow = net.createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', () => r()));
    const slowHost = `127.0.0.1:${(slow.address() as net.AddressInfo).port}`;
    slowRegistry = {
      hostPort: slowHost,
      close: () =>
        new Promise<void>((r) => {
          for (const s of sockets) s.destroy();
          slow.close(() => r());
        }),
    };
    notary = await startNotaryServer();
    cli = await NotaryCli.create(notary.url);
    const env = {
      // "127.0.0.1" (any port): the notary server and the tamper proxies speak plain http on loopback
      KEYWARDEN_INSECURE_REGISTRIES: `${R},${deadRegistry},${slowHost},127.0.0.1`,
      KEYWARDEN_GATE_TIMEOUT_MS: '1500',
    };
    tb = await startTestBroker({ env, clock });
    gateDefaultAllow = await startTestBroker({ env: { ...env, KEYWARDEN_GATE_DEFAULT: 'allow' } });
    client = new RegistryClient({ insecureRegistries: [R] });
    admin = bearer(tb.adminKey);
    signer = bearer(await tb.apiKey('signer'));

    const key = await tb.request.post('/v1/signing-keys').set(admin).send({ name: 'release' });
    if (key.status !== 201) await tb.broker.services.signingKeys.create({ kind: 'operator', role: 'admin', id: 't', name: 't', via: 'api-key' }, { requestId: 't', sourceIp: null, userAgent: null }, { name: 'release', algorithm: 'ecdsa-p256' });

    // notary: v1 -> the image; v3 -> some other digest; v2 pushed to the registry only
    notaryImage = await push(NOTARY_REPO, 'v1', { user: '1000' });
    await push(NOTARY_REPO, 'v2');
    await push(NOTARY_REPO, 'v3');
    const gun = `${R}/${NOTARY_REPO}`;
    await cli.init(gun);
    await cli.addHash(gun, 'v1', notaryImage.manifestBytes.length, notaryImage.digest.slice(7));
    await cli.addHash(gun, 'v3', 1234, sha256Hex('not the image'));
    notaryRoot = await cli.rootKey(gun);
  }, 120_000);

  afterAll(async () => {
    await tb?.close();
    await gateDefaultAllow?.close();
    await slowRegistry?.close();
    await notary?.stop();
    await cli?.cleanup();
    await registry?.stop();
  });

  // ------------------------------------------------------------------------------ cosign

  describe('cosign', () => {
    it('allows an image signed with the broker’s own key (every version counts)', async () => {
      const img = await push('cosign/signed', 'v1');
      await signWithBrokerKey('cosign/signed', img.digest);
      const p = await putPolicy({ name: 'cosign-signed', images: [`${R}/cosign/signed`], cosign: { keys: ['release'] } });
      expect(p.version).toBe(1);
      const d = await decide(`${R}/cosign/signed:v1`);
      expect(d).toMatchObject({ decision: 'allow', digest: img.digest, policy: 'cosign-signed', policyVersion: 1, cached: false });
      expect(d.checks).toEqual([expect.objectContaining({ type: 'cosign', ok: true })]);
      expect(d.checks[0]!.detail).toContain('1 of 1');

      // after a rotation the old version's signature still verifies as the same key
      await tb.request.post('/v1/signing-keys/release/rotate').set(admin).send({});
      await putPolicy({ name: 'cosign-signed', images: [`${R}/cosign/signed`], cosign: { keys: ['release'] } });
      const again = await decide(`${R}/cosign/signed@${img.digest}`);
      expect(again).toMatchObject({ decision: 'allow', policyVersion: 2, cached: false });
    });

    it('denies a signature by an untrusted key', async () => {
      const img = await push('cosign/untrusted', 'v1');
      const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const payload = buildSimpleSigningPayload(`${R}/cosign/untrusted`, img.digest);
      await attachCosignSignature(client, {
        registry: R,
        repository: 'cosign/untrusted',
        digest: img.digest,
        payload,
        signatureB64: signPayload(other.privateKey, payload).toString('base64'),
      });
      await putPolicy({ name: 'cosign-untrusted', images: [`${R}/cosign/untrusted`], cosign: { keys: ['release'] } });
      const d = await decide(`${R}/cosign/untrusted:v1`);
      expect(d.decision).toBe('deny');
      expect(failing(d)).toMatchObject({ type: 'cosign', code: 'untrusted_signature' });
      expect(failing(d)!.detail).toMatch(/no valid signature by a trusted key.*does not verify with any trusted key/);

      // the same signature verifies once its key is trusted (as a PEM public key)
      const pem = other.publicKey.export({ type: 'spki', format: 'pem' }).toString();
      await putPolicy({ name: 'cosign-untrusted', images: [`${R}/cosign/untrusted`], cosign: { keys: ['release', pem] } });
      expect((await decide(`${R}/cosign/untrusted:v1`)).decision).toBe('allow');
    });

    it('denies a signature whose payload names another digest', async () => {
      const img = await push('cosign/mismatch', 'v1');
      const other = await push('cosign/mismatch', 'other');
      await signWithBrokerKey('cosign/mismatch', img.digest, other.digest);
      await putPolicy({ name: 'cosign-mismatch', images: [`${R}/cosign/mismatch`], cosign: { keys: ['release'] } });
      const d = await decide(`${R}/cosign/mismatch:v1`);
      expect(d.decision).toBe('deny');
      expect(failing(d)!.detail).toContain(`payload is for ${other.digest}, not ${img.digest}`);
    });

    it('denies when the threshold of distinct trusted keys is not met', async () => {
      const img = await push('cosign/threshold', 'v1');
      await signWithBrokerKey('cosign/threshold', img.digest);
      const second = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
      await putPolicy({ name: 'cosign-threshold', images: [`${R}/cosign/threshold`], cosign: { keys: ['release', second], threshold: 2 } });
      const d = await decide(`${R}/cosign/threshold:v1`);
      expect(d.decision).toBe('deny');
      expect(failing(d)).toMatchObject({ type: 'cosign', code: 'threshold_not_met' });
      expect(failing(d)!.detail).toMatch(/^threshold not met: 1 of 2/);
    });

    it('denies an unsigned image', async () => {
      await push('cosign/unsigned', 'v1');
      await putPolicy({ name: 'cosign-unsigned', images: [`${R}/cosign/unsigned`], cosign: { keys: ['release'] } });
      const d = await decide(`${R}/cosign/unsigned:v1`);
      expect(d.decision).toBe('deny');
      expect(failing(d)).toMatchObject({ type: 'cosign', code: 'no_signatures' });
    });
  });

  // ------------------------------------------------------------------------------ notary

  describe('notary', () => {
    const gun = () => `${R}/${NOTARY_REPO}`;
    const policy = (over: Record<string, unknown> = {}) =>
      putPolicy({ name: 'notary', images: [`${R}/${NOTARY_REPO}`], notary: { server: notary.url, rootKeys: [notaryRoot.publicB64], ...over } });

    it('allows an image published with the real notary client', async () => {
      await policy();
      const d = await decide(`${gun()}:v1`);
      expect(d).toMatchObject({ decision: 'allow', digest: notaryImage.digest, policy: 'notary' });
      expect(d.checks).toEqual([expect.objectContaining({ type: 'notary', ok: true })]);
    });

    it('denies with a wrong pinned root key', async () => {
      const wrong = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
      await policy({ rootKeys: [wrong] });
      const d = await decide(`${gun()}:v1`);
      expect(d.decision).toBe('deny');
      expect(failing(d)).toMatchObject({ type: 'notary', code: 'root_untrusted' });
      expect(failing(d)!.detail).toContain('root.json is not signed by a pinned root key');
    });

    it('denies tampered targets.json and snapshot.json', async () => {
      const evil = Buffer.from(sha256Hex('evil'), 'hex').toString('base64');
      const good = Buffer.from(notaryImage.digest.slice(7), 'hex').toString('base64');
      const targets = await tamperProxy(notary.url, 'targets', (b) => Buffer.from(b.toString().replace(good, evil)));
      try {
        await policy({ server: targets.url });
        const d = await decide(`${gun()}:v1`);
        expect(d.decision).toBe('deny');
        expect(failing(d)).toMatchObject({ type: 'notary', code: 'hash_mismatch' });
        expect(failing(d)!.detail).toContain('targets.json hash does not match snapshot');
      } finally {
        await targets.close();
      }
      const snapshot = await tamperProxy(notary.url, 'snapshot', (b) =>
        Buffer.from(b.toString().replace(/"version":(\d+)/, (_m, v) => `"version":${Number(v) + 1}`)),
      );
      try {
        await policy({ server: snapshot.url });
        const d = await decide(`${gun()}:v1`);
        expect(d.decision).toBe('deny');
        expect(failing(d)).toMatchObject({ type: 'notary', code: 'hash_mismatch' });
        expect(failing(d)!.detail).toContain('snapshot.json hash does not match timestamp');
      } finally {
        await snapshot.close();
      }
    });

    it('denies expired trust data (clock past expiry), even when an allow was cached', async () => {
      await policy();
      const fresh = await decide(`${gun()}:v1`);
      expect(fresh.decision).toBe('allow');
      expect((await decide(`${gun()}:v1`)).cached).toBe(true);
      offsetMs = 30 * 86_400_000;
      try {
        const d = await decide(`${gun()}:v1`);
        expect(d).toMatchObject({ decision: 'deny', cached: false });
        expect(failing(d)).toMatchObject({ type: 'notary', code: 'expired' });
        expect(failing(d)!.detail).toMatch(/expired at/);
      } finally {
        offsetMs = 0;
      }
    });

    it('denies a tag missing from the trust data and a digest mismatch', async () => {
      await policy();
      const missing = await decide(`${gun()}:v2`);
      expect(missing.decision).toBe('deny');
      expect(failing(missing)).toMatchObject({ type: 'notary', code: 'tag_missing', detail: 'tag v2 not found in targets' });
      const mismatch = await decide(`${gun()}:v3`);
      expect(mismatch.decision).toBe('deny');
      expect(failing(mismatch)).toMatchObject({ type: 'notary', code: 'digest_mismatch' });
      expect(failing(mismatch)!.detail).toContain('digest mismatch');
    });

    it('denies when a required delegation is absent', async () => {
      await policy({ delegations: ['targets/releases'] });
      const d = await decide(`${gun()}:v1`);
      expect(d.decision).toBe('deny');
      expect(failing(d)).toMatchObject({ type: 'notary', code: 'delegation_missing' });
      expect(failing(d)!.detail).toContain('required delegation targets/releases absent');
    });

    it('denies a digest-only reference (notary needs a tag)', async () => {
      await policy();
      const d = await decide(`${gun()}@${notaryImage.digest}`);
      expect(d.decision).toBe('deny');
      expect(failing(d)).toMatchObject({ type: 'notary', code: 'tag_required' });
      expect(failing(d)!.detail).toMatch(/only a digest/);
      // tag@digest works
      expect((await decide(`${gun()}:v1@${notaryImage.digest}`)).decision).toBe('allow');
    });

    it('denies (and does not cache) when the notary server is down; warn in warn mode', async () => {
      const down = `http://127.0.0.1:${await freePort()}`;
      await policy({ server: down });
      const d = await decide(`${gun()}:v1`);
      expect(d).toMatchObject({ decision: 'deny', cached: false });
      expect(failing(d)).toMatchObject({ type: 'notary', code: 'unreachable' });
      expect((await decide(`${gun()}:v1`)).cached).toBe(false);
      await putPolicy({ name: 'notary', mode: 'warn', images: [`${R}/${NOTARY_REPO}`], notary: { server: down, rootKeys: [notaryRoot.publicB64] } });
      expect((await decide(`${gun()}:v1`)).decision).toBe('warn');
    });
  });

  // ------------------------------------------------------------------------------ config rules

  describe('image config rules', () => {
    it('denies an image running as root and one missing a required label; allows a compliant one', async () => {
      await putPolicy({
        name: 'rules',
        images: [`${R}/rules/*`],
        rules: { nonRootUser: true, requiredLabels: { 'org.opencontainers.image.source': 'https://*' }, forbidLabels: ['debug'], maxAgeDays: 30 },
      });
      const labels = { 'org.opencontainers.image.source': 'https://git.example.com/app' };
      await push('rules/root', 'v1', { labels });
      await push('rules/rootzero', 'v1', { user: '0:0', labels });
      await push('rules/nolabel', 'v1', { user: 'app' });
      await push('rules/debug', 'v1', { user: 'app', labels: { ...labels, debug: 'true' } });
      await push('rules/old', 'v1', { user: 'app', labels, created: '2001-01-01T00:00:00Z' });
      await push('rules/good', 'v1', { user: '1000:0', labels });

      const root = await decide(`${R}/rules/root:v1`);
      expect(root.decision).toBe('deny');
      expect(failing(root)).toMatchObject({ type: 'nonRootUser', detail: 'image runs as root (no User set)' });
      expect(failing(await decide(`${R}/rules/rootzero:v1`))).toMatchObject({ type: 'nonRootUser' });
      const nolabel = await decide(`${R}/rules/nolabel:v1`);
      expect(nolabel.decision).toBe('deny');
      expect(failing(nolabel)).toMatchObject({ type: 'requiredLabels', detail: 'label org.opencontainers.image.source is missing' });
      expect(failing(await decide(`${R}/rules/debug:v1`))).toMatchObject({ type: 'forbidLabels' });
      expect(failing(await decide(`${R}/rules/old:v1`))).toMatchObject({ type: 'maxAgeDays' });
      const good = await decide(`${R}/rules/good:v1`);
      expect(good.decision).toBe('allow');
      expect(good.checks.map((c) => c.type)).toEqual(['nonRootUser', 'requiredLabels', 'forbidLabels', 'maxAgeDays']);
    });
  });

  // ------------------------------------------------------------------------------ failures

  describe('registry failures', () => {
    it('denies when the registry is down or too slow, never errors, never caches', async () => {
      await putPolicy({ name: 'dead', images: [`${deadRegistry}/**`], rules: { nonRootUser: true } });
      const d = await decide(`${deadRegistry}/team/app:v1`);
      expect(d).toMatchObject({ decision: 'deny', digest: null, policy: 'dead' });
      expect(failing(d)).toMatchObject({ type: 'registry', code: 'registry_unreachable' });

      await putPolicy({ name: 'slow', images: [`${slowRegistry.hostPort}/**`], rules: { nonRootUser: true } });
      const t0 = Date.now();
      const s = await decide(`${slowRegistry.hostPort}/team/app:v1`);
      expect(Date.now() - t0).toBeLessThan(10_000);
      expect(s.decision).toBe('deny');
      expect(failing(s)!.detail).toMatch(/timed out|did not answer/);
      // a digest reference skips resolution; the config fetch then times out
      const s2 = await decide(`${slowRegistry.hostPort}/team/app@sha256:${'a'.repeat(64)}`);
      expect(s2).toMatchObject({ decision: 'deny', cached: false });
      expect((await decide(`${slowRegistry.hostPort}/team/app@sha256:${'a'.repeat(64)}`)).cached).toBe(false);
    });

    it('denies an image that does not exist', async () => {
      await putPolicy({ name: 'missing', images: [`${R}/missing/*`], rules: { nonRootUser: true } });
      const d = await decide(`${R}/missing/app:v1`);
      expect(d.decision).toBe('deny');
      expect(failing(d)).toMatchObject({ type: 'registry', code: 'registry_not_found' });
    });
  });

  // ------------------------------------------------------------------------------ selection, default, warn

  describe('policy selection', () => {
    it('uses the most specific matching policy', async () => {
      await push('prio/specific', 'v1'); // runs as root
      await push('prio/other', 'v1');
      await putPolicy({ name: 'prio-broad', images: [`${R}/prio/**`], rules: { nonRootUser: true } });
      await putPolicy({ name: 'prio-segment', images: [`${R}/prio/*`], rules: { nonRootUser: true } });
      await putPolicy({ name: 'prio-exact', images: [`${R}/prio/specific`], mode: 'enforce' });
      const specific = await decide(`${R}/prio/specific:v1`);
      expect(specific).toMatchObject({ decision: 'allow', policy: 'prio-exact' });
      const other = await decide(`${R}/prio/other:v1`);
      expect(other).toMatchObject({ decision: 'deny', policy: 'prio-segment' });
    });

    it('denies without a matching policy, or allows with KEYWARDEN_GATE_DEFAULT=allow', async () => {
      await push('nopolicy/app', 'v1');
      const d = await decide(`${R}/nopolicy/app:v1`);
      expect(d).toMatchObject({ decision: 'deny', policy: null, policyVersion: null });
      expect(failing(d)).toMatchObject({ type: 'policy', code: 'no_policy' });
      const key = bearer(await gateDefaultAllow.apiKey('signer'));
      const a = await decide(`${R}/nopolicy/app:v1`, key, gateDefaultAllow);
      expect(a).toMatchObject({ decision: 'allow', policy: null });
      expect(a.digest).toMatch(/^sha256:/);
    });

    it('gives "warn" in warn mode', async () => {
      await push('warn/app', 'v1');
      await putPolicy({ name: 'warn', mode: 'warn', images: [`${R}/warn/*`], rules: { nonRootUser: true } });
      const d = await decide(`${R}/warn/app:v1`);
      expect(d.decision).toBe('warn');
      expect(failing(d)).toMatchObject({ type: 'nonRootUser' });
    });
  });

  // ------------------------------------------------------------------------------ caching, records, audit

  describe('decisions', () => {
    it('caches deterministic decisions and invalidates them on a policy change', async () => {
      const img = await push('cache/app', 'v1', { user: 'app' });
      const doc = { name: 'cache', images: [`${R}/cache/app`], rules: { nonRootUser: true } };
      await putPolicy(doc);
      const first = await decide(`${R}/cache/app:v1`);
      expect(first).toMatchObject({ decision: 'allow', cached: false, cachedFrom: null, policyVersion: 1 });
      const second = await decide(`${R}/cache/app:v1`);
      expect(second).toMatchObject({ decision: 'allow', cached: true, cachedFrom: first.id, digest: img.digest, policyVersion: 1 });
      expect(second.id).not.toBe(first.id);
      expect(second.checks).toEqual(first.checks);
      // a different tag of the same digest is a different subject
      expect((await decide(`${R}/cache/app@${img.digest}`)).cached).toBe(false);

      await putPolicy(doc);
      const third = await decide(`${R}/cache/app:v1`);
      expect(third).toMatchObject({ cached: false, policyVersion: 2 });
      expect((await decide(`${R}/cache/app:v1`)).cachedFrom).toBe(third.id);

      // deterministic denies are cached too
      await push('cache/root', 'v1');
      await putPolicy({ ...doc, name: 'cache-root', images: [`${R}/cache/root`] });
      expect((await decide(`${R}/cache/root:v1`)).cached).toBe(false);
      expect(await decide(`${R}/cache/root:v1`)).toMatchObject({ decision: 'deny', cached: true });

      const rows = await tb.broker.services.db('release_decisions').where({ digest: img.digest });
      expect(rows.length).toBeGreaterThanOrEqual(5);
    });

    it('does not cache a deny for a missing signature: signing afterwards allows at once', async () => {
      const img = await push('cache/unsigned', 'v1');
      await putPolicy({ name: 'cache-unsigned', images: [`${R}/cache/unsigned`], cosign: { keys: ['release'] } });
      const denied = await decide(`${R}/cache/unsigned:v1`);
      expect(denied).toMatchObject({ decision: 'deny', cached: false });
      expect((await decide(`${R}/cache/unsigned:v1`)).cached).toBe(false);
      await signWithBrokerKey('cache/unsigned', img.digest);
      expect(await decide(`${R}/cache/unsigned:v1`)).toMatchObject({ decision: 'allow', cached: false });
      expect(await decide(`${R}/cache/unsigned:v1`)).toMatchObject({ decision: 'allow', cached: true });
    });

    it('lists and fetches decisions, filters by image and digest, paginates', async () => {
      const auditor = bearer(await tb.apiKey('auditor'));
      const img = `${R}/cache/app:v1`;
      const list = await tb.request.get('/v1/releases').query({ image: img }).set(auditor);
      expect(list.status).toBe(200);
      expect(list.body.items.length).toBeGreaterThanOrEqual(4);
      expect(list.body.items.every((i: { image: string }) => i.image === img)).toBe(true);
      const digest = list.body.items[0].digest;
      const byDigest = await tb.request.get('/v1/releases').query({ digest }).set(auditor);
      expect(byDigest.body.items.length).toBeGreaterThan(list.body.items.length - 1);

      const seen: string[] = [];
      let cursor: string | undefined;
      for (let i = 0; i < 20; i++) {
        const page = await tb.request.get('/v1/releases').query({ image: img, limit: 1, ...(cursor ? { cursor } : {}) }).set(auditor);
        expect(page.status).toBe(200);
        seen.push(...page.body.items.map((x: { id: string }) => x.id));
        cursor = page.body.nextCursor ?? undefined;
        if (!cursor) break;
      }
      expect(seen).toEqual(list.body.items.map((x: { id: string }) => x.id));

      const one = await tb.request.get(`/v1/releases/${seen[0]}`).set(auditor);
      expect(one.status).toBe(200);
      expect(one.body).toEqual(list.body.items[0]);
      expect((await tb.request.get('/v1/releases/rd_doesnotexist').set(auditor)).status).toBe(404);
    });

    it('audits every decision and policy change', async () => {
      const events = await tb.broker.services.db('audit_events').where({ action: 'release.decide' });
      expect(events.length).toBeGreaterThan(10);
      const deny = events.find((e: { outcome: string; resource_name: string }) => e.outcome === 'deny' && e.resource_name === `${R}/cosign/threshold:v1`);
      expect(deny).toBeDefined();
      expect(deny.reason).toMatch(/^cosign: threshold not met/);
      const cached = events.find((e: { details: string }) => JSON.parse(e.details).cached === true);
      expect(JSON.parse(cached.details).cachedFrom).toMatch(/^rd_/);
      const policyEvents = await tb.broker.services.db('audit_events').whereIn('action', ['policy.create', 'policy.update', 'policy.delete']);
      expect(new Set(policyEvents.map((e: { action: string }) => e.action))).toEqual(new Set(['policy.create', 'policy.update']));
    });
  });
});
