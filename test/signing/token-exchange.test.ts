import crypto from 'node:crypto';
import { SignJWT, decodeJwt, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { CI_ISSUER as CI_ISSUER_URL, auth, capture, createKey, exchange, expectProblem, registerIssuer, startCiIssuer, type CiIssuer } from './helpers.js';

let tb: TestBroker;
let ci: CiIssuer;
let ciEs: CiIssuer;
const IMAGES = ['127.0.0.1:5999/org/*'];

beforeAll(async () => {
  [tb, ci, ciEs] = await Promise.all([startTestBroker(), startCiIssuer('RS256'), startCiIssuer('ES256')]);
  await createKey(tb, 'release');
  await registerIssuer(tb, ci, IMAGES);
});
afterAll(async () => {
  await Promise.all([tb?.close(), ci?.close(), ciEs?.close()]);
});

/** Runs a failing exchange and checks the problem and the single auth.failure audit event. */
async function expectExchangeFailure(token: string, status: number, code: string) {
  const { result: res, events } = await capture(tb, () => exchange(tb, token));
  const body = expectProblem(res, status, code);
  expect(body.error).toBe(status === 401 ? 'invalid_grant' : 'access_denied');
  expect(res.text).not.toContain(token);
  expect(events.map((e) => `${e.action}:${e.outcome}`), code).toEqual(['auth.failure:deny']);
  expect(events[0]!.details).toMatchObject({ grantType: 'urn:ietf:params:oauth:grant-type:token-exchange' });
  // the CI token itself is never logged, only its HMAC
  expect(JSON.stringify(events[0])).not.toContain(token);
  return { body, event: events[0]! };
}

describe('trusted issuers', () => {
  it('are stored, listed and access-controlled', async () => {
    const auditor = await tb.apiKey('auditor');
    const writer = await tb.apiKey('writer');
    const list = await tb.request.get('/v1/trusted-issuers').set(auth(auditor));
    expect(list.status).toBe(200);
    expect(list.body.items).toHaveLength(1);
    expect(list.body.items[0]).toMatchObject({
      name: 'github',
      issuer: 'https://ci.example.test',
      jwksUri: ci.jwksUri,
      audience: 'keywarden',
      claims: { repository: 'org/app', ref: 'refs/tags/v*' },
      keys: ['release'],
      images: IMAGES,
      tokenTtl: 600,
      enabled: true,
      unconstrained: false,
      problems: [],
    });
    expect((await tb.request.get('/v1/trusted-issuers/github').set(auth(auditor))).body.name).toBe('github');
    expectProblem(await tb.request.get('/v1/trusted-issuers').set(auth(writer)), 403);
    expectProblem(await tb.request.get('/v1/trusted-issuers'), 401);
    expectProblem(
      await tb.request.post('/v1/trusted-issuers').set(auth(writer)).send({ name: 'x', issuer: 'https://x.test', jwksUri: ci.jwksUri, audience: 'a', keys: ['release'], images: ['*'] }),
      403,
    );
    // exactly one of jwksUri / jwks
    expectProblem(
      await tb.request.post('/v1/trusted-issuers').set(auth(tb.adminKey)).send({ name: 'x', issuer: 'https://x.test', audience: 'a', keys: ['release'], images: ['*'] }),
      400,
    );
    const { createdBy: _b, createdAt: _c, updatedAt: _u, enabled: _e, unconstrained: _x, problems: _p, ...again } = list.body.items[0];
    expectProblem(await tb.request.post('/v1/trusted-issuers').set(auth(tb.adminKey)).send(again), 409, 'already_exists');
    expectProblem(await tb.request.post('/v1/trusted-issuers').set(auth(tb.adminKey)).send({ ...again, name: 'alg', jwksUri: 'not a url' }), 400);
    expectProblem(await tb.request.get('/v1/trusted-issuers/nope').set(auth(auditor)), 404);
  });
});

describe('OIDC token exchange', () => {
  it('trades a valid CI token for a scoped signer token', async () => {
    const token = await ci.mint();
    const { result: res, events } = await capture(tb, () => exchange(tb, token));
    expect(res.status, res.text).toBe(200);
    expect(res.headers['cache-control']).toMatch(/no-store/);
    expect(res.body).toMatchObject({ token_type: 'Bearer', expires_in: 600, issued_token_type: 'urn:ietf:params:oauth:token-type:access_token' });
    expect(res.body.scope).toBe(`sign keys:release images:${IMAGES[0]}`);
    const claims = decodeJwt(res.body.access_token);
    expect(claims.sub).toBe('github:repo:org/app:ref:refs/tags/v1.2.3');
    expect((claims.kw as any).scope).toEqual({ keys: ['release'], images: IMAGES });
    expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual(['auth.token.issue:allow']);
    expect(events[0]).toMatchObject({ actorKind: 'ci', resourceName: 'github' });
    expect(events[0]!.details.claims).toMatchObject({ repository: 'org/app', ref: 'refs/tags/v1.2.3' });

    // the signer token works where a signer may go, and not beyond
    const signerToken = res.body.access_token as string;
    expect((await tb.request.get('/v1/signing-keys/release').set(auth(signerToken))).status).toBe(200);
    expect((await tb.request.get('/v1/signatures').set(auth(signerToken))).status).toBe(200);
    expectProblem(await tb.request.post('/v1/signing-keys').set(auth(signerToken)).send({ name: 'evil' }), 403);
    expectProblem(await tb.request.get('/v1/trusted-issuers').set(auth(signerToken)), 403);
    expectProblem(await tb.request.get('/v1/secrets').set(auth(signerToken)), 403);
    // an image outside the scope is refused before the registry is contacted (port 5999 has no registry)
    const outside = await tb.request.post('/v1/signatures').set(auth(signerToken)).send({ image: '127.0.0.1:5999/other/app:v1', key: 'release' });
    expectProblem(outside, 403, 'signing_not_allowed');
  });

  it('accepts JSON bodies and ES256 issuers given inline as a JWKS', async () => {
    await tb.request
      .post('/v1/trusted-issuers')
      .set(auth(tb.adminKey))
      .send({ name: 'gitlab', issuer: 'https://gitlab.example.test/', jwks: { keys: [ciEs.publicJwk] }, audience: 'kw', claims: { project_path: ['org/app', 'org/lib'] }, keys: ['*'], images: ['**'], tokenTtl: 120 })
      .expect(201);
    const token = await ciEs.mint({ project_path: 'org/lib' }, { iss: 'https://gitlab.example.test', aud: 'kw' });
    const res = await tb.request.post('/v1/auth/token').send({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: token });
    expect(res.status, res.text).toBe(200);
    expect(res.body.expires_in).toBe(120);
    const other = await ciEs.mint({ project_path: 'org/other' }, { iss: 'https://gitlab.example.test', aud: 'kw' });
    await expectExchangeFailure(other, 403, 'claims_mismatch');
  });

  it('rejects an expired CI token', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expectExchangeFailure(await ci.mint({}, { iat: now - 900, exp: now - 300 }), 401, 'subject_token_expired');
  });

  it('rejects a token for another audience', async () => {
    await expectExchangeFailure(await ci.mint({}, { aud: 'sigstore' }), 401, 'audience_mismatch');
  });

  it('rejects a token from an untrusted issuer', async () => {
    const { event } = await expectExchangeFailure(await ci.mint({}, { iss: 'https://evil.example.test' }), 401, 'untrusted_issuer');
    expect(event.reason).toMatch(/evil\.example\.test/);
  });

  it('rejects a token signed by a key the issuer does not publish (unknown kid, and known kid with a foreign key)', async () => {
    const { privateKey } = await generateKeyPair('RS256');
    await expectExchangeFailure(await ci.mint({}, { kid: 'rogue', key: privateKey }), 401, 'unknown_signing_key');
    // right kid, wrong key: the signature does not verify
    const res = await capture(tb, () => exchange(tb, ''));
    expect(res.result.status).toBe(400);
    const forged = await ci.mint({}, { key: privateKey });
    const { body } = await expectExchangeFailure(forged, 401, 'invalid_subject_token');
    expect(body.detail).toMatch(/signature/);
  });

  it('rejects claims that do not match the rules with 403', async () => {
    const { event } = await expectExchangeFailure(await ci.mint({ ref: 'refs/heads/main' }), 403, 'claims_mismatch');
    expect(event.reason).toMatch(/ref/);
    await expectExchangeFailure(await ci.mint({ repository: 'org/app-fork' }), 403, 'claims_mismatch');
    await expectExchangeFailure(await ci.mint({ ref: undefined }), 403, 'claims_mismatch');
  });

  it('rejects alg:none tokens', async () => {
    const now = Math.floor(Date.now() / 1000);
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const payload = { iss: 'https://ci.example.test', aud: 'keywarden', sub: 'x', repository: 'org/app', ref: 'refs/tags/v1', iat: now, exp: now + 300 };
    const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(payload)}.`;
    const { body } = await expectExchangeFailure(none, 401, 'algorithm_not_allowed');
    expect(body.status).toBe(401);
    const noneWithKid = `${b64({ alg: 'none', kid: ci.kid })}.${b64(payload)}.`;
    await expectExchangeFailure(noneWithKid, 401, 'algorithm_not_allowed');
  });

  it('rejects HS256 key confusion (HMAC with the public key as the secret)', async () => {
    const pem = crypto.createPublicKey({ key: ci.publicJwk as crypto.JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
    const secrets = [Buffer.from(pem), Buffer.from(JSON.stringify(ci.publicJwk)), Buffer.from(ci.publicJwk.n!, 'base64url')];
    for (const secret of secrets) {
      const token = await new SignJWT({ repository: 'org/app', ref: 'refs/tags/v1' })
        .setProtectedHeader({ alg: 'HS256', kid: ci.kid })
        .setIssuer('https://ci.example.test')
        .setAudience('keywarden')
        .setSubject('x')
        .setIssuedAt()
        .setExpirationTime('5m')
        .sign(new Uint8Array(secret));
      await expectExchangeFailure(token, 401, 'algorithm_not_allowed');
    }
  });

  it('rejects garbage and refuses unsupported subject token types', async () => {
    await expectExchangeFailure('not.a.jwt', 401, 'invalid_subject_token');
    const res = await tb.request
      .post('/v1/auth/token')
      .type('form')
      .send({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: await ci.mint(), subject_token_type: 'urn:ietf:params:oauth:token-type:saml2' });
    expectProblem(res, 400, 'invalid_request');
  });

  it('stops exchanging once the issuer is deleted', async () => {
    const token = await ci.mint();
    expect((await exchange(tb, token)).status).toBe(200);
    await tb.request.delete('/v1/trusted-issuers/github').set(auth(tb.adminKey)).expect(204);
    await expectExchangeFailure(token, 401, 'untrusted_issuer');
    expectProblem(await tb.request.delete('/v1/trusted-issuers/github').set(auth(tb.adminKey)), 404);
  });
});

describe('several trusted issuers with the same iss', () => {
  it('tries each of them: audiences and claim rules may differ per registration', async () => {
    const tb2 = await startTestBroker();
    try {
      await createKey(tb2, 'release');
      const base = { issuer: CI_ISSUER_URL, jwksUri: ci.jwksUri, keys: ['release'] };
      for (const [name, audience, repository] of [['aa-first', 'kw-a', 'org/a'], ['bb-second', 'kw-b', 'org/b'], ['cc-third', 'kw-b', 'org/c']]) {
        await tb2.request.post('/v1/trusted-issuers').set(auth(tb2.adminKey)).send({ ...base, name, audience, claims: { repository }, images: [`r.example/${name}/*`] }).expect(201);
      }
      for (const [aud, repository, expected] of [['kw-a', 'org/a', 'aa-first'], ['kw-b', 'org/b', 'bb-second'], ['kw-b', 'org/c', 'cc-third']]) {
        const res = await exchange(tb2, await ci.mint({ repository }, { aud }));
        expect(res.status, `${aud} ${repository}: ${res.text}`).toBe(200);
        expect(res.body.scope).toBe(`sign keys:release images:r.example/${expected}/*`);
      }
      const wrongAud = await exchange(tb2, await ci.mint({ repository: 'org/a' }, { aud: 'kw-z' }));
      expectProblem(wrongAud, 401, 'audience_mismatch');
      const noRule = await exchange(tb2, await ci.mint({ repository: 'org/c' }, { aud: 'kw-a' }));
      expectProblem(noRule, 403, 'claims_mismatch');
    } finally {
      await tb2.close();
    }
  });
});
