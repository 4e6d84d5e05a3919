import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

const GRANT = 'urn:keywarden:bootstrap';

describe('single-use bootstrap tokens', () => {
  let tb: TestBroker;
  let w: Record<string, string>;
  let now = Date.now();
  const clock = () => now;

  beforeAll(async () => {
    tb = await startTestBroker({ clock });
    w = auth(await tb.apiKey('writer'));
    markSensitive('bootstrap-secret-value');
    await tb.request.post('/v1/groups').set(w).send({ name: 'boot' });
    await tb.request.post('/v1/secrets').set(w).send({ name: 'boot.secret', value: 'bootstrap-secret-value', groups: ['boot'] });
    for (const name of ['boot-a', 'boot-b', 'boot-c', 'boot-d', 'boot-e']) {
      const res = await tb.request.post('/v1/clients').set(w).send({ name, groups: ['boot'] });
      expect(res.status).toBe(201);
      markSensitive(res.body.clientSecret);
    }
  });
  afterAll(async () => {
    await tb?.close();
  });

  async function create(client: string, body: Record<string, unknown> = {}) {
    const res = await tb.request.post(`/v1/clients/${client}/bootstrap-tokens`).set(w).send(body);
    expect(res.status, res.text).toBe(201);
    markSensitive(res.body.token);
    return res.body as { token: string; accessor: string; client: string; expiresAt: string };
  }
  const exchange = (token: string) => tb.request.post('/v1/auth/token').type('form').send({ grant_type: GRANT, bootstrap_token: token });
  const read = (token: string) => tb.request.get('/v1/client/secrets/boot.secret').set(auth(token));
  const listed = async (client: string) => {
    const res = await tb.request.get(`/v1/clients/${client}/bootstrap-tokens`).set(w);
    expect(res.status).toBe(200);
    return res.body.items as Array<Record<string, any>>;
  };

  it('creation: ttl defaults to 600 s, at most 3600 s; only writers may create', async () => {
    const t = await create('boot-a');
    expect(t.token).toMatch(/^kwb_/);
    expect(t.client).toBe('boot-a');
    expect(Date.parse(t.expiresAt)).toBe(now + 600_000);
    const long = await create('boot-a', { ttl: 3600 });
    expect(Date.parse(long.expiresAt)).toBe(now + 3_600_000);
    expectProblem(await tb.request.post('/v1/clients/boot-a/bootstrap-tokens').set(w).send({ ttl: 3601 }), 400, 'invalid_request');
    expectProblem(await tb.request.post('/v1/clients/boot-a/bootstrap-tokens').set(w).send({ ttl: 'forever' }), 400);
    expectProblem(await tb.request.post('/v1/clients/nobody/bootstrap-tokens').set(w).send({}), 404, 'not_found');
    expectProblem(await tb.request.post('/v1/clients/boot-a/bootstrap-tokens').set(auth(await tb.apiKey('auditor'))).send({}), 403);
    expectProblem(await tb.request.post('/v1/clients/boot-a/bootstrap-tokens').send({}), 401);
    // the listing shows accessors, never the tokens themselves
    const items = await listed('boot-a');
    expect(items.map((i) => i.accessor)).toEqual(expect.arrayContaining([t.accessor, long.accessor]));
    expect(JSON.stringify(items)).not.toContain(t.token);
    expect(items.every((i) => i.compromised === false && i.usedAt === null)).toBe(true);
  });

  it('exchanging once yields a working access token; a second use → 401 bootstrap_token_reused, compromised, first token revoked', async () => {
    const t = await create('boot-b');
    const first = await exchange(t.token);
    expect(first.status, first.text).toBe(200);
    expect(first.headers['cache-control']).toBe('no-store');
    expect(first.body.token_type).toBe('Bearer');
    const access = first.body.access_token as string;
    const ok = await read(access);
    expect(ok.status).toBe(200);
    expect(Buffer.from(ok.body.content, 'base64').toString()).toBe('bootstrap-secret-value');
    const before = (await listed('boot-b')).find((i) => i.accessor === t.accessor)!;
    expect(before.usedAt).not.toBeNull();
    expect(before.compromised).toBe(false);

    const second = await exchange(t.token);
    const body = expectProblem(second, 401, 'bootstrap_token_reused');
    expect(body.error).toBe('invalid_grant');
    expect(second.text).not.toContain(t.token);

    const after = (await listed('boot-b')).find((i) => i.accessor === t.accessor)!;
    expect(after.compromised).toBe(true);
    expect(after.compromisedAt).not.toBeNull();
    expectProblem(await read(access), 401, 'token_revoked');

    // the reuse is on the audit trail as an alert
    const events = await tb.broker.services.db('audit_events').where({ action: 'auth.bootstrap.reuse' });
    expect(events.length).toBeGreaterThanOrEqual(1);
    // a third presentation is still refused
    expectProblem(await exchange(t.token), 401, 'bootstrap_token_reused');
  });

  it('two concurrent exchanges of the same token: exactly one succeeds, and the token is treated as leaked', async () => {
    const t = await create('boot-c');
    const results = await Promise.all([exchange(t.token), exchange(t.token)]);
    const ok = results.filter((r) => r.status === 200);
    const failed = results.filter((r) => r.status !== 200);
    expect(ok).toHaveLength(1);
    expect(failed).toHaveLength(1);
    expectProblem(failed[0], 401, 'bootstrap_token_reused');
    const row = (await listed('boot-c')).find((i) => i.accessor === t.accessor)!;
    expect(row.compromised).toBe(true);
    // whoever won the race holds a credential derived from a leaked token: it must not work
    expectProblem(await read(ok[0].body.access_token), 401, 'token_revoked');
  });

  it('many concurrent exchanges of fresh tokens each win exactly once', async () => {
    const tokens = await Promise.all([create('boot-e'), create('boot-e'), create('boot-e')]);
    const results = await Promise.all(tokens.flatMap((t) => [exchange(t.token), exchange(t.token)]));
    for (let i = 0; i < tokens.length; i++) {
      const pair = [results[2 * i], results[2 * i + 1]];
      expect(pair.filter((r) => r.status === 200), pair.map((r) => r.text).join(' | ')).toHaveLength(1);
    }
  });

  it('an expired token → 401 bootstrap_token_expired, and stays unusable', async () => {
    const t = await create('boot-d', { ttl: 10 });
    now += 10_001;
    const res = await exchange(t.token);
    expect(expectProblem(res, 401, 'bootstrap_token_expired').error).toBe('invalid_grant');
    const row = (await listed('boot-d')).find((i) => i.accessor === t.accessor)!;
    expect(row.usedAt).toBeNull();
    expect(row.compromised).toBe(false);
    now -= 10_001;
    // just before expiry it would have worked: a fresh token at the edge
    const edge = await create('boot-d', { ttl: 10 });
    now += 9_999;
    const edgeRes = await exchange(edge.token);
    now -= 9_999;
    expect(edgeRes.status, edgeRes.text).toBe(200);
  });

  it('unknown or missing tokens → 401 / 400', async () => {
    expect(expectProblem(await exchange('kwb_not-a-real-token-at-all'), 401, 'invalid_bootstrap_token').error).toBe('invalid_grant');
    expectProblem(await tb.request.post('/v1/auth/token').type('form').send({ grant_type: GRANT }), 400, 'invalid_request');
  });

  it("a disabled client's bootstrap token cannot be exchanged", async () => {
    const t = await create('boot-a');
    expect((await tb.request.patch('/v1/clients/boot-a').set(w).send({ enabled: false })).status).toBe(200);
    expectProblem(await exchange(t.token), 401, 'client_disabled');
    expectProblem(await tb.request.post('/v1/clients/boot-a/bootstrap-tokens').set(w).send({}), 409, 'client_disabled');
    expect((await tb.request.patch('/v1/clients/boot-a').set(w).send({ enabled: true })).status).toBe(200);
  });
});
