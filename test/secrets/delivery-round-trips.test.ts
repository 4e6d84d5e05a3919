import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { auth, markSensitive } from '../core/helpers.js';
import { dialectUnderTest, startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * What one delivery asks of the database once the caches are warm: its audit append and nothing
 * else, in a single statement on PostgreSQL (no BEGIN or COMMIT), however many deliveries
 * came before. On SQLite the reads and the append run on the synchronous connection, which knex
 * does not see; there the repositories' reads are counted instead.
 */
describe('statements of one delivery', () => {
  let tb: TestBroker;
  let token: string;

  beforeAll(async () => {
    tb = await startTestBroker();
    const admin = auth(tb.adminKey);
    markSensitive('round-trip-value');
    expect((await tb.request.post('/v1/groups').set(admin).send({ name: 'rt' })).status).toBe(201);
    expect((await tb.request.post('/v1/secrets').set(admin).send({ name: 'rt.secret', value: 'round-trip-value', groups: ['rt'] })).status).toBe(201);
    const c = await tb.client('rt-client', ['rt']);
    markSensitive(c.clientSecret, c.token);
    token = c.token;
  });
  afterAll(async () => {
    await tb?.close();
  });

  async function statementsOfOneDelivery(): Promise<string[]> {
    const seen: string[] = [];
    const onQuery = (q: { sql: string }) => {
      // the sequencer and the epoch polls run on their own timers: not this delivery's
      if (!/^SELECT generation FROM (cache_epoch|gate_trust_epoch)|audit_tree|audit_heads|leaf_index|pg_advisory|audit_sequencer/i.test(q.sql)) seen.push(q.sql);
    };
    tb.broker.services.db.on('query', onQuery);
    try {
      const res = await tb.request.get('/v1/client/secrets/rt.secret').set(auth(token));
      expect(res.status, res.text).toBe(200);
    } finally {
      tb.broker.services.db.removeListener('query', onQuery);
    }
    return seen;
  }

  it.runIf(dialectUnderTest === 'postgres')('PostgreSQL: after the first read, one statement per delivery, the append with its last-read mark', async () => {
    const first = await statementsOfOneDelivery();
    expect(first.some((sql) => /JOIN clients c /.test(sql))).toBe(true);
    expect(first.some((sql) => /FROM secrets s/.test(sql))).toBe(true);
    for (let i = 0; i < 3; i++) {
      const again = await statementsOfOneDelivery();
      expect(again).toHaveLength(1);
      expect(again[0]).toMatch(/^WITH marks AS \(INSERT INTO secret_reads .*\) INSERT INTO audit_events /s);
    }
  });

  it('the token state and the access read are served from the epoch caches after the first delivery', async () => {
    const services = tb.broker.services;
    const tokensDal = (services.tokens as unknown as { deps: { dal: { clientTokenState: (...args: unknown[]) => unknown } } }).deps.dal;
    const accessRead = vi.spyOn(services.access.dal, 'findForClient');
    const tokenRead = vi.spyOn(tokensDal, 'clientTokenState');
    try {
      const deliver = async () => expect((await tb.request.get('/v1/client/secrets/rt.secret').set(auth(token))).status).toBe(200);
      // an admin change moves the epoch: the next delivery reads both again, the ones after it neither
      expect((await tb.request.patch('/v1/groups/rt').set(auth(tb.adminKey)).send({ description: 'moved the epoch' })).status).toBe(200);
      await deliver();
      expect([accessRead.mock.calls.length, tokenRead.mock.calls.length]).toEqual([1, 1]);
      for (let i = 0; i < 3; i++) await deliver();
      expect([accessRead.mock.calls.length, tokenRead.mock.calls.length]).toEqual([1, 1]);
    } finally {
      accessRead.mockRestore();
      tokenRead.mockRestore();
    }
  });
});
