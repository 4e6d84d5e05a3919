import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';
import { cachesCaughtUp } from '../support/cache-bound.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * The delivery path's caches (a client token's revocation state, what a client may read) hold
 * only under the cache epoch (src/db/cache-epoch.ts): every change reaches the instance that
 * made it at once and every other instance within CACHE_STALENESS_BOUND_MS. Each case warms both
 * instances' caches, changes something on A, and checks A at once and B once its epoch caught up
 * (on SQLite the two instances share a file; on PostgreSQL, a database).
 */
describe('delivery caches follow every change, on the instance that made it and on another', () => {
  let a: TestBroker;
  let b: TestBroker;
  let now = Date.now();
  let frozen = false;
  const clock = () => (frozen ? now : Date.now());
  let admin: Record<string, string>;

  beforeAll(async () => {
    const rootKey = crypto.randomBytes(32).toString('base64');
    a = await startTestBroker({ rootKey, clock });
    b = await startTestBroker({ db: a.db, rootKey, keepDatabase: true, clock });
    admin = auth(a.adminKey);
    for (const g of ['cache-g1', 'cache-g2']) expect((await a.request.post('/v1/groups').set(admin).send({ name: g })).status).toBe(201);
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  const read = (tb: TestBroker, token: string, name: string) => tb.request.get(`/v1/client/secrets/${name}`).set(auth(token));
  const valueOf = (res: { body: { content: string } }) => Buffer.from(res.body.content, 'base64').toString();
  async function secret(name: string, value: string, groups: string[]) {
    markSensitive(value);
    expect((await a.request.post('/v1/secrets').set(admin).send({ name, value, groups })).status).toBe(201);
  }
  async function warm(token: string, name: string, expected: string) {
    for (const tb of [a, b]) {
      const res = await read(tb, token, name);
      expect(res.status, res.text).toBe(200);
      expect(valueOf(res)).toBe(expected);
    }
  }
  /** A at once; B once its epoch has caught up. */
  async function onBoth(check: (tb: TestBroker) => Promise<unknown>) {
    await check(a);
    await cachesCaughtUp(b);
    await check(b);
  }

  it('a grant removed from the group: 404 everywhere', async () => {
    await secret('cache.grant', 'cache-grant-value', ['cache-g1']);
    const c = await a.client('cache-c1', ['cache-g1']);
    markSensitive(c.clientSecret, c.token);
    await warm(c.token, 'cache.grant', 'cache-grant-value');
    expect((await a.request.put('/v1/groups/cache-g1/secrets').set(admin).send({ remove: ['cache.grant'] })).status).toBe(200);
    await onBoth(async (tb) => expectProblem(await read(tb, c.token, 'cache.grant'), 404, 'not_found'));
    // and granted again: a cached refusal does not outlive the grant either
    expect((await a.request.put('/v1/groups/cache-g1/secrets').set(admin).send({ add: ['cache.grant'] })).status).toBe(200);
    await onBoth(async (tb) => expect((await read(tb, c.token, 'cache.grant')).status).toBe(200));
  });

  it('the client taken out of the group: 404 everywhere', async () => {
    await secret('cache.member', 'cache-member-value', ['cache-g2']);
    const c = await a.client('cache-c2', ['cache-g2']);
    markSensitive(c.clientSecret, c.token);
    await warm(c.token, 'cache.member', 'cache-member-value');
    expect((await a.request.put('/v1/clients/cache-c2/groups').set(admin).send({ remove: ['cache-g2'] })).status).toBe(200);
    await onBoth(async (tb) => expectProblem(await read(tb, c.token, 'cache.member'), 404, 'not_found'));
  });

  it('a secret deleted: 404 everywhere', async () => {
    await secret('cache.deleted', 'cache-deleted-value', ['cache-g1']);
    const c = await a.client('cache-c3', ['cache-g1']);
    markSensitive(c.clientSecret, c.token);
    await warm(c.token, 'cache.deleted', 'cache-deleted-value');
    expect((await a.request.delete('/v1/secrets/cache.deleted').set(admin)).status).toBe(204);
    await onBoth(async (tb) => expectProblem(await read(tb, c.token, 'cache.deleted'), 404, 'not_found'));
  });

  it('a new version, and a rollback: every instance serves the current one', async () => {
    await secret('cache.versions', 'cache-version-1', ['cache-g1']);
    const c = await a.client('cache-c4', ['cache-g1']);
    markSensitive(c.clientSecret, c.token, 'cache-version-2');
    await warm(c.token, 'cache.versions', 'cache-version-1');
    expect((await a.request.post('/v1/secrets/cache.versions/versions').set(admin).send({ value: 'cache-version-2' })).status).toBe(201);
    await onBoth(async (tb) => expect(valueOf(await read(tb, c.token, 'cache.versions'))).toBe('cache-version-2'));
    const rollback = await a.request.post('/v1/secrets/cache.versions/rollback').set(admin).send({ version: 1 });
    expect(rollback.status, rollback.text).toBe(200);
    await onBoth(async (tb) => expect(valueOf(await read(tb, c.token, 'cache.versions'))).toBe('cache-version-1'));
  });

  it('a client disabled, and its secret rotated: its tokens are refused everywhere', async () => {
    await secret('cache.client', 'cache-client-value', ['cache-g2']);
    const disabled = await a.client('cache-c5', ['cache-g2']);
    const rotated = await a.client('cache-c6', ['cache-g2']);
    markSensitive(disabled.clientSecret, disabled.token, rotated.clientSecret, rotated.token);
    await warm(disabled.token, 'cache.client', 'cache-client-value');
    await warm(rotated.token, 'cache.client', 'cache-client-value');
    expect((await a.request.patch('/v1/clients/cache-c5').set(admin).send({ enabled: false })).status).toBe(200);
    await onBoth(async (tb) => expectProblem(await read(tb, disabled.token, 'cache.client'), 401, 'client_disabled'));
    const res = await a.request.post('/v1/clients/cache-c6/secret').set(admin);
    expect(res.status).toBe(200);
    markSensitive(res.body.clientSecret);
    await onBoth(async (tb) => expectProblem(await read(tb, rotated.token, 'cache.client'), 401, 'token_revoked'));
  });

  it('a token expires on time on every instance, however warm its cached state', async () => {
    await secret('cache.expiry', 'cache-expiry-value', ['cache-g1']);
    const c = await a.client('cache-c7', ['cache-g1']);
    markSensitive(c.clientSecret);
    now = Date.now();
    frozen = true;
    try {
      const res = await a.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: c.clientId, client_secret: c.clientSecret, ttl: '60' });
      expect(res.status, res.text).toBe(200);
      const token = res.body.access_token as string;
      const ttlMs = (res.body.expires_in as number) * 1000;
      markSensitive(token);
      await warm(token, 'cache.expiry', 'cache-expiry-value');
      now += ttlMs + 1000;
      for (const tb of [a, b]) expectProblem(await read(tb, token, 'cache.expiry'), 401, 'token_expired');
    } finally {
      frozen = false;
    }
  });
});
