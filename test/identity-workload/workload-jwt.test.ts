import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen, type RunningServer } from '../../src/http/server.js';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { freePort, jwtPayload } from './helpers.js';

const MAX_TTL = 600;

describe('workload JWTs verified through the published JWKS', () => {
  let tb: TestBroker;
  let server: RunningServer;
  let issuer: string;
  let w: Record<string, string>;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    // the issuer must be the real URL, so pick a free port first (retrying if another process grabs it)
    for (let attempt = 0; ; attempt++) {
      const port = await freePort();
      issuer = `http://127.0.0.1:${port}`;
      tb = await startTestBroker({ env: { KEYWARDEN_ISSUER: issuer, KEYWARDEN_WORKLOAD_JWT_MAX_TTL: String(MAX_TTL) } });
      try {
        server = await listen(tb.broker.app, { listen: { host: '127.0.0.1', port } });
        break;
      } catch (err: any) {
        await tb.close();
        if (err?.code !== 'EADDRINUSE' || attempt >= 4) throw err;
      }
    }
    expect(server.url).toBe(issuer);
    w = auth(await tb.apiKey('writer'));
    expect((await tb.request.post('/v1/groups').set(w).send({ name: 'payers', allowedAudiences: ['https://payments.example'] })).status).toBe(201);
    expect((await tb.request.post('/v1/groups').set(w).send({ name: 'plain' })).status).toBe(201);
    for (const [name, body] of [
      ['minter', { allowedAudiences: ['https://api.example'] }],
      ['grouped', { groups: ['payers'] }],
      ['nothing', { groups: ['plain'] }],
    ] as const) {
      const res = await tb.request.post('/v1/clients').set(w).send({ name, ...body });
      expect(res.status, res.text).toBe(201);
      markSensitive(res.body.clientSecret);
      const t = await tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: res.body.clientId, client_secret: res.body.clientSecret });
      expect(t.status).toBe(200);
      tokens[name] = t.body.access_token;
    }
  });
  afterAll(async () => {
    await server?.close();
    await tb?.close();
  });

  const mint = (client: string, body: Record<string, unknown>) =>
    fetch(`${issuer}/v1/client/credentials/jwt`, {
      method: 'POST',
      headers: { ...auth(tokens[client]), 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  async function mintOk(client: string, body: Record<string, unknown>) {
    const res = await mint(client, body);
    const json = await res.json();
    expect(res.status, JSON.stringify(json)).toBe(201);
    expect(res.headers.get('cache-control')).toBe('no-store');
    return json as { token: string; jti: string; audience: string; subject: string; expiresAt: string };
  }
  async function problemOf(res: Response, status: number, code: string) {
    expect(res.status).toBe(status);
    expect(res.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    const body: any = await res.json();
    expect(body.code).toBe(code);
    return body;
  }

  it('openid-configuration names the issuer and its jwks_uri, which serves the keys', async () => {
    const res = await fetch(`${issuer}/.well-known/openid-configuration`);
    expect(res.status).toBe(200);
    const doc: any = await res.json();
    expect(doc.issuer).toBe(issuer);
    expect(doc.jwks_uri).toBe(`${issuer}/.well-known/jwks.json`);
    expect(doc.id_token_signing_alg_values_supported).toContain('ES256');
    const jwks: any = await (await fetch(doc.jwks_uri)).json();
    expect(jwks.keys.length).toBeGreaterThanOrEqual(1);
    for (const k of jwks.keys) {
      expect(k).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
      expect(k.d).toBeUndefined();
    }
  });

  it('mints a JWT that verifies against the remote JWKS with the right sub, aud, exp and a unique jti', async () => {
    const JWKS = createRemoteJWKSet(new URL(`${issuer}/.well-known/jwks.json`));
    const before = Math.floor(Date.now() / 1000);
    const a = await mintOk('minter', { audience: 'https://api.example', ttl: 120 });
    const b = await mintOk('minter', { audience: 'https://api.example' });
    const spiffe = `spiffe://${tb.config.trustDomain}/client/minter`;
    expect(spiffe).toBe('spiffe://keywarden.local/client/minter');
    for (const [minted, ttl] of [[a, 120], [b, 300]] as const) {
      const { payload, protectedHeader } = await jwtVerify(minted.token, JWKS, { issuer, audience: 'https://api.example' });
      expect(protectedHeader.alg).toBe('ES256');
      expect(protectedHeader.typ).toBe('JWT');
      expect(payload.sub).toBe(spiffe);
      expect(minted.subject).toBe(spiffe);
      expect(payload.aud).toBe('https://api.example');
      expect(payload.iss).toBe(issuer);
      expect(payload.jti).toBe(minted.jti);
      expect(payload.exp! - payload.iat!).toBe(ttl);
      expect(payload.exp!).toBeLessThanOrEqual(Math.floor(Date.now() / 1000) + MAX_TTL);
      expect(payload.exp!).toBeGreaterThanOrEqual(before + ttl);
      expect(Date.parse(minted.expiresAt)).toBe(payload.exp! * 1000);
      // it carries no broker-private access-token claims
      expect(payload.kw).toBeUndefined();
    }
    expect(a.jti).not.toBe(b.jti);
    // a different audience in verification fails
    await expect(jwtVerify(a.token, JWKS, { issuer, audience: 'https://other.example' })).rejects.toThrow();
  });

  it('a workload JWT is not an access token for the broker', async () => {
    const minted = await mintOk('minter', { audience: 'https://api.example' });
    const res = await tb.request.get('/v1/client/secrets').set(auth(minted.token));
    expectProblem(res, 401, 'invalid_token');
    // and the broker's own audience cannot be minted
    await problemOf(await mint('minter', { audience: `${issuer}/v1` }), 403, 'audience_not_allowed');
  });

  it('audience not allowed → 403 audience_not_allowed; allowed after PATCH allowedAudiences', async () => {
    await problemOf(await mint('minter', { audience: 'https://other.example' }), 403, 'audience_not_allowed');
    await problemOf(await mint('nothing', { audience: 'https://api.example' }), 403, 'audience_not_allowed');
    const patched = await tb.request.patch('/v1/clients/minter').set(w).send({ allowedAudiences: ['https://api.example', 'https://other.example'] });
    expect(patched.status).toBe(200);
    expect(patched.body.allowedAudiences).toEqual(['https://api.example', 'https://other.example']);
    const JWKS = createRemoteJWKSet(new URL(`${issuer}/.well-known/jwks.json`));
    const minted = await mintOk('minter', { audience: 'https://other.example' });
    expect((await jwtVerify(minted.token, JWKS, { issuer, audience: 'https://other.example' })).payload.sub).toBe('spiffe://keywarden.local/client/minter');
    // taking it away again applies at once
    expect((await tb.request.patch('/v1/clients/minter').set(w).send({ allowedAudiences: ['https://api.example'] })).status).toBe(200);
    await problemOf(await mint('minter', { audience: 'https://other.example' }), 403, 'audience_not_allowed');
  });

  it("a group's allowedAudiences apply to its members only", async () => {
    const JWKS = createRemoteJWKSet(new URL(`${issuer}/.well-known/jwks.json`));
    const minted = await mintOk('grouped', { audience: 'https://payments.example', ttl: 60 });
    const { payload } = await jwtVerify(minted.token, JWKS, { issuer, audience: 'https://payments.example' });
    expect(payload.sub).toBe('spiffe://keywarden.local/client/grouped');
    await problemOf(await mint('minter', { audience: 'https://payments.example' }), 403, 'audience_not_allowed');
    await problemOf(await mint('grouped', { audience: 'https://api.example' }), 403, 'audience_not_allowed');
    // leaving the group removes the audience
    expect((await tb.request.put('/v1/clients/grouped/groups').set(w).send({ remove: ['payers'] })).status).toBe(200);
    await problemOf(await mint('grouped', { audience: 'https://payments.example' }), 403, 'audience_not_allowed');
    expect((await tb.request.put('/v1/clients/grouped/groups').set(w).send({ add: ['payers'] })).status).toBe(200);
  });

  it('ttl above the configured maximum → 400; malformed bodies → 400; operators cannot mint', async () => {
    await problemOf(await mint('minter', { audience: 'https://api.example', ttl: MAX_TTL + 1 }), 400, 'invalid_request');
    await problemOf(await mint('minter', { audience: 'https://api.example', ttl: 86_401 }), 400, 'invalid_request');
    await problemOf(await mint('minter', { audience: 'https://api.example', ttl: 5 }), 400, 'invalid_request');
    await problemOf(await mint('minter', { ttl: 60 }), 400, 'invalid_request');
    await problemOf(await mint('minter', { audience: 'https://api.example', extra: true }), 400, 'invalid_request');
    const atMax = await mintOk('minter', { audience: 'https://api.example', ttl: MAX_TTL });
    const p = jwtPayload(atMax.token);
    expect(p.exp - p.iat).toBe(MAX_TTL);
    const asOperator = await tb.request.post('/v1/client/credentials/jwt').set(w).send({ audience: 'https://api.example' });
    expectProblem(asOperator, 403);
    expectProblem(await tb.request.post('/v1/client/credentials/jwt').send({ audience: 'https://api.example' }), 401);
  });

  it('key rotation: old and new tokens both verify via the JWKS; pre-rotation access tokens keep working', async () => {
    const t1 = await mintOk('minter', { audience: 'https://api.example' });
    const kid1 = decodeProtectedHeader(t1.token).kid;
    const accessKid = decodeProtectedHeader(tokens.minter).kid;
    expect(accessKid).toBe(kid1);

    const admin = auth(tb.adminKey);
    expectProblem(await tb.request.post('/v1/jwt-keys/rotate').set(w), 403);
    const rotated = await tb.request.post('/v1/jwt-keys/rotate').set(admin);
    expect(rotated.status, rotated.text).toBe(200);
    expect(rotated.body.kid).not.toBe(kid1);
    expect(rotated.body.retired).toContain(kid1);

    const t2 = await mintOk('minter', { audience: 'https://api.example' });
    const kid2 = decodeProtectedHeader(t2.token).kid;
    expect(kid2).toBe(rotated.body.kid);
    expect(kid2).not.toBe(kid1);

    const published: any = await (await fetch(`${issuer}/.well-known/jwks.json`)).json();
    expect(published.keys.map((k: any) => k.kid)).toEqual(expect.arrayContaining([kid1, kid2]));

    const JWKS = createRemoteJWKSet(new URL(`${issuer}/.well-known/jwks.json`));
    for (const t of [t1, t2]) {
      const { payload } = await jwtVerify(t.token, JWKS, { issuer, audience: 'https://api.example' });
      expect(payload.jti).toBe(t.jti);
    }
    // the access token signed with the retired key still authenticates on broker routes
    const res = await tb.request.get('/v1/client/secrets').set(auth(tokens.minter));
    expect(res.status, res.text).toBe(200);
    // and new access tokens are signed with the new key
    const fresh = await tb.client('after-rotation');
    expect(decodeProtectedHeader(fresh.token).kid).toBe(kid2);
    expect((await tb.request.get('/v1/client/secrets').set(auth(fresh.token))).status).toBe(200);
  });
});
