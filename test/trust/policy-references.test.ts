/**
 * A trust policy, a trusted issuer's signer scope or a signer API key's scope that names a
 * signing key that does not exist is refused when it is written (400 `unknown_reference`, naming
 * the key), not accepted and failing at decision or signing time. A policy's Notary block is
 * checked without contacting the Notary server: pinned root keys must parse, delegations must be
 * delegation role names, each named once.
 */
import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cosignCheck } from '../../src/trust/gate/gate-checks.js';
import type { PolicyDocument } from '../../src/trust/gate/policy-schema.js';
import { capture } from '../support/audit-events.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblem } from '../core/helpers.js';

const PEM = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
const ROOT_KEY_ID = 'a'.repeat(64);
const NOTARY = 'https://127.0.0.1:9';

function policy(name: string, extra: Record<string, unknown>) {
  return { name, images: [`r.example.com/${name}/*`], ...extra };
}

describe('references in trust policies, trusted issuers and signer scopes', () => {
  let tb: TestBroker;
  let admin: Record<string, string>;

  beforeAll(async () => {
    tb = await startTestBroker();
    admin = auth(tb.adminKey);
    expect((await tb.request.post('/v1/signing-keys').set(admin).send({ name: 'release' })).status).toBe(201);
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('POST /v1/policies naming an unknown signing key → 400 unknown_reference naming it; nothing stored or audited', async () => {
    const { result: res, events } = await capture(tb, () => tb.request.post('/v1/policies').set(admin).send(policy('app', { cosign: { keys: ['ci-key'] } })));
    const problem = expectProblem(res, 400, 'unknown_reference');
    expect(problem.detail).toContain('policy references unknown signing key "ci-key"');
    expect(problem.errors).toEqual([{ path: 'cosign.keys.0', message: 'unknown signing key "ci-key"' }]);
    expect(events).toEqual([]);
    expectProblem(await tb.request.get('/v1/policies/app').set(admin), 404);
  });

  it('names every unknown key with its position; PEM keys and existing (even disabled) keys are not unknown', async () => {
    const res = await tb.request.post('/v1/policies').set(admin).send(policy('app', { cosign: { keys: ['gone-1', PEM, 'release', 'gone-2'], threshold: 1 } }));
    const problem = expectProblem(res, 400, 'unknown_reference');
    expect(problem.detail).toContain('unknown signing keys "gone-1", "gone-2"');
    expect(problem.errors.map((e: { path: string }) => e.path)).toEqual(['cosign.keys.0', 'cosign.keys.3']);
    expect(problem.detail).not.toContain('release');

    expect((await tb.request.post('/v1/signing-keys').set(admin).send({ name: 'retired' })).status).toBe(201);
    expect((await tb.request.post('/v1/signing-keys/retired/disable').set(admin)).status).toBe(200);
    const ok = await tb.request.post('/v1/policies').set(admin).send(policy('app', { cosign: { keys: ['release', PEM, 'retired'] } }));
    expect(ok.status, ok.text).toBe(201);
  });

  it('creating the key first makes the same policy acceptable', async () => {
    expectProblem(await tb.request.post('/v1/policies').set(admin).send(policy('ci', { cosign: { keys: ['ci-key'] } })), 400, 'unknown_reference');
    expect((await tb.request.post('/v1/signing-keys').set(admin).send({ name: 'ci-key' })).status).toBe(201);
    const res = await tb.request.post('/v1/policies').set(admin).send(policy('ci', { cosign: { keys: ['ci-key'] } }));
    expect(res.status, res.text).toBe(201);
  });

  it('PUT /v1/policies/{name} naming an unknown key → 400; the stored version is unchanged', async () => {
    const before = await tb.request.get('/v1/policies/ci').set(admin);
    const res = await tb.request.put('/v1/policies/ci').set(admin).send(policy('ci', { cosign: { keys: ['ci-key', 'typo-key'] } }));
    const problem = expectProblem(res, 400, 'unknown_reference');
    expect(problem.detail).toContain('"typo-key"');
    expect(problem.errors).toEqual([{ path: 'cosign.keys.1', message: 'unknown signing key "typo-key"' }]);
    const after = await tb.request.get('/v1/policies/ci').set(admin);
    expect(after.body.version).toBe(before.body.version);
    expect(after.body.document.cosign.keys).toEqual(['ci-key']);
  });

  it('Notary: an unparsable pinned root key, a malformed or repeated delegation → 400 naming the entry; no server is contacted', async () => {
    const cases: Array<[Record<string, unknown>, string, RegExp]> = [
      [{ server: NOTARY, rootKeys: [ROOT_KEY_ID, 'not-a-key'] }, 'notary.rootKeys.1', /not a usable pinned root key/],
      [{ server: NOTARY, rootKeys: ['-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----'] }, 'notary.rootKeys.0', /not a usable pinned root key/],
      [{ server: NOTARY, rootKeys: [ROOT_KEY_ID], delegations: ['targets/../admin'] }, 'notary.delegations.0', /is not a delegation role/],
      [{ server: NOTARY, rootKeys: [ROOT_KEY_ID], delegations: ['targets/releases', 'a//b'] }, 'notary.delegations.1', /is not a delegation role/],
      [{ server: NOTARY, rootKeys: [ROOT_KEY_ID], delegations: ['releases', 'targets/releases'] }, 'notary.delegations.1', /names targets\/releases again/],
      [{ server: NOTARY, rootKeys: [ROOT_KEY_ID], delegations: ['releases', 'targets/releases/'], threshold: 2 }, 'notary.threshold', /distinct delegations \(1\)/],
    ];
    for (const [notary, path, message] of cases) {
      const res = await tb.request.post('/v1/policies').set(admin).send(policy('dct', { notary }));
      const problem = expectProblem(res, 400, 'invalid_request');
      const entry = problem.errors.find((e: { path: string }) => e.path === path);
      expect(entry, `${JSON.stringify(notary)} → ${res.text}`).toBeDefined();
      expect(entry.message).toMatch(message);
    }
    // well-formed: stored at once although the server does not answer (it is asked at decision time)
    const pem = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const ok = await tb.request
      .post('/v1/policies')
      .set(admin)
      .send(policy('dct', { notary: { server: NOTARY, rootKeys: [ROOT_KEY_ID, pem, Buffer.from(pem).toString('base64')], delegations: ['releases', 'targets/qa'], threshold: 1 } }));
    expect(ok.status, ok.text).toBe(201);
  });

  it('trusted issuers: keys naming an unknown signing key → 400 at create and update; * and existing keys are fine', async () => {
    const jwk = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const issuer = (name: string, keys: string[]) => ({
      name,
      issuer: 'https://ci.example.test',
      jwks: { keys: [{ ...jwk, kid: 'k1', alg: 'ES256' }] },
      audience: 'keywarden',
      claims: { repository: 'org/app' },
      keys,
      images: ['r.example.com/app'],
    });
    const refused = await capture(tb, () => tb.request.post('/v1/trusted-issuers').set(admin).send(issuer('gh', ['release', 'nope'])));
    const problem = expectProblem(refused.result, 400, 'unknown_reference');
    expect(problem.detail).toContain('trusted issuer references unknown signing key "nope"');
    expect(problem.errors).toEqual([{ path: 'keys.1', message: 'unknown signing key "nope"' }]);
    expect(refused.events).toEqual([]);
    expectProblem(await tb.request.get('/v1/trusted-issuers/gh').set(admin), 404);

    expect((await tb.request.post('/v1/trusted-issuers').set(admin).send(issuer('gh', ['release']))).status).toBe(201);
    expect((await tb.request.post('/v1/trusted-issuers').set(admin).send(issuer('any', ['*']))).status).toBe(201);

    expectProblem(await tb.request.patch('/v1/trusted-issuers/gh').set(admin).send({ keys: ['ghost'] }), 400, 'unknown_reference');
    expect((await tb.request.get('/v1/trusted-issuers/gh').set(admin)).body.keys).toEqual(['release']);
    const patched = await tb.request.patch('/v1/trusted-issuers/gh').set(admin).send({ keys: ['release', 'ci-key'] });
    expect(patched.status, patched.text).toBe(200);
    expect(patched.body.keys).toEqual(['release', 'ci-key']);
  });

  it('signer API keys: a scope naming an unknown signing key → 400; with existing keys → 201', async () => {
    const refused = await tb.request
      .post('/v1/api-keys')
      .set(admin)
      .send({ name: 'ci-signer', role: 'signer', scope: { keys: ['release', 'missing'], images: ['r.example.com/*'] } });
    const problem = expectProblem(refused, 400, 'unknown_reference');
    expect(problem.detail).toContain('scope references unknown signing key "missing"');
    expect(problem.errors).toEqual([{ path: 'scope.keys.1', message: 'unknown signing key "missing"' }]);
    expect((await tb.request.get('/v1/api-keys').set(admin)).body.items.some((k: { name: string }) => k.name === 'ci-signer')).toBe(false);
    const ok = await tb.request.post('/v1/api-keys').set(admin).send({ name: 'ci-signer', role: 'signer', scope: { keys: ['release'], images: ['r.example.com/*'] } });
    expect(ok.status, ok.text).toBe(201);
  });

  it('a key that disappears later (a row removed by hand) makes the gate check deny with its name, not throw; rewriting the policy is refused', async () => {
    expect((await tb.request.post('/v1/signing-keys').set(admin).send({ name: 'doomed' })).status).toBe(201);
    expect((await tb.request.post('/v1/policies').set(admin).send(policy('doomed', { cosign: { keys: ['doomed'] } }))).status).toBe(201);
    const db = tb.broker.services.db;
    await db('signing_key_versions').where({ name: 'doomed' }).delete();
    await db('signing_keys').where({ name: 'doomed' }).delete();
    const stored = await tb.request.get('/v1/policies/doomed').set(admin);
    expect(stored.status).toBe(200);
    const check = await cosignCheck({
      ref: { registry: 'r.example.com', repository: 'doomed/app', tag: 'v1' } as never,
      digest: `sha256:${'c'.repeat(64)}`,
      policy: stored.body.document as PolicyDocument,
      registry: {} as never,
      signingKeys: tb.broker.services.signingKeys,
      now: Date.now(),
      timeoutMs: 1000,
    });
    expect(check).toMatchObject({ type: 'cosign', ok: false, code: 'no_trusted_keys' });
    expect(check.detail).toContain('signing key(s) not found: doomed');
    expectProblem(await tb.request.put('/v1/policies/doomed').set(admin).send(stored.body.document), 400, 'unknown_reference');
  });
});
