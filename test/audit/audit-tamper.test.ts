import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainHash } from '../../src/audit/audit-chain.js';
import { rowToEvent } from '../../src/audit/audit-dal.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { allEvents, auth, expectProblemCode, headSeq } from './audit-helpers.js';

/**
 * Direct edits of the audit table (what someone with database access could do) are found by
 * POST /v1/audit/verify, at the first affected sequence number. Each test restores the rows
 * it changed, so the log is intact again between tests.
 */
describe('audit chain tamper detection', () => {
  let tb: TestBroker;
  let AU: Record<string, string>;
  const db = () => tb.broker.services.db;
  const row = async (seq: number) => {
    const r = await db()('audit_events').where({ seq }).first();
    expect(r, `row ${seq}`).toBeTruthy();
    return r;
  };
  const count = async () => Number((await db()('audit_events').count('* as n').first())!.n);
  const verify = async (body: Record<string, unknown> = {}) => {
    const res = await tb.request.post('/v1/audit/verify').set(AU).send(body);
    expect(res.status, res.text).toBe(200);
    return res.body;
  };
  const expectIntact = async () => {
    const n = await count();
    expect(await verify()).toMatchObject({ ok: true, checked: n, fromSeq: 1, toSeq: n });
  };

  beforeAll(async () => {
    tb = await startTestBroker();
    AU = auth(await tb.apiKey('auditor'));
    const W = auth(await tb.apiKey('writer'));
    for (const g of ['g1', 'g2', 'g3']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    for (const s of ['s1', 's2', 's3']) {
      expect((await tb.request.post('/v1/secrets').set(W).send({ name: s, value: `value-of-${s}`, groups: ['g1'] })).status).toBe(201);
    }
    const c = await tb.client('c1', ['g1']);
    for (const s of ['s1', 's2']) expect((await tb.request.get(`/v1/client/secrets/${s}`).set(auth(c.token))).status).toBe(200);
    expect(await count()).toBeGreaterThanOrEqual(15);
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('an untouched log verifies, with checked = the number of events', async () => {
    const n = await count();
    const r = await verify();
    expect(r).toMatchObject({ ok: true, checked: n, fromSeq: 1, toSeq: n, head: { seq: n } });
    expect(r.firstBrokenSeq).toBeUndefined();
    // verifying is itself recorded
    const last = (await allEvents(tb)).at(-1)!;
    expect(last).toMatchObject({ seq: n + 1, action: 'audit.verify', outcome: 'allow', details: { checked: n, firstBrokenSeq: null } });
    expect(await verify()).toMatchObject({ ok: true, checked: n + 1 });
  });

  it.each([
    ['actor_name', 'mallory'],
    ['action', 'group.delete'],
    ['resource_name', 'someone-else'],
    ['outcome', 'deny'],
    ['details', JSON.stringify({ version: 99, groups: ['g1'] })],
    ['source_ip', '10.6.6.6'],
    ['request_id', 'forged-request'],
  ])('modifying %s of one row is detected at that seq', async (column, value) => {
    const seq = 7;
    const original = await row(seq);
    await db()('audit_events').where({ seq }).update({ [column]: value });
    try {
      const r = await verify();
      expect(r).toMatchObject({ ok: false, firstBrokenSeq: seq, checked: seq - 1 });
      expect(r.reason).toMatch(/does not match its hash/);
    } finally {
      await db()('audit_events').where({ seq }).update(original);
    }
    await expectIntact();
  });

  it('modifying the timestamp is detected', async () => {
    const seq = 4;
    const original = await row(seq);
    await db()('audit_events').where({ seq }).update({ ts: Number(original.ts) - 86_400_000 });
    try {
      expect(await verify()).toMatchObject({ ok: false, firstBrokenSeq: seq });
    } finally {
      await db()('audit_events').where({ seq }).update(original);
    }
    await expectIntact();
  });

  it('rewriting a row together with its own hash breaks the link to the next row', async () => {
    const seq = 6;
    const original = await row(seq);
    const event = rowToEvent(original);
    const forged = { ...event, actorName: 'mallory' };
    const { hash: _h, ...rest } = forged;
    await db()('audit_events').where({ seq }).update({ actor_name: 'mallory', hash: chainHash(forged.prevHash, rest) });
    try {
      const r = await verify();
      expect(r).toMatchObject({ ok: false, firstBrokenSeq: seq + 1 });
      expect(r.reason).toMatch(/prev_hash/);
    } finally {
      await db()('audit_events').where({ seq }).update(original);
    }
    await expectIntact();
  });

  it('deleting a middle row is detected at that seq', async () => {
    const seq = 8;
    const original = await row(seq);
    await db()('audit_events').where({ seq }).delete();
    try {
      const r = await verify();
      expect(r).toMatchObject({ ok: false, firstBrokenSeq: seq, checked: seq - 1 });
      expect(r.reason).toMatch(/gap/);
    } finally {
      await db()('audit_events').insert(original);
    }
    await expectIntact();
  });

  it('deleting the first row is detected (nothing anchors the remaining history)', async () => {
    const original = await row(1);
    await db()('audit_events').where({ seq: 1 }).delete();
    try {
      const r = await verify();
      expect(r).toMatchObject({ ok: false, firstBrokenSeq: 2 });
      expect(r.reason).toMatch(/checkpoint/);
    } finally {
      await db()('audit_events').insert(original);
    }
    await expectIntact();
  });

  it('swapping the contents of two rows (keeping their seqs) is detected', async () => {
    const [i, j] = [5, 9];
    const a = await row(i);
    const b = await row(j);
    const { seq: _sa, ...contentA } = a;
    const { seq: _sb, ...contentB } = b;
    await db()('audit_events').where({ seq: i }).update(contentB);
    await db()('audit_events').where({ seq: j }).update(contentA);
    try {
      expect(await verify()).toMatchObject({ ok: false, firstBrokenSeq: i });
    } finally {
      await db()('audit_events').where({ seq: i }).update(contentA);
      await db()('audit_events').where({ seq: j }).update(contentB);
    }
    await expectIntact();
  });

  it('reordering two rows (swapping their seq values) is detected', async () => {
    const [i, j] = [10, 11];
    const swap = async () => {
      await db()('audit_events').where({ seq: i }).update({ seq: -1 });
      await db()('audit_events').where({ seq: j }).update({ seq: i });
      await db()('audit_events').where({ seq: -1 }).update({ seq: j });
    };
    await swap();
    try {
      expect(await verify()).toMatchObject({ ok: false, firstBrokenSeq: i });
    } finally {
      await swap();
    }
    await expectIntact();
  });

  it('truncating the newest rows (audit_head left alone) is detected', async () => {
    const head = await headSeq(tb);
    const last = await row(head);
    await db()('audit_events').where({ seq: head }).delete();
    try {
      const r = await verify();
      expect(r).toMatchObject({ ok: false, firstBrokenSeq: head, checked: head - 1 });
      expect(r.reason).toMatch(/missing/);
    } finally {
      await db()('audit_events').insert(last);
    }
    await expectIntact();

    const head2 = await headSeq(tb);
    const removed = await db()('audit_events').where('seq', '>', head2 - 3).orderBy('seq');
    expect(removed).toHaveLength(3);
    await db()('audit_events').where('seq', '>', head2 - 3).delete();
    try {
      expect(await verify()).toMatchObject({ ok: false, firstBrokenSeq: head2 - 2 });
    } finally {
      await db()('audit_events').insert(removed);
    }
    await expectIntact();
  });

  it('a head row that does not match the last event is detected', async () => {
    // (through the service: a recorded audit.verify would chain onto the forged head)
    const original = await db()('audit_head').where({ id: 1 }).first();
    await db()('audit_head').where({ id: 1 }).update({ hash: 'f'.repeat(64) });
    try {
      const r = await tb.broker.services.auditVerifier.verify();
      expect(r).toMatchObject({ ok: false, firstBrokenSeq: Number(original.seq) });
    } finally {
      await db()('audit_head').where({ id: 1 }).update({ hash: original.hash });
    }
    await expectIntact();
  });

  it('truncating rows and rewinding audit_head to match is caught by a later signed checkpoint', async () => {
    // (through the service: a recorded audit.verify would chain onto the rewound head)
    const verifier = tb.broker.services.auditVerifier;
    const cp = await tb.request.post('/v1/audit/checkpoints').set(auth(tb.adminKey));
    expect(cp.status).toBe(201);
    const head = await db()('audit_head').where({ id: 1 }).first();
    const keep = Number(cp.body.seq) - 3;
    const removed = await db()('audit_events').where('seq', '>', keep).orderBy('seq');
    const newHead = await row(keep);
    await db()('audit_events').where('seq', '>', keep).delete();
    await db()('audit_head').where({ id: 1 }).update({ seq: keep, hash: newHead.hash });
    try {
      const r = await verifier.verify();
      expect(r).toMatchObject({ ok: false, firstBrokenSeq: keep + 1 });
      expect(r.reason).toMatch(/checkpoint/);
    } finally {
      await db()('audit_events').insert(removed);
      await db()('audit_head').where({ id: 1 }).update({ seq: head.seq, hash: head.hash });
    }
    expect(await verifier.verify()).toMatchObject({ ok: true, checkpointsChecked: 1 });
    await expectIntact();
  });

  it('fromSeq/toSeq verify a range, anchored on the stored event before it', async () => {
    expect(await verify({ fromSeq: 2, toSeq: 6 })).toMatchObject({ ok: true, checked: 5, fromSeq: 2, toSeq: 6 });
    expect(await verify({ toSeq: 3 })).toMatchObject({ ok: true, checked: 3, fromSeq: 1, toSeq: 3 });
    const head = await headSeq(tb);
    expect(await verify({ fromSeq: head - 1, toSeq: head + 1000 })).toMatchObject({ ok: true, checked: 2, toSeq: head });

    const seq = 9;
    const original = await row(seq);
    await db()('audit_events').where({ seq }).update({ actor_name: 'mallory' });
    try {
      expect(await verify({ toSeq: seq - 1 })).toMatchObject({ ok: true, checked: seq - 1 });
      expect(await verify({ fromSeq: seq + 1 })).toMatchObject({ ok: true });
      expect(await verify({ fromSeq: seq, toSeq: seq })).toMatchObject({ ok: false, firstBrokenSeq: seq, checked: 0 });
      expect(await verify({ fromSeq: 3, toSeq: seq + 2 })).toMatchObject({ ok: false, firstBrokenSeq: seq, checked: seq - 3 });
      // the failure is itself recorded
      const last = (await allEvents(tb)).at(-1)!;
      expect(last).toMatchObject({ action: 'audit.verify', outcome: 'error', details: { firstBrokenSeq: seq } });
      expect(last.reason).toBeTruthy();
    } finally {
      await db()('audit_events').where({ seq }).update(original);
    }
    await expectIntact();
  });

  it('rejects malformed verify requests', async () => {
    for (const body of [{ fromSeq: 0 }, { fromSeq: 'abc' }, { toSeq: 1.5 }, { from: 1 }]) {
      expectProblemCode(await tb.request.post('/v1/audit/verify').set(AU).send(body), 400, 'invalid_request');
    }
  });
});
