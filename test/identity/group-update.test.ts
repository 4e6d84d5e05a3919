/**
 * PATCH /v1/groups/{name}: description, labels and allowedAudiences change in place (grants and
 * members stay), with an ETag on every group answer and `If-Match` as a compare-and-set in SQL,
 * also between two broker instances on one database.
 */
import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capture } from '../support/audit-events.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';

const ETAG = /^"\d+"$/;

describe('PATCH /v1/groups/{name}', () => {
  let a: TestBroker;
  let b: TestBroker;
  let w: Record<string, string>;
  let memberToken: string;

  beforeAll(async () => {
    const rootKey = crypto.randomBytes(32).toString('base64');
    a = await startTestBroker({ rootKey });
    // a second instance on the same database (SQLite file or PostgreSQL)
    b = await startTestBroker({ db: a.db, rootKey, keepDatabase: true });
    w = auth(await a.apiKey('writer'));
    markSensitive('group-update-secret-value');
    const created = await a.request.post('/v1/groups').set(w).send({ name: 'payers', description: 'before', labels: { team: 'a' }, allowedAudiences: ['https://one.example'] });
    expect(created.status, created.text).toBe(201);
    expect(created.headers.etag).toMatch(ETAG);
    expect((await a.request.post('/v1/secrets').set(w).send({ name: 'pay.key', value: 'group-update-secret-value', groups: ['payers'] })).status).toBe(201);
    const member = await a.client('pay-svc', ['payers']);
    markSensitive(member.clientSecret);
    memberToken = member.token;
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  const get = (tb: TestBroker, name = 'payers') => tb.request.get(`/v1/groups/${name}`).set(w);
  const patch = (tb: TestBroker, body: unknown, ifMatch?: string, name = 'payers') => {
    const req = tb.request.patch(`/v1/groups/${name}`).set(w);
    if (ifMatch !== undefined) req.set('If-Match', ifMatch);
    return req.send(body as object);
  };
  const mint = (audience: string) => a.request.post('/v1/client/credentials/jwt').set(auth(memberToken)).send({ audience });

  it('GET answers an ETag; PATCH changes the fields given, keeps grants and members, answers a new ETag, audits group.update', async () => {
    const before = await get(a);
    expect(before.status).toBe(200);
    expect(before.headers.etag).toMatch(ETAG);
    const { result: res, events } = await capture(a, () => patch(a, { description: 'after', labels: { team: 'b', tier: '1' } }));
    expect(res.status, res.text).toBe(200);
    expect(res.headers.etag).toMatch(ETAG);
    expect(res.headers.etag).not.toBe(before.headers.etag);
    expect(res.body).toMatchObject({
      name: 'payers',
      description: 'after',
      labels: { team: 'b', tier: '1' },
      allowedAudiences: ['https://one.example'],
      secrets: ['pay.key'],
      clients: ['pay-svc'],
      createdAt: before.body.createdAt,
    });
    // the ETag GET answers now is the one PATCH answered
    expect((await get(a)).headers.etag).toBe(res.headers.etag);
    expect(events.map((e) => e.action)).toEqual(['group.update']);
    expect(events[0]).toMatchObject({ resourceKind: 'group', resourceName: 'payers', outcome: 'allow', details: { fields: ['description', 'labels'] } });
    // the member still reads the granted secret
    const read = await a.request.get('/v1/client/secrets/pay.key').set(auth(memberToken));
    expect(read.status, read.text).toBe(200);
  });

  it('allowedAudiences changes what members may mint at once; null lifts the restriction, [] allows none', async () => {
    expectProblem(await mint('https://two.example'), 403, 'audience_not_allowed');
    const { result: res, events } = await capture(a, () => patch(a, { allowedAudiences: ['https://one.example', 'https://two.example'] }));
    expect(res.status, res.text).toBe(200);
    expect(res.body.allowedAudiences).toEqual(['https://one.example', 'https://two.example']);
    expect(events[0]).toMatchObject({
      action: 'group.update',
      details: { fields: ['allowedAudiences'], allowedAudiences: ['https://one.example', 'https://two.example'], previousAllowedAudiences: ['https://one.example'] },
    });
    expect((await mint('https://two.example')).status).toBe(201);
    expect((await patch(a, { allowedAudiences: [] })).body.allowedAudiences).toEqual([]);
    expectProblem(await mint('https://one.example'), 403, 'audience_not_allowed');
    const lifted = await patch(a, { allowedAudiences: null });
    expect(lifted.status).toBe(200);
    expect(lifted.body.allowedAudiences).toBeNull();
    expect((await patch(a, { allowedAudiences: ['https://one.example'] })).status).toBe(200);
    expect((await mint('https://one.example')).status).toBe(201);
  });

  it('If-Match: the current ETag or * succeeds; a stale one is 412 precondition_failed and changes nothing', async () => {
    const current = (await get(a)).headers.etag as string;
    const ok = await patch(a, { description: 'cas-1' }, current);
    expect(ok.status, ok.text).toBe(200);
    const stale = await capture(a, () => patch(a, { description: 'lost' }, current));
    const problem = expectProblem(stale.result, 412, 'precondition_failed');
    expect(problem.detail).toContain(ok.headers.etag);
    expect(stale.events).toEqual([]);
    expect((await get(a)).body.description).toBe('cas-1');
    // W/ is tolerated as on the other routes; * means "whatever is current"
    expect((await patch(a, { description: 'cas-2' }, `W/${ok.headers.etag}`)).status).toBe(200);
    const star = await patch(a, { description: 'cas-3' }, '*');
    expect(star.status).toBe(200);
    expect(star.body.description).toBe('cas-3');
  });

  it('two requests with the same If-Match, one per instance: exactly one wins, the other is 412', async () => {
    for (let round = 0; round < 5; round++) {
      const etag = (await get(b)).headers.etag as string;
      const results = await Promise.all([patch(a, { description: `a-${round}` }, etag), patch(b, { description: `b-${round}` }, etag)]);
      const statuses = results.map((r) => r.status).sort();
      expect(statuses, results.map((r) => r.text).join('\n')).toEqual([200, 412]);
      const winner = results.find((r) => r.status === 200)!;
      const now = await get(a);
      expect(now.body.description).toBe(winner.body.description);
      expect(now.headers.etag).toBe(winner.headers.etag);
      expectProblem(results.find((r) => r.status === 412)!, 412, 'precondition_failed');
    }
  });

  it('without If-Match, concurrent changes of different fields on two instances both land', async () => {
    const [d, l] = await Promise.all([patch(a, { description: 'from-a' }), patch(b, { labels: { from: 'b' } })]);
    expect(d.status, d.text).toBe(200);
    expect(l.status, l.text).toBe(200);
    expect(d.headers.etag).not.toBe(l.headers.etag);
    const now = await get(a);
    expect(now.body).toMatchObject({ description: 'from-a', labels: { from: 'b' }, secrets: ['pay.key'], clients: ['pay-svc'] });
  });

  it('refuses bad input with 400, an unknown group with 404, and other roles with 403', async () => {
    for (const body of [{ name: 'renamed' }, { description: 5 }, { labels: { 'bad key!': 'x' } }, { labels: 'x' }, { allowedAudiences: 'https://x' }, { allowedAudiences: [''] }, { secrets: [] }]) {
      expectProblem(await patch(a, body), 400, 'invalid_request');
    }
    for (const ifMatch of ['3', '"abc"', '"1", "2"', '']) {
      const res = await patch(a, { description: 'x' }, ifMatch);
      expectProblem(res, 400);
    }
    expectProblem(await patch(a, { description: 'x' }, undefined, 'no-such-group'), 404, 'not_found');
    expectProblem(await patch(a, { description: 'x' }, '*', 'no-such-group'), 404, 'not_found');
    expectProblem(await patch(a, { description: 'x' }, undefined, 'bad name!'), 400);
    for (const role of ['auditor', 'signer'] as const) {
      const key = auth(await a.apiKey(role));
      expectProblem(await a.request.patch('/v1/groups/payers').set(key).send({ description: 'x' }), 403, 'forbidden');
    }
    expectProblem(await a.request.patch('/v1/groups/payers').set(auth(memberToken)).send({ description: 'x' }), 403, 'forbidden');
    expectProblem(await a.request.patch('/v1/groups/payers').send({ description: 'x' }), 401, 'unauthenticated');
    // none of it changed the group
    expect((await get(a)).body).toMatchObject({ description: 'from-a', labels: { from: 'b' } });
  });

  it('an admin may update a group too', async () => {
    const res = await a.request.patch('/v1/groups/payers').set(auth(a.adminKey)).send({ description: 'by admin' });
    expect(res.status, res.text).toBe(200);
    expect(res.body.description).toBe('by admin');
  });
});
