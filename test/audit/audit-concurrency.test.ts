import crypto from 'node:crypto';
import supertest from 'supertest';
import { afterAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { allEvents, auth } from './audit-helpers.js';

/**
 * Two broker instances on one PostgreSQL database append to one log: each request's events
 * commit with it (no shared row), and both instances' sequencers, running on a short timer
 * during the load, give them leaf indexes one transaction at a time. So after a flush every
 * event has exactly one leaf index, and the indexes are 0..N-1: nothing lost, nothing twice.
 */
describe('audit log with two concurrent instances', () => {
  let a: TestBroker | undefined;
  let b: TestBroker | undefined;

  afterAll(async () => {
    await b?.close();
    await a?.close();
  });

  it.skipIf(!process.env.KEYWARDEN_TEST_DATABASE_URL)('~100 concurrent audited requests across both instances leave one intact tree', async () => {
    const rootKey = crypto.randomBytes(32).toString('base64');
    const env = { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '50' };
    a = await startTestBroker({ rootKey, env });
    b = await startTestBroker({ db: a.db, rootKey, keepDatabase: true, env });
    const writerKey = await a.apiKey('writer');
    const W = auth(writerKey);
    expect((await supertest(a.broker.app).post('/v1/groups').set(W).send({ name: 'shared' })).status).toBe(201);
    expect((await supertest(a.broker.app).post('/v1/secrets').set(W).send({ name: 'hot', value: 'concurrency-value-1', groups: ['shared'] })).status).toBe(201);
    const client = await a.client('worker', ['shared']);
    const startSeq = (await allEvents(a)).length;

    const apps = [a.broker.app, b.broker.app];
    const requests: Array<() => Promise<number>> = [];
    const expectedActions: Record<string, number> = {};
    const add = (action: string, n: number) => (expectedActions[action] = (expectedActions[action] ?? 0) + n);
    for (let i = 0; i < 30; i++) {
      requests.push(async () => (await supertest(apps[i % 2]).post('/v1/groups').set(W).send({ name: `grp-${i}` })).status);
      add('group.create', 1);
    }
    for (let i = 0; i < 20; i++) {
      requests.push(async () => (await supertest(apps[i % 2]).post('/v1/secrets').set(W).send({ name: `sec-${i}`, value: `v-${i}-concurrent`, groups: ['shared'] })).status);
      add('secret.create', 1);
      add('grant.add', 1);
    }
    for (let i = 0; i < 40; i++) {
      requests.push(async () => (await supertest(apps[i % 2]).get('/v1/client/secrets/hot').set(auth(client.token))).status);
      add('secret.read', 1);
    }
    for (let i = 0; i < 10; i++) {
      requests.push(async () => (await supertest(apps[i % 2]).get('/v1/secrets').set(auth(`kw_bogus-${i}-${'x'.repeat(30)}`))).status);
      add('auth.failure', 1);
    }
    const statuses = await Promise.all(requests.map((r) => r()));
    expect(statuses.filter((s) => ![200, 201, 401].includes(s))).toEqual([]);
    expect(statuses.filter((s) => s === 401)).toHaveLength(10);

    await a.broker.services.auditSequencer.flush();
    await b.broker.services.auditSequencer.flush();
    const events = await allEvents(a);
    const added = events.slice(startSeq);
    expect(added).toHaveLength(Object.values(expectedActions).reduce((x, y) => x + y, 0));
    const counts: Record<string, number> = {};
    for (const e of added) counts[e.action] = (counts[e.action] ?? 0) + 1;
    expect(counts).toEqual(expectedActions);
    // event numbers are unique (they may have gaps: a rolled-back insert uses one up)
    expect(new Set(events.map((e) => e.seq)).size).toBe(events.length);
    // after the flush every event has a leaf index, and the indexes are exactly 0..N-1
    expect(events.filter((e) => e.leafIndex === null)).toEqual([]);
    const indexes = events.map((e) => e.leafIndex!).sort((x, y) => x - y);
    expect(indexes.filter((v, i) => v !== i)).toEqual([]);
    const latest = await a.broker.services.auditTree.latestHead();
    expect(latest?.treeSize).toBe(events.length);

    for (const tb of [a, b]) {
      const res = await supertest(tb.broker.app).post('/v1/audit/verify').set(auth(tb.adminKey)).send({});
      expect(res.status).toBe(200);
      expect(res.body, JSON.stringify(res.body)).toMatchObject({ ok: true });
      // the verify request's own events may be sequenced meanwhile: the tree only grew
      expect(res.body.treeSize).toBeGreaterThanOrEqual(events.length);
      expect(res.body.leavesChecked).toBe(res.body.treeSize);
    }
  });
});
