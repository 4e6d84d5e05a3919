import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * Client reads (group-committed audit appends) racing operator writes (audited in their own
 * transactions) must all succeed and leave one valid chain. On SQLite the reads use a second,
 * synchronous connection, so this also proves the two connections never trip over each other.
 */
describe('concurrent reads and writes', () => {
  let t: TestBroker;
  let token: string;

  beforeAll(async () => {
    t = await startTestBroker();
    await t.request.post('/v1/groups').set(bearer(t.adminKey)).send({ name: 'mix' });
    for (let i = 0; i < 5; i++) {
      await t.request.post('/v1/secrets').set(bearer(t.adminKey)).send({ name: `mix-${i}`, value: `v${i}`, groups: ['mix'] });
    }
    ({ token } = await t.client('mixer', ['mix']));
  });

  afterAll(async () => {
    await t?.close();
  });

  it('serves every read and applies every write, with an intact audit chain', async () => {
    const reads = Array.from({ length: 300 }, (_, i) => t.request.get(`/v1/client/secrets/mix-${i % 5}`).set(bearer(token)));
    const writes = Array.from({ length: 40 }, (_, i) =>
      i % 2 === 0
        ? t.request.post(`/v1/secrets/mix-${i % 5}/versions`).set(bearer(t.adminKey)).send({ value: `w${i}` })
        : t.request.patch(`/v1/secrets/mix-${i % 5}`).set(bearer(t.adminKey)).send({ description: `d${i}` }),
    );
    const results = await Promise.all([...reads, ...writes]);
    const bad = results.filter((r) => r.status >= 300).map((r) => `${r.status} ${r.body?.code}`);
    expect(bad).toEqual([]);
    const verify = await t.request.post('/v1/audit/verify').set(bearer(t.adminKey)).send({});
    expect(verify.body).toMatchObject({ ok: true });
    const reads200 = await t.broker.services.db('audit_events').where({ action: 'secret.read', outcome: 'allow' }).count<{ n: number }[]>('* as n');
    expect(Number(reads200[0].n)).toBe(300);
  }, 120_000);

  it('a write transaction that spans a slow await is not broken by reads committing meanwhile', async () => {
    const db = t.broker.services.db;
    const now = Date.now();
    // through the database port, as every transaction in the broker is: it tells the fast path to step aside
    const slowWrite = t.broker.services.database.transaction(async (trx) => {
      await trx('groups').where({ name: 'nobody' }).first();
      // a macrotask gap, as a Vault call inside a transaction would leave
      await new Promise((r) => setTimeout(r, 100));
      await trx('groups').insert({ name: 'slow-write', description: '', labels: '{}', created_by: 'test', created_at: now, updated_at: now });
    });
    await new Promise((r) => setTimeout(r, 10));
    const read = t.request.get('/v1/client/secrets/mix-0').set(bearer(token));
    const [, res] = await Promise.all([slowWrite, read]);
    expect(res.status).toBe(200);
    expect(await db('groups').where({ name: 'slow-write' }).first()).toBeDefined();
    expect((await t.request.post('/v1/audit/verify').set(bearer(t.adminKey)).send({})).body).toMatchObject({ ok: true });
  }, 60_000);
});
