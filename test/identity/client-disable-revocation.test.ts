import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';
import { cachesCaughtUp } from '../support/cache-bound.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * Disabling a client revokes its access tokens (openapi.yaml, PATCH /v1/clients/{name}); enabling
 * it again must not bring them back. The revocation lives in the database (the client's token
 * generation), so it holds on every instance sharing it.
 */
describe('disable then enable a client: its earlier tokens stay revoked', () => {
  let a: TestBroker;
  let b: TestBroker;
  // both instances share one clock that tests can hold still, to cover changes in one millisecond
  let now = Date.now();
  let frozen = false;
  const clock = () => (frozen ? now : Date.now());

  beforeAll(async () => {
    const rootKey = crypto.randomBytes(32).toString('base64');
    a = await startTestBroker({ rootKey, clock });
    b = await startTestBroker({ db: a.db, rootKey, keepDatabase: true, clock });
    const admin = auth(a.adminKey);
    markSensitive('disable-revocation-secret');
    expect((await a.request.post('/v1/groups').set(admin).send({ name: 'dr' })).status).toBe(201);
    expect((await a.request.post('/v1/secrets').set(admin).send({ name: 'dr.secret', value: 'disable-revocation-secret', groups: ['dr'] })).status).toBe(201);
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  const read = (tb: TestBroker, token: string) => tb.request.get('/v1/client/secrets/dr.secret').set(auth(token));
  const setEnabled = (tb: TestBroker, name: string, enabled: boolean) => tb.request.patch(`/v1/clients/${name}`).set(auth(tb.adminKey)).send({ enabled });
  async function login(tb: TestBroker, c: { clientId: string; clientSecret: string }) {
    const res = await tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret });
    expect(res.status, res.text).toBe(200);
    return res.body.access_token as string;
  }

  it('token T from A; disable and enable on B; T is 401 on both, a new token works', async () => {
    const c = await a.client('dr-client-1', ['dr']);
    markSensitive(c.clientSecret, c.token);
    // warm both instances' signature caches: revocation must come from the database
    expect((await read(a, c.token)).status).toBe(200);
    expect((await read(b, c.token)).status).toBe(200);

    expect((await setEnabled(b, 'dr-client-1', false)).status).toBe(200);
    // B committed the change: its own caches are current at once, A's within the cache bound
    await cachesCaughtUp(a);
    expectProblem(await read(a, c.token), 401, 'client_disabled');
    expect((await setEnabled(b, 'dr-client-1', true)).status).toBe(200);

    await cachesCaughtUp(a);
    expectProblem(await read(a, c.token), 401, 'token_revoked');
    expectProblem(await read(b, c.token), 401, 'token_revoked');
    const fresh = await login(a, c);
    markSensitive(fresh);
    for (const tb of [a, b]) expect((await read(tb, fresh)).status).toBe(200);
  });

  it('holds when creation, the token, the disable and the enable fall in the same millisecond', async () => {
    frozen = true;
    now = Date.now();
    try {
      const c = await a.client('dr-client-2', ['dr']);
      markSensitive(c.clientSecret, c.token);
      const t = await login(b, c);
      markSensitive(t);
      expect((await read(a, t)).status).toBe(200);
      expect((await setEnabled(a, 'dr-client-2', false)).status).toBe(200);
      expect((await setEnabled(a, 'dr-client-2', true)).status).toBe(200);
      await cachesCaughtUp(b);
      expectProblem(await read(b, t), 401, 'token_revoked');
    } finally {
      frozen = false;
    }
  });

  it('other changes to the client (labels, description) leave its tokens valid', async () => {
    const c = await a.client('dr-client-3', ['dr']);
    markSensitive(c.clientSecret, c.token);
    const patched = await a.request.patch('/v1/clients/dr-client-3').set(auth(a.adminKey)).send({ description: 'still valid', enabled: true });
    expect(patched.status, patched.text).toBe(200);
    expect((await read(b, c.token)).status).toBe(200);
  });
});
