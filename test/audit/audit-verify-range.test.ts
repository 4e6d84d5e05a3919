import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowToEvent, type AuditEventRow } from '../../src/audit/audit-dal.js';
import { eventLeafHash } from '../../src/audit/audit-leaf.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblemCode } from './audit-helpers.js';

/**
 * POST /v1/audit/verify {fromLeaf, toLeaf}: re-derives only the leaves [fromLeaf, toLeaf) and
 * binds them to the newest signed root through the stored subtrees around them. An edit inside
 * the range is named by position; an edit outside it is left to the whole-log verification.
 */
describe('audit log range verification', () => {
  let tb: TestBroker;
  let AU: Record<string, string>;
  let W: Record<string, string>;
  let size: number;
  const knex = () => tb.handle.knex;
  const flush = () => tb.broker.services.auditSequencer.flush();

  const verify = async (body: Record<string, unknown> = {}) => {
    const res = await tb.request.post('/v1/audit/verify').set(AU).send(body);
    expect(res.status, res.text).toBe(200);
    return res.body;
  };
  const treeSize = async () => Number((await knex()('audit_tree_heads').max('tree_size as n').first())!.n);

  /** Edits one event's stored content (what someone with database access could do), and undoes it. */
  async function withEditedEvent<T>(leaf: number, fn: () => Promise<T>): Promise<T> {
    const row = (await knex()('audit_events').where({ leaf_index: leaf }).first()) as AuditEventRow;
    expect(row, `event of leaf ${leaf}`).toBeTruthy();
    await knex()('audit_events').where({ seq: row.seq }).update({ resource_name: 'edited-by-an-attacker' });
    try {
      return await fn();
    } finally {
      await knex()('audit_events').where({ seq: row.seq }).update({ resource_name: row.resource_name });
    }
  }
  async function withNode<T>(level: number, idx: number, hash: string, fn: () => Promise<T>): Promise<T> {
    const row = (await knex()('audit_tree_nodes').where({ level, idx }).first()) as { hash: string };
    expect(row, `node ${level}/${idx}`).toBeTruthy();
    await knex()('audit_tree_nodes').where({ level, idx }).update({ hash });
    try {
      return await fn();
    } finally {
      await knex()('audit_tree_nodes').where({ level, idx }).update({ hash: row.hash });
    }
  }

  beforeAll(async () => {
    // sequencing only when told (flush), no background verification
    tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0', KEYWARDEN_AUDIT_VERIFY_INTERVAL: '0' } });
    AU = auth(await tb.apiKey('auditor'));
    W = auth(await tb.apiKey('writer'));
    await flush();
    for (const g of ['g1', 'g2']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    await flush();
    for (const s of ['s1', 's2', 's3', 's4', 's5']) {
      expect((await tb.request.post('/v1/secrets').set(W).send({ name: s, value: `value-of-${s}`, groups: ['g1'] })).status).toBe(201);
    }
    await flush();
    const c = await tb.client('c1', ['g1']);
    for (const s of ['s1', 's2', 's3', 's4', 's5']) expect((await tb.request.get(`/v1/client/secrets/${s}`).set(auth(c.token))).status).toBe(200);
    await flush();
    size = await treeSize();
    expect(size).toBeGreaterThanOrEqual(20);
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('verifies any range of an intact log, with the same result shape as the whole-log verification', async () => {
    const whole = await verify();
    expect(whole).toMatchObject({ ok: true, treeSize: size });
    for (const [a, b] of [
      [0, size],
      [0, 1],
      [3, 11],
      [8, 16],
      [size - 1, size],
      [5, size],
      [1, 2],
    ]) {
      const r = await verify({ fromLeaf: a, toLeaf: b });
      expect(r, `[${a}, ${b})`).toMatchObject({ ok: true, treeSize: size, rootHash: whole.rootHash, leavesChecked: b - a, leavesWithoutEvent: 0, range: { fromLeaf: a, toLeaf: b } });
      expect(r.headsChecked).toBeGreaterThanOrEqual(1);
      expect(r.firstBadLeaf).toBeUndefined();
    }
  });

  it('names the edited event inside the range, and the whole-log verification agrees', async () => {
    await withEditedEvent(9, async () => {
      const r = await verify({ fromLeaf: 4, toLeaf: 14 });
      expect(r).toMatchObject({ ok: false, firstBadLeaf: 9, range: { fromLeaf: 4, toLeaf: 14 } });
      expect(r.reason).toMatch(/leaf 9\) does not match its leaf hash/);
      expect(r.leavesChecked).toBe(5);
      expect(await verify()).toMatchObject({ ok: false, firstBadLeaf: 9 });
      // the range's edges are inclusive of fromLeaf and exclusive of toLeaf
      expect(await verify({ fromLeaf: 9, toLeaf: 10 })).toMatchObject({ ok: false, firstBadLeaf: 9 });
      expect(await verify({ fromLeaf: 0, toLeaf: 9 })).toMatchObject({ ok: true });
      expect(await verify({ fromLeaf: 10, toLeaf: size })).toMatchObject({ ok: true });
    });
    expect(await verify({ fromLeaf: 4, toLeaf: 14 })).toMatchObject({ ok: true });
  });

  it('does not report an edited event outside the range (the whole-log verification does)', async () => {
    const outside = size - 2;
    await withEditedEvent(outside, async () => {
      expect(await verify({ fromLeaf: 0, toLeaf: 8 })).toMatchObject({ ok: true, leavesChecked: 8 });
      expect(await verify()).toMatchObject({ ok: false, firstBadLeaf: outside });
    });
  });

  it('binds the range to the signed root through the stored subtrees around it', async () => {
    // an event edited together with its stored leaf hash: the leaf check passes, the subtree above fails
    const row = (await knex()('audit_events').where({ leaf_index: 6 }).first()) as AuditEventRow;
    const forged = eventLeafHash({ ...rowToEvent(row), resourceName: 'edited-by-an-attacker' });
    await withEditedEvent(6, () =>
      withNode(0, 6, forged, async () => {
        const r = await verify({ fromLeaf: 5, toLeaf: 8 });
        expect(r.ok).toBe(false);
        expect(r.reason).toMatch(/stored subtree 1\/3 does not match its leaves/);
        expect(r.firstBadLeaf).toBe(6);
        expect(await verify({ fromLeaf: 6, toLeaf: 7 })).toMatchObject({ ok: false, firstBadLeaf: 6 });
      }),
    );
    // a stored subtree right of the range that no longer hashes to the signed root
    const zero = '0'.repeat(64);
    await withNode(3, 1, zero, async () => {
      const r = await verify({ fromLeaf: 0, toLeaf: 4 });
      expect(r.ok).toBe(false);
      expect(r.reason).toMatch(/stored subtree 4\/0 does not match its leaves|do not hash to the newest signed root/);
    });
    // one left of it
    await withNode(2, 0, zero, async () => {
      const r = await verify({ fromLeaf: 4, toLeaf: 6 });
      expect(r.ok).toBe(false);
      // found by the head signed at size 5 (inside the range), or else by the subtree 3/0 above it
      expect(r.reason).toMatch(/root signed in tree head \d+ \(size 5\)|stored subtree 3\/0 does not match its leaves/);
      expect(r.firstBadLeaf).toBe(4);
    });
    expect(await verify({ fromLeaf: 0, toLeaf: size })).toMatchObject({ ok: true });
  });

  it('checks the newest signed head', async () => {
    const head = (await knex()('audit_tree_heads').orderBy([{ column: 'tree_size', order: 'desc' }, { column: 'id', order: 'desc' }]).first()) as { id: number; note: string };
    const lines = head.note.split('\n');
    const sig = lines[lines.length - 2]!;
    const flipped = sig.slice(0, -4) + (sig.slice(-4, -3) === 'A' ? 'B' : 'A') + sig.slice(-3);
    const forged = [...lines.slice(0, -2), flipped, ''].join('\n');
    await knex()('audit_tree_heads').where({ id: head.id }).update({ note: forged });
    try {
      const r = await verify({ fromLeaf: 0, toLeaf: 2 });
      expect(r.ok).toBe(false);
      expect(r.reason).toMatch(new RegExp(`tree head ${head.id}`));
    } finally {
      await knex()('audit_tree_heads').where({ id: head.id }).update({ note: head.note });
    }
    expect(await verify({ fromLeaf: 0, toLeaf: 2 })).toMatchObject({ ok: true });
  });

  it('records the range in the audit.verify event', async () => {
    await verify({ fromLeaf: 2, toLeaf: 5 });
    const events = await tb.broker.services.auditQuery.query({ action: 'audit.verify', order: 'desc', limit: 1 });
    expect(events[0]!.details).toMatchObject({ fromLeaf: 2, toLeaf: 5, leavesChecked: 3, firstBadLeaf: null });
  });

  it('rejects a malformed or out-of-tree range with a 400 problem', async () => {
    const bad = async (body: unknown, code?: string) => expectProblemCode(await tb.request.post('/v1/audit/verify').set(AU).send(body as object), 400, code);
    await bad({ fromLeaf: 0, toLeaf: size + 1 }, 'leaf_beyond_tree');
    await bad({ fromLeaf: size, toLeaf: size + 5 }, 'leaf_beyond_tree');
    await bad({ fromLeaf: 5, toLeaf: 5 });
    await bad({ fromLeaf: 6, toLeaf: 5 });
    await bad({ fromLeaf: 0 });
    await bad({ toLeaf: 3 });
    await bad({ fromLeaf: -1, toLeaf: 3 });
    await bad({ fromLeaf: 1.5, toLeaf: 3 });
    await bad({ fromLeaf: '0', toLeaf: '3' });
    await bad({ fromLeaf: 0, toLeaf: 2 ** 60 });
    await bad({ fromLeaf: 0, toLeaf: 3, checkpoint: 'x' });
    await bad({ fromLeaf: 0, toLeaf: 3, extra: true });
  });

  it('is for auditors and admins only', async () => {
    expectProblemCode(await tb.request.post('/v1/audit/verify').set(W).send({ fromLeaf: 0, toLeaf: 1 }), 403, 'forbidden');
    expect((await tb.request.post('/v1/audit/verify').set(auth(tb.adminKey)).send({ fromLeaf: 0, toLeaf: 1 })).body).toMatchObject({ ok: true });
  });
});
