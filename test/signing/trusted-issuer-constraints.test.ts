/**
 * A trusted CI issuer must say which CI subjects (repository, project, owner) may exchange
 * tokens, and removing or disabling it must take back the signer tokens it handed out, on every
 * broker instance sharing the database.
 */
import crypto from 'node:crypto';
import { decodeJwt, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { CI_AUDIENCE, CI_ISSUER, auth, capture, createKey, exchange, expectProblem, startCiIssuer, type CiIssuer } from './helpers.js';

const IMAGES = ['127.0.0.1:5999/org/*'];

let ci: CiIssuer;
beforeAll(async () => {
  ci = await startCiIssuer('RS256');
});
afterAll(async () => {
  await ci?.close();
});

function issuerBody(name: string, claims?: Record<string, unknown>) {
  return { name, issuer: CI_ISSUER, jwksUri: ci.jwksUri, audience: CI_AUDIENCE, keys: ['release'], images: IMAGES, ...(claims === undefined ? {} : { claims }) };
}

/** A row as an older broker (or someone with database access) wrote it: no API validation. */
async function insertRow(tb: TestBroker, name: string, claimRules: string) {
  const now = Date.now();
  await tb.broker.services.db('trusted_issuers').insert({
    name,
    issuer: CI_ISSUER,
    jwks_uri: ci.jwksUri,
    jwks: null,
    audience: CI_AUDIENCE,
    claim_rules: claimRules,
    allowed_keys: JSON.stringify(['release']),
    allowed_images: JSON.stringify(IMAGES),
    token_ttl: 600,
    created_by: 'admin:legacy',
    created_at: now,
    updated_at: now,
  });
}

/** A token from a repository nobody registered: what an attacker on the same CI platform holds. */
const foreignToken = () => ci.mint({ repository: 'attacker/evil', repository_owner: 'attacker' });

async function exchangeOk(tb: TestBroker, token?: string) {
  const res = await exchange(tb, token ?? (await ci.mint({ repository_owner: 'org' })));
  expect(res.status, res.text).toBe(200);
  return res.body.access_token as string;
}

/** Any route a signer may call; its status says whether the signer token is still accepted. */
const useSignerToken = (tb: TestBroker, token: string) => tb.request.get('/v1/signing-keys/release').set(auth(token));

describe('creating and updating a trusted issuer requires a subject-identifying claim rule', () => {
  let tb: TestBroker;
  beforeAll(async () => {
    tb = await startTestBroker();
    await createKey(tb, 'release');
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('refuses rules that any repository on the platform satisfies, with a 400 that explains why', async () => {
    const unconstrained: Array<Record<string, unknown> | undefined> = [
      undefined,
      {},
      // the attack: the tag rule is satisfied by every repository that pushes such a tag
      { ref: 'refs/tags/v*' },
      { repository: '*' },
      { repository: '**' },
      { repository: '*/*' },
      { repository: '*/app' },
      { repository: '?rg/app' },
      { repository: ['org/app', '*'] },
      { repository_owner: 'org*' },
      { sub: 'repo:*' },
      { project_path: '*', ref: 'refs/heads/main' },
      { workflow: 'release', environment: 'production' },
    ];
    for (const [i, claims] of unconstrained.entries()) {
      const { result: res, events } = await capture(tb, () => tb.request.post('/v1/trusted-issuers').set(auth(tb.adminKey)).send(issuerBody(`loose-${i}`, claims)));
      const body = expectProblem(res, 400, 'unconstrained_issuer');
      expect(body.detail, JSON.stringify(claims)).toMatch(/any repository or project on the CI platform/);
      expect(body.detail).toMatch(/repository, repository_id/);
      expect(body.errors).toEqual([{ path: 'claims', message: 'no rule identifies a subject' }]);
      expect(events.filter((e) => e.action === 'trustedissuer.create')).toEqual([]);
    }
    expect((await tb.request.get('/v1/trusted-issuers').set(auth(tb.adminKey))).body.items).toEqual([]);
    // so an attacker's token from another repository has nothing to be exchanged against
    expectProblem(await exchange(tb, await foreignToken()), 401, 'untrusted_issuer');
  });

  it('accepts rules that pin the owner or the exact subject', async () => {
    const constrained = [
      { repository: 'org/app' },
      { repository: 'org/*', ref: 'refs/tags/v*' },
      { repository: ['org/app', 'org/lib'] },
      { repository_owner: 'org' },
      { repository_id: '123456' },
      { sub: 'repo:org/app:ref:refs/tags/*' },
      { project_path: 'group/sub/*' },
      { workflow_ref: 'org/app/.github/workflows/release.yml@refs/tags/*' },
    ];
    for (const [i, claims] of constrained.entries()) {
      const res = await tb.request.post('/v1/trusted-issuers').set(auth(tb.adminKey)).send(issuerBody(`tight-${i}`, claims));
      expect(res.status, `${JSON.stringify(claims)}: ${res.text}`).toBe(201);
      expect(res.body).toMatchObject({ claims, enabled: true, unconstrained: false, problems: [] });
      expect(res.body.tokenGeneration).toBeUndefined();
    }
  });

  it('refuses an update that would leave the issuer unconstrained', async () => {
    await tb.request.post('/v1/trusted-issuers').set(auth(tb.adminKey)).send(issuerBody('upd', { repository: 'org/app' })).expect(201);
    expectProblem(await tb.request.patch('/v1/trusted-issuers/upd').set(auth(tb.adminKey)).send({ claims: { ref: 'refs/tags/*' } }), 400, 'unconstrained_issuer');
    expectProblem(await tb.request.patch('/v1/trusted-issuers/upd').set(auth(tb.adminKey)).send({ claims: { repository: '*' }, enabled: false }), 400, 'unconstrained_issuer');
    expectProblem(await tb.request.patch('/v1/trusted-issuers/upd').set(auth(tb.adminKey)).send({}), 400, 'invalid_request');
    expectProblem(await tb.request.patch('/v1/trusted-issuers/upd').set(auth(tb.adminKey)).send({ jwksUri: ci.jwksUri, jwks: { keys: [ci.publicJwk] } }), 400, 'invalid_request');
    expectProblem(await tb.request.patch('/v1/trusted-issuers/upd').set(auth(tb.adminKey)).send({ name: 'renamed' }), 400, 'invalid_request');
    expectProblem(await tb.request.patch('/v1/trusted-issuers/nope').set(auth(tb.adminKey)).send({ enabled: false }), 404);
    // admin only
    const auditor = await tb.apiKey('auditor');
    expectProblem(await tb.request.patch('/v1/trusted-issuers/upd').set(auth(auditor)).send({ enabled: false }), 403);
    const res = await tb.request.patch('/v1/trusted-issuers/upd').set(auth(tb.adminKey)).send({ claims: { repository: 'org/lib' }, jwks: { keys: [ci.publicJwk] } });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({ claims: { repository: 'org/lib' }, jwks: { keys: [ci.publicJwk] }, enabled: true, unconstrained: false });
    expect(res.body.jwksUri).toBeUndefined();
  });
});

describe('issuers stored without a subject-identifying rule', () => {
  let tb: TestBroker;
  beforeAll(async () => {
    tb = await startTestBroker();
    await createKey(tb, 'release');
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('are flagged when read and refused at exchange with an audited denial, until they are fixed', async () => {
    await insertRow(tb, 'legacy', '{}');
    const auditor = await tb.apiKey('auditor');
    const list = await tb.request.get('/v1/trusted-issuers').set(auth(auditor));
    expect(list.status).toBe(200);
    expect(list.body.items).toHaveLength(1);
    expect(list.body.items[0]).toMatchObject({ name: 'legacy', claims: {}, enabled: true, unconstrained: true });
    expect(list.body.items[0].problems.join(' ')).toMatch(/token exchange is refused until a subject-identifying claim rule is added/);
    const one = await tb.request.get('/v1/trusted-issuers/legacy').set(auth(auditor));
    expect(one.body).toMatchObject({ name: 'legacy', unconstrained: true });

    // the attack the old code allowed: any repository's token became a signer token
    const attacker = await foreignToken();
    const { result: res, events } = await capture(tb, () => exchange(tb, attacker));
    const body = expectProblem(res, 403, 'issuer_unconstrained');
    expect(body.error).toBe('access_denied');
    expect(body.access_token).toBeUndefined();
    expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual(['auth.failure:deny']);
    expect(events[0]!.reason).toMatch(/trusted issuer legacy has no claim rule that identifies the CI subject/);
    expect(events[0]!.details).toMatchObject({ issuer: 'legacy', grantType: 'urn:ietf:params:oauth:grant-type:token-exchange' });
    expect(JSON.stringify(events[0])).not.toContain(attacker);

    // a forged token learns nothing about the registration: it fails verification as before
    const forged = await ci.mint({}, { key: (await generateKeyPair('RS256')).privateKey });
    expectProblem(await exchange(tb, forged), 401, 'invalid_subject_token');

    // enabling alone does not fix it; disabling it as it is is allowed
    expectProblem(await tb.request.patch('/v1/trusted-issuers/legacy').set(auth(tb.adminKey)).send({ keys: ['*'] }), 400, 'unconstrained_issuer');
    const disabled = await tb.request.patch('/v1/trusted-issuers/legacy').set(auth(tb.adminKey)).send({ enabled: false });
    expect(disabled.status, disabled.text).toBe(200);
    expect(disabled.body).toMatchObject({ enabled: false, unconstrained: true });
    expectProblem(await tb.request.patch('/v1/trusted-issuers/legacy').set(auth(tb.adminKey)).send({ enabled: true }), 400, 'unconstrained_issuer');

    const fixed = await tb.request.patch('/v1/trusted-issuers/legacy').set(auth(tb.adminKey)).send({ claims: { repository_owner: 'org' }, enabled: true });
    expect(fixed.status, fixed.text).toBe(200);
    expect(fixed.body).toMatchObject({ claims: { repository_owner: 'org' }, enabled: true, unconstrained: false, problems: [] });
    expectProblem(await exchange(tb, await foreignToken()), 403, 'claims_mismatch');
    const signer = await exchangeOk(tb);
    expect((await useSignerToken(tb, signer)).status).toBe(200);
  });

  it('rules that only name non-identifying claims, or unreadable rules, are flagged the same way', async () => {
    await insertRow(tb, 'legacy-tags', JSON.stringify({ ref: 'refs/tags/*' }));
    await insertRow(tb, 'legacy-garbage', '{not json');
    const items = (await tb.request.get('/v1/trusted-issuers').set(auth(tb.adminKey))).body.items as any[];
    expect(items.find((i) => i.name === 'legacy-tags')).toMatchObject({ unconstrained: true, claims: { ref: 'refs/tags/*' } });
    const garbage = items.find((i) => i.name === 'legacy-garbage');
    expect(garbage).toMatchObject({ unconstrained: true, claims: {} });
    expect(garbage.problems.join(' ')).toMatch(/not valid/);
    // 'legacy' (fixed above) is tried first and does not match; then the unconstrained ones refuse
    const res = await exchange(tb, await foreignToken());
    expectProblem(res, 403, 'issuer_unconstrained');
    expect(res.body.detail).toMatch(/legacy-garbage|legacy-tags/);
  });

  it('a row edited in the database after tokens were issued refuses exchange and those tokens', async () => {
    const tb2 = await startTestBroker();
    try {
      await createKey(tb2, 'release');
      await tb2.request.post('/v1/trusted-issuers').set(auth(tb2.adminKey)).send(issuerBody('edited', { repository: 'org/app' })).expect(201);
      const signer = await exchangeOk(tb2, await ci.mint());
      expect((await useSignerToken(tb2, signer)).status).toBe(200);
      await tb2.broker.services.db('trusted_issuers').where({ name: 'edited' }).update({ claim_rules: JSON.stringify({ repository: '*' }) });
      expect((await tb2.request.get('/v1/trusted-issuers/edited').set(auth(tb2.adminKey))).body.unconstrained).toBe(true);
      const { result: refused, events } = await capture(tb2, () => useSignerToken(tb2, signer));
      expectProblem(refused, 401, 'issuer_unconstrained');
      expect(events.map((e) => `${e.action}:${e.outcome}:${e.reason}`)).toEqual(['auth.failure:deny:issuer_unconstrained']);
      expectProblem(await exchange(tb2, await foreignToken()), 403, 'issuer_unconstrained');
    } finally {
      await tb2.close();
    }
  });
});

describe('deleting, disabling or changing a trusted issuer revokes its signer tokens on every instance', () => {
  let a: TestBroker;
  let b: TestBroker;

  beforeAll(async () => {
    const rootKey = crypto.randomBytes(32).toString('base64');
    a = await startTestBroker({ rootKey });
    b = await startTestBroker({ db: a.db, rootKey, keepDatabase: true });
    await createKey(a, 'release');
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  const register = (tb: TestBroker, name: string) =>
    tb.request.post('/v1/trusted-issuers').set(auth(tb.adminKey)).send(issuerBody(name, { repository_owner: 'org' })).expect(201);

  it('delete on A → the signer token is 401 on A and B at once, and stays so when the name is registered again', async () => {
    await register(a, 'gh-del');
    const signer = await exchangeOk(a);
    const other = await exchangeOk(b);
    // warm both instances' signature caches, so the revocation must come from the database
    for (const tb of [a, b]) for (const t of [signer, other]) expect((await useSignerToken(tb, t)).status).toBe(200);

    const { result: deleted, events } = await capture(a, () => a.request.delete('/v1/trusted-issuers/gh-del').set(auth(a.adminKey)));
    expect(deleted.status).toBe(204);
    for (const tb of [b, a]) {
      expectProblem(await useSignerToken(tb, signer), 401, 'issuer_deleted');
      expectProblem(await useSignerToken(tb, other), 401, 'issuer_deleted');
    }
    expect(events.find((e) => e.action === 'trustedissuer.delete')?.details).toMatchObject({ signerTokensRevoked: true });
    const { result: refused, events: denied } = await capture(b, () => b.request.post('/v1/signatures').set(auth(signer)).send({ image: `${IMAGES[0]!.replace('*', 'app')}:v1`, key: 'release' }));
    expectProblem(refused, 401, 'issuer_deleted');
    expect(denied.map((e) => `${e.action}:${e.outcome}:${e.reason}`)).toEqual(['auth.failure:deny:issuer_deleted']);

    // the same name trusted again on B is a new issuer: the old tokens stay revoked
    await register(b, 'gh-del');
    for (const tb of [a, b]) expectProblem(await useSignerToken(tb, signer), 401, 'token_revoked');
    const fresh = await exchangeOk(a);
    for (const tb of [a, b]) expect((await useSignerToken(tb, fresh)).status).toBe(200);
  });

  it('disable on A → the signer token is 401 on B at once, no new exchange; re-enabling on B does not bring it back', async () => {
    await a.request.delete('/v1/trusted-issuers/gh-del').set(auth(a.adminKey)).expect(204);
    await register(a, 'gh-dis');
    const mine = await exchangeOk(b);
    expect((decodeJwt(mine).kw as any).n).toBe('gh-dis');
    expect((await useSignerToken(b, mine)).status).toBe(200);

    const { result: disabled, events } = await capture(a, () => a.request.patch('/v1/trusted-issuers/gh-dis').set(auth(a.adminKey)).send({ enabled: false }));
    expect(disabled.status, disabled.text).toBe(200);
    expect(disabled.body).toMatchObject({ name: 'gh-dis', enabled: false, unconstrained: false });
    expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual(['trustedissuer.disable:allow']);
    for (const tb of [b, a]) expectProblem(await useSignerToken(tb, mine), 401, 'issuer_disabled');
    expect((await b.request.get('/v1/trusted-issuers/gh-dis').set(auth(b.adminKey))).body.enabled).toBe(false);

    // a disabled issuer exchanges nothing; to the caller it looks untrusted, the audit says why
    const { result: noExchange, events: denied } = await capture(b, async () => exchange(b, await ci.mint({ repository_owner: 'org' })));
    expectProblem(noExchange, 401, 'untrusted_issuer');
    expect(noExchange.text).not.toMatch(/disabled/);
    expect(denied[0]!.details).toMatchObject({ disabledRegistrations: ['gh-dis'] });

    const enabled = await b.request.patch('/v1/trusted-issuers/gh-dis').set(auth(b.adminKey)).send({ enabled: true });
    expect(enabled.status, enabled.text).toBe(200);
    for (const tb of [a, b]) expectProblem(await useSignerToken(tb, mine), 401, 'token_revoked');
    const fresh = await exchangeOk(a);
    for (const tb of [a, b]) expect((await useSignerToken(tb, fresh)).status).toBe(200);
  });

  it('any other change (narrower images) on B → earlier signer tokens are 401 on A', async () => {
    const signer = await exchangeOk(a);
    expect((await useSignerToken(a, signer)).status).toBe(200);
    const changed = await b.request.patch('/v1/trusted-issuers/gh-dis').set(auth(b.adminKey)).send({ images: ['127.0.0.1:5999/org/app'] });
    expect(changed.status, changed.text).toBe(200);
    expectProblem(await useSignerToken(a, signer), 401, 'token_revoked');
    const fresh = await exchangeOk(a);
    expect((decodeJwt(fresh).kw as any).scope.images).toEqual(['127.0.0.1:5999/org/app']);
    expect((await useSignerToken(b, fresh)).status).toBe(200);
  });

  it('a signer token from a row written before generations existed works until that issuer changes', async () => {
    await a.request.delete('/v1/trusted-issuers/gh-dis').set(auth(a.adminKey)).expect(204);
    await insertRow(a, 'gh-old', JSON.stringify({ repository: 'org/app' }));
    const signer = await exchangeOk(b, await ci.mint());
    expect((decodeJwt(signer).kw as any).g).toBeUndefined();
    expect((await useSignerToken(a, signer)).status).toBe(200);
    await b.request.patch('/v1/trusted-issuers/gh-old').set(auth(b.adminKey)).send({ tokenTtl: 300 }).expect(200);
    expectProblem(await useSignerToken(a, signer), 401, 'token_revoked');
  });
});
