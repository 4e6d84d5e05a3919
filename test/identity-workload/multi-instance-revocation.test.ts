import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { cachesCaughtUp } from '../support/cache-bound.js';
import { jwtPayload } from './helpers.js';

describe('revocation is seen by a second broker instance on the same database', () => {
  let a: TestBroker;
  let b: TestBroker;
  let wa: Record<string, string>;

  beforeAll(async () => {
    const rootKey = crypto.randomBytes(32).toString('base64');
    a = await startTestBroker({ rootKey });
    b = await startTestBroker({ db: a.db, rootKey, keepDatabase: true });
    wa = auth(await a.apiKey('writer'));
    markSensitive('shared-instance-secret');
    expect((await a.request.post('/v1/groups').set(wa).send({ name: 'shared' })).status).toBe(201);
    expect((await a.request.post('/v1/secrets').set(wa).send({ name: 'shared.secret', value: 'shared-instance-secret', groups: ['shared'] })).status).toBe(201);
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  const readOn = (tb: TestBroker, token: string) => tb.request.get('/v1/client/secrets/shared.secret').set(auth(token));
  async function tokenFrom(tb: TestBroker, creds: { clientId: string; clientSecret: string }) {
    const res = await tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', ...{ client_id: creds.clientId, client_secret: creds.clientSecret } });
    expect(res.status, res.text).toBe(200);
    return res.body.access_token as string;
  }

  it('a client token issued by either instance works on both', async () => {
    const c = await a.client('svc-multi-1', ['shared']);
    markSensitive(c.clientSecret);
    const fromB = await tokenFrom(b, c);
    for (const t of [c.token, fromB]) {
      for (const tb of [a, b]) {
        const res = await readOn(tb, t);
        expect(res.status, res.text).toBe(200);
        expect(Buffer.from(res.body.content, 'base64').toString()).toBe('shared-instance-secret');
      }
    }
  });

  it('POST /v1/tokens/revoke {jti} on A → the token is 401 on A at once and on B within the cache bound; other tokens unaffected', async () => {
    const c = await a.client('svc-multi-2', ['shared']);
    markSensitive(c.clientSecret);
    const other = await tokenFrom(a, c);
    // warm both instances' caches first, so the revocation must reach them
    expect((await readOn(a, c.token)).status).toBe(200);
    expect((await readOn(b, c.token)).status).toBe(200);
    const jti = jwtPayload(c.token).jti;
    expectProblem(await a.request.post('/v1/tokens/revoke').set(wa).send({ jti }), 403);
    const revoked = await a.request.post('/v1/tokens/revoke').set(auth(a.adminKey)).send({ jti });
    expect(revoked.status, revoked.text).toBe(200);
    expect(revoked.body).toEqual({ jti, revoked: true });
    // A's own caches dropped the token when the revocation committed; B's within the cache bound
    expectProblem(await readOn(a, c.token), 401, 'token_revoked');
    await cachesCaughtUp(b);
    expectProblem(await readOn(b, c.token), 401, 'token_revoked');
    expect((await readOn(b, other)).status).toBe(200);
    // revoking twice is idempotent
    expect((await a.request.post('/v1/tokens/revoke').set(auth(a.adminKey)).send({ jti })).status).toBe(200);
    expectProblem(await a.request.post('/v1/tokens/revoke').set(auth(a.adminKey)).send({ jti: 'bad jti!' }), 400);
  });

  it('disabling the client on A → its tokens are 401 on B; re-enabling on B does not restore them on A', async () => {
    const c = await a.client('svc-multi-3', ['shared']);
    markSensitive(c.clientSecret);
    const t = await tokenFrom(b, c);
    expect((await readOn(b, t)).status).toBe(200);
    expect((await a.request.patch('/v1/clients/svc-multi-3').set(wa).send({ enabled: false })).status).toBe(200);
    await cachesCaughtUp(b);
    expectProblem(await readOn(b, t), 401, 'client_disabled');
    expectProblem(await readOn(b, c.token), 401, 'client_disabled');
    // and B will not issue new ones
    expectProblem(await b.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret }), 401, 'client_disabled');
    expect((await b.request.patch('/v1/clients/svc-multi-3').set(auth(b.adminKey)).send({ enabled: true })).status).toBe(200);
    await cachesCaughtUp(a);
    expectProblem(await readOn(a, t), 401, 'token_revoked');
    // a fresh token works again
    expect((await readOn(a, await tokenFrom(b, c))).status).toBe(200);
  });

  it('rotating the client secret on A revokes earlier tokens on B', async () => {
    const c = await a.client('svc-multi-4', ['shared']);
    markSensitive(c.clientSecret);
    expect((await readOn(b, c.token)).status).toBe(200);
    const rotated = await a.request.post('/v1/clients/svc-multi-4/secret').set(wa);
    expect(rotated.status).toBe(200);
    markSensitive(rotated.body.clientSecret);
    await cachesCaughtUp(b);
    expectProblem(await readOn(b, c.token), 401, 'token_revoked');
    const fresh = await tokenFrom(b, { clientId: c.clientId, clientSecret: rotated.body.clientSecret });
    expect((await readOn(a, fresh)).status).toBe(200);
  });

  it('deleting the client on A → its token is 401 on B, even after a client with the same name is created', async () => {
    const c = await a.client('svc-multi-5', ['shared']);
    markSensitive(c.clientSecret);
    expect((await readOn(b, c.token)).status).toBe(200);
    expect((await a.request.delete('/v1/clients/svc-multi-5').set(wa)).status).toBe(204);
    await cachesCaughtUp(b);
    expectProblem(await readOn(b, c.token), 401, 'client_deleted');
    const again = await b.client('svc-multi-5', ['shared']);
    markSensitive(again.clientSecret);
    expectProblem(await readOn(b, c.token), 401, 'client_deleted');
    await cachesCaughtUp(a);
    expectProblem(await readOn(a, c.token), 401, 'client_deleted');
    expect((await readOn(a, again.token)).status).toBe(200);
  });
});

describe('secret rotation revokes exactly the tokens issued before it, across instances with skewed clocks', () => {
  let a: TestBroker;
  let b: TestBroker;
  // A whole second plus 100 ms; instance B's clock lags A's by 700 ms
  let nowA = Math.floor(Date.now() / 1000) * 1000 + 100;
  const clockA = () => nowA;
  const clockB = () => nowA - 700;

  beforeAll(async () => {
    const rootKey = crypto.randomBytes(32).toString('base64');
    a = await startTestBroker({ rootKey, clock: clockA });
    b = await startTestBroker({ db: a.db, rootKey, keepDatabase: true, clock: clockB });
    await a.request.post('/v1/groups').set(auth(a.adminKey)).send({ name: 'shared' });
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  it('a token issued in the same second as, but before, a rotation is revoked; one issued after it (on a lagging instance) is not', async () => {
    const c = await a.client('svc-rot', ['shared']);
    markSensitive(c.clientSecret);
    const read = (tb: TestBroker, t: string) => tb.request.get('/v1/client/secrets').set(auth(t));
    // (A's tokens are only checked on A here: B's lagging clock would see them as not yet valid)
    expect((await read(a, c.token)).status).toBe(200);
    nowA += 300; // same wall-clock second on A
    const rotated = await a.request.post('/v1/clients/svc-rot/secret').set(auth(a.adminKey));
    expect(rotated.status).toBe(200);
    markSensitive(rotated.body.clientSecret);
    expectProblem(await read(a, c.token), 401, 'token_revoked');
    // B's clock is still in the previous second, yet its token is issued under the new secret
    nowA += 50;
    const fresh = await b.request
      .post('/v1/auth/token')
      .type('form')
      .send({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: rotated.body.clientSecret });
    expect(fresh.status, fresh.text).toBe(200);
    expect((await read(a, fresh.body.access_token)).status).toBe(200);
    expect((await read(b, fresh.body.access_token)).status).toBe(200);
  });
});
