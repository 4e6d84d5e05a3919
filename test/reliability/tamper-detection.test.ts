import crypto from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Knex } from 'knex';
import { rowToEvent, type AuditEventRow } from '../../src/audit/audit-dal.js';
import { eventLeafHash } from '../../src/audit/audit-leaf.js';
import { TreeFrontier } from '../../src/audit/merkle.js';
import { expectProblem, markSensitive } from '../core/helpers.js';
import { withinCacheBound } from '../support/cache-bound.js';
import { headSeq } from '../support/audit-events.js';
import { bearer, freshDatabase, startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * Issue 10, item 6: what the hash chain alone cannot see. Each case makes the edit someone with
 * write access to the database could make, straight in the tables, against a running broker.
 */

const VERIFY_INTERVAL_SECONDS = 1;
const fastVerify = { KEYWARDEN_AUDIT_VERIFY_INTERVAL: String(VERIFY_INTERVAL_SECONDS) };

async function metric(tb: TestBroker, name: string): Promise<number | undefined> {
  const res = await tb.request.get('/metrics');
  expect(res.status).toBe(200);
  const line = res.text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

/** Polls until `probe` returns true, at most `ms`; returns the time it took, or undefined. */
async function within(ms: number, probe: () => Promise<boolean>): Promise<number | undefined> {
  const start = Date.now();
  for (let i = 0; i < 200 && Date.now() - start < ms; i++) {
    if (await probe()) return Date.now() - start;
    await new Promise((r) => setTimeout(r, 100));
  }
  return (await probe()) ? Date.now() - start : undefined;
}

/** Leaves in the newest signed tree head. */
async function treeSize(tb: TestBroker): Promise<number> {
  return (await tb.broker.services.auditTree.latestHead())?.treeSize ?? 0;
}

/**
 * What someone with database access but without the signing key can do best: edit one event,
 * then recompute every leaf and inner node, and the heads' root columns, so that the tables
 * agree with each other. Only the signatures in the heads' notes cannot follow.
 */
async function rehashTree(knex: Knex, edit: (row: AuditEventRow) => Partial<AuditEventRow> | undefined): Promise<void> {
  await knex.transaction(async (trx) => {
    const rows: AuditEventRow[] = await trx('audit_events').whereNotNull('leaf_index').orderBy('leaf_index');
    const frontier = TreeFrontier.empty();
    const roots = new Map<number, string>();
    for (const original of rows) {
      const change = edit(original);
      const row = change ? { ...original, ...change } : original;
      if (change) await trx('audit_events').where({ seq: original.seq }).update(change);
      const nodes: Array<{ level: number; idx: number; hash: string }> = [];
      frontier.appendLeafHash(Buffer.from(eventLeafHash(rowToEvent(row)), 'hex'), (n, h) => nodes.push({ level: n.level, idx: n.index, hash: h.toString('hex') }));
      for (const n of nodes) await trx('audit_tree_nodes').where({ level: n.level, idx: n.idx }).update({ hash: n.hash });
      roots.set(frontier.size, frontier.root().toString('hex'));
    }
    for (const [size, root] of roots) await trx('audit_tree_heads').where({ tree_size: size }).update({ root_hash: root });
  });
}

describe('tamper detection: rows bound by MACs', () => {
  let tb: TestBroker;
  let W: Record<string, string>;
  let AU: Record<string, string>;
  let reader: { token: string };
  const db = () => tb.broker.services.db;
  const read = (name: string) => tb.request.get(`/v1/client/secrets/${name}`).set(bearer(reader.token));
  const secretRow = (name: string) => db()('secrets').where({ name }).whereNull('deleted_at').first();
  const violations = async () => (await tb.request.get('/v1/audit').query({ action: 'integrity.violation', limit: 100 }).set(AU)).body.items as Array<{ reason: string }>;

  beforeAll(async () => {
    tb = await startTestBroker({ env: fastVerify });
    W = bearer(await tb.apiKey('writer'));
    AU = bearer(await tb.apiKey('auditor'));
    for (const g of ['readers', 'other']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    reader = await tb.client('reader', ['readers', 'other']);
    markSensitive('rollback-v1-old-credential', 'rollback-v2-current', 'checksum-value', 'not-for-readers');
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('(c) setting current_version back in the database fails the next read closed, and the scan reports it', async () => {
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'rb', value: 'rollback-v1-old-credential', groups: ['readers'] })).status).toBe(201);
    expect((await tb.request.post('/v1/secrets/rb/versions').set(W).send({ value: 'rollback-v2-current' })).status).toBe(201);
    const ok = await read('rb');
    expect(ok.status).toBe(200);
    expect(Buffer.from(ok.body.content, 'base64').toString()).toBe('rollback-v2-current');

    await db()('secrets').where({ name: 'rb' }).update({ current_version: 1 });
    // the hand edit moves the cache epoch (migration 012): refused within the cache bound
    const res = await withinCacheBound(async () => {
      const r = await read('rb');
      expectProblem(r, 503, 'integrity_failure');
      return r;
    });
    const body = expectProblem(res, 503, 'integrity_failure');
    expect(body.detail).toMatch(/changed outside the broker/);
    expect(res.text).not.toContain(Buffer.from('rollback-v1-old-credential').toString('base64'));

    // the refusal is on the record, and the background scan reports the row within an interval
    const refused = (await tb.request.get('/v1/audit').query({ action: 'secret.read', resource: 'rb', outcome: 'error' }).set(AU)).body.items;
    expect(refused.length).toBeGreaterThanOrEqual(1);
    expect(await within(5000, async () => ((await metric(tb, 'keywarden_row_integrity_violations')) ?? 0) >= 1)).toBeDefined();
    expect(await within(5000, async () => (await violations()).some((v) => v.reason.includes('(rb)')))).toBeDefined();
  });

  it('(c) replaying the whole older row (with the MAC it had then) is caught: the row lags its newest version', async () => {
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'replay', value: 'rollback-v1-old-credential', groups: ['readers'] })).status).toBe(201);
    const saved = await secretRow('replay');
    expect((await tb.request.post('/v1/secrets/replay/versions').set(W).send({ value: 'rollback-v2-current' })).status).toBe(201);
    expect((await read('replay')).status).toBe(200);
    await db()('secrets').where({ id: saved.id }).update({ current_version: saved.current_version, latest_version: saved.latest_version, row_mac: saved.row_mac });
    const res = await withinCacheBound(async () => {
      const r = await read('replay');
      expectProblem(r, 503, 'integrity_failure');
      return r;
    });
    expect(res.text).not.toContain(Buffer.from('rollback-v1-old-credential').toString('base64'));
    expect(await within(5000, async () => (await violations()).some((v) => v.reason.includes('(replay)')))).toBeDefined();
  });

  it('(d) editing the checksum column is detected on the next read and by the scan', async () => {
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'sum', value: 'checksum-value', groups: ['readers'] })).status).toBe(201);
    const ok = await read('sum');
    expect(ok.status).toBe(200);
    const s = await secretRow('sum');
    await db()('secret_versions').where({ secret_id: s.id, version: 1 }).update({ checksum: crypto.randomBytes(32).toString('hex') });
    await withinCacheBound(async () => expectProblem(await read('sum'), 503, 'integrity_failure'));
    expect(await within(5000, async () => (await violations()).some((v) => v.reason.includes(`version 1 of secret ${s.id}`)))).toBeDefined();
  });

  it('(e) a grant row inserted by hand does not let the client read, and is reported', async () => {
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'private', value: 'not-for-readers', groups: ['other'] })).status).toBe(201);
    // remove the real grant, so that only a forged one could let the client in
    const readers = await db()('groups').where({ name: 'readers' }).first();
    const s = await secretRow('private');
    await db()('access_grants').where({ secret_id: s.id }).delete();
    await withinCacheBound(async () => expectProblem(await read('private'), 404, 'not_found'));

    await db()('access_grants').insert({ group_id: readers.id, secret_id: s.id, created_at: Date.now() });
    const res = await withinCacheBound(async () => {
      const r = await read('private');
      expectProblem(r, 503, 'integrity_failure');
      return r;
    });
    expect(res.text).not.toContain(Buffer.from('not-for-readers').toString('base64'));
    // a MAC copied from another grant row does not fit this one either
    const donor = await db()('access_grants').whereNotNull('row_mac').first();
    await db()('access_grants').where({ group_id: readers.id, secret_id: s.id }).update({ row_mac: donor.row_mac });
    await withinCacheBound(async () => expectProblem(await read('private'), 503, 'integrity_failure'));
    expect(await within(5000, async () => (await violations()).some((v) => v.reason.includes(`grant group ${readers.id} → secret ${s.id}`)))).toBeDefined();

    // the operator's own grant replaces the forged row and the read works again
    expect((await tb.request.put('/v1/groups/readers/secrets').set(W).send({ add: ['private'] })).status).toBe(200);
    expect((await read('private')).status).toBe(200);
  });
});

describe('tamper detection: the audit chain watched by a running instance', () => {
  let tb: TestBroker;

  beforeAll(async () => {
    tb = await startTestBroker({ env: fastVerify });
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('(a) cutting events, nodes and signed heads back together is found within one verify interval; audited operations then get 503', async () => {
    const W = bearer(await tb.apiKey('writer'));
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 'g' })).status).toBe(201);
    for (let i = 0; i < 5; i++) expect((await tb.request.post('/v1/secrets').set(W).send({ name: `s${i}`, value: `value-${i}`, groups: ['g'] })).status).toBe(201);
    const cutTo = await (async () => {
      await tb.broker.services.auditSequencer.flush();
      return treeSize(tb);
    })();
    const client = await tb.client('c', ['g']);
    for (let i = 0; i < 5; i++) expect((await tb.request.get(`/v1/client/secrets/s${i}`).set(bearer(client.token))).status).toBe(200);
    await tb.broker.services.auditSequencer.flush();
    const size = await treeSize(tb);
    expect(size - cutTo).toBeGreaterThanOrEqual(6);
    // no one outside the broker kept a checkpoint of these leaves: only the instance's own verified
    // state can tell, or the newest head it kept in its data directory (its sequencer then refuses)
    expect(await within(5000, async () => ((await metric(tb, 'keywarden_audit_chain_verified_tree_size')) ?? 0) >= size)).toBeDefined();
    expect(await metric(tb, 'keywarden_audit_chain_ok')).toBe(1);
    const ready = await tb.request.get('/readyz');
    expect(ready.body.checks.auditChain).toBe('ok');

    // the cut: the newest leaves go with their nodes and every head that covered them, consistently
    const db = tb.broker.services.db;
    await db.transaction(async (trx) => {
      await trx('audit_events').where('leaf_index', '>=', cutTo).delete();
      await trx('audit_tree_heads').where('tree_size', '>', cutTo).delete();
      const nodes: Array<{ level: number; idx: number }> = await trx('audit_tree_nodes').select('level', 'idx');
      for (const { level, idx } of nodes) if ((Number(idx) + 1) * 2 ** Number(level) > cutTo) await trx('audit_tree_nodes').where({ level, idx }).delete();
    });
    // the tables agree again: a from-scratch verification of the database alone passes
    expect(await tb.broker.services.auditVerifier.verify()).toMatchObject({ ok: true, treeSize: cutTo });

    const detectedAfterMs = await within((VERIFY_INTERVAL_SECONDS + 4) * 1000, async () => (await tb.request.get('/readyz')).status === 503);
    expect(detectedAfterMs, 'the truncation was not detected').toBeDefined();
    // the bound is the interval plus one pass; generous for a slow shared machine
    expect(detectedAfterMs!).toBeLessThan(VERIFY_INTERVAL_SECONDS * 1000 + 2500);
    console.info(`truncation of events, nodes and heads detected after ${detectedAfterMs} ms (KEYWARDEN_AUDIT_VERIFY_INTERVAL=${VERIFY_INTERVAL_SECONDS})`);

    const readyz = await tb.request.get('/readyz');
    expect(readyz.status).toBe(503);
    expect(readyz.body).toMatchObject({ status: 'not ready', checks: { auditChain: 'broken' } });
    expect(tb.broker.services.auditChain.failure).toMatchObject({ firstBadLeaf: cutTo });
    expect(tb.broker.services.auditChain.failure?.reason).toMatch(/the log was cut back/);
    expect(await metric(tb, 'keywarden_audit_chain_ok')).toBe(0);

    // fail closed: writes and (audited) reads are refused, nothing is recorded on the cut log
    const before = await headSeq(tb);
    expectProblem(await tb.request.post('/v1/groups').set(W).send({ name: 'after-cut' }), 503, 'audit_chain_broken');
    expectProblem(await tb.request.post('/v1/secrets').set(W).send({ name: 'after-cut', value: 'x-after-cut' }), 503, 'audit_chain_broken');
    expectProblem(await tb.request.get('/v1/client/secrets/s0').set(bearer(client.token)), 503, 'audit_chain_broken');
    expectProblem(await tb.request.post('/v1/audit/checkpoints').set(bearer(tb.adminKey)), 503, 'audit_chain_broken');
    expect(await headSeq(tb)).toBe(before);
    expect(await treeSize(tb)).toBe(cutTo);
    expect(await db('groups').where({ name: 'after-cut' }).first()).toBeUndefined();
  });
});

describe('tamper detection: the periodic full re-verification of a running instance', () => {
  let tb: TestBroker;

  beforeAll(async () => {
    // incremental passes every second, and the whole tree again every 2 s
    tb = await startTestBroker({ env: { ...fastVerify, KEYWARDEN_AUDIT_FULL_VERIFY_INTERVAL: '2' } });
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('an event edited after the watch verified it is found by the next full pass (issue 28, finding 6); audited operations then get 503', async () => {
    const W = bearer(await tb.apiKey('writer'));
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 'g' })).status).toBe(201);
    for (let i = 0; i < 4; i++) expect((await tb.request.post('/v1/secrets').set(W).send({ name: `s${i}`, value: `value-${i}`, groups: ['g'] })).status).toBe(201);
    await tb.broker.services.auditSequencer.flush();
    const size = await treeSize(tb);
    // the watch has verified every one of these leaves, incrementally
    expect(await within(5000, async () => ((await metric(tb, 'keywarden_audit_chain_verified_tree_size')) ?? 0) >= size)).toBeDefined();
    expect(await metric(tb, 'keywarden_audit_chain_ok')).toBe(1);
    const fullBefore = (await metric(tb, 'keywarden_audit_chain_last_full_verify_timestamp_seconds')) ?? 0;
    expect(fullBefore).toBeGreaterThan(0);

    // an old, already verified event is edited in the database: incremental passes never read it again
    const edited = 2;
    const changed = await tb.broker.services.db('audit_events').where({ leaf_index: edited }).update({ actor_name: 'mallory' });
    expect(changed).toBe(1);

    const detectedAfterMs = await within(10_000, async () => (await tb.request.get('/readyz')).status === 503);
    expect(detectedAfterMs, 'the edit was not detected').toBeDefined();
    console.info(`an edit of verified leaf ${edited} detected after ${detectedAfterMs} ms (KEYWARDEN_AUDIT_FULL_VERIFY_INTERVAL=2)`);
    expect(tb.broker.services.auditChain.failure).toMatchObject({ firstBadLeaf: edited });
    expect(tb.broker.services.auditChain.failure?.reason).toMatch(/does not match its leaf hash: it was edited/);
    expect((await tb.request.get('/readyz')).body).toMatchObject({ status: 'not ready', checks: { auditChain: 'broken' } });
    expect(await metric(tb, 'keywarden_audit_chain_ok')).toBe(0);
    // fail closed, as for a failed incremental pass
    expectProblem(await tb.request.post('/v1/groups').set(W).send({ name: 'after-edit' }), 503, 'audit_chain_broken');
    expectProblem(await tb.request.post('/v1/secrets').set(W).send({ name: 'after-edit', value: 'x-after-edit' }), 503, 'audit_chain_broken');
  });
});

describe('tamper detection: a full pass must still find the tree it verified before', () => {
  it('a tail cut back consistently passes a pass from scratch, but not one that extends the state verified before', async () => {
    const tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_VERIFY_INTERVAL: '0', KEYWARDEN_AUDIT_FULL_VERIFY_INTERVAL: '0' } });
    try {
      const W = bearer(await tb.apiKey('writer'));
      expect((await tb.request.post('/v1/groups').set(W).send({ name: 'g' })).status).toBe(201);
      await tb.broker.services.auditSequencer.flush();
      const cutTo = await treeSize(tb);
      for (let i = 0; i < 3; i++) expect((await tb.request.post('/v1/secrets').set(W).send({ name: `s${i}`, value: `value-${i}`, groups: ['g'] })).status).toBe(201);
      await tb.broker.services.auditSequencer.flush();
      const verifier = tb.broker.services.auditVerifier;
      const before = await verifier.verify();
      expect(before).toMatchObject({ ok: true });
      expect(before.treeSize).toBeGreaterThan(cutTo);

      await tb.broker.services.db.transaction(async (trx) => {
        await trx('audit_events').where('leaf_index', '>=', cutTo).delete();
        await trx('audit_tree_heads').where('tree_size', '>', cutTo).delete();
        const nodes: Array<{ level: number; idx: number }> = await trx('audit_tree_nodes').select('level', 'idx');
        for (const { level, idx } of nodes) if ((Number(idx) + 1) * 2 ** Number(level) > cutTo) await trx('audit_tree_nodes').where({ level, idx }).delete();
      });
      expect(await verifier.verify()).toMatchObject({ ok: true, treeSize: cutTo });
      const again = await verifier.verify({ extending: before.state });
      expect(again).toMatchObject({ ok: false, firstBadLeaf: cutTo });
      expect(again.reason).toMatch(/the log was cut back/);
    } finally {
      await tb.close();
    }
  });
});

describe('tamper detection: a new instance checks from the last signed checkpoint', () => {
  it('(b) rehashing the whole tree consistently (without the signing key) is found at startup', async () => {
    const tdb = freshDatabase();
    const rootKey = crypto.randomBytes(32).toString('base64');
    const first = await startTestBroker({ db: tdb, rootKey, keepDatabase: true });
    let second: TestBroker | undefined;
    let control: TestBroker | undefined;
    try {
      const W = bearer(await first.apiKey('writer'));
      expect((await first.request.post('/v1/groups').set(W).send({ name: 'g' })).status).toBe(201);
      expect((await first.request.post('/v1/secrets').set(W).send({ name: 's', value: 'rehash-value', groups: ['g'] })).status).toBe(201);
      const cp = await first.request.post('/v1/audit/checkpoints').set(bearer(first.adminKey));
      expect(cp.status).toBe(201);
      expect((await first.request.post('/v1/secrets/s/versions').set(W).send({ value: 'rehash-value-2' })).status).toBe(201);
      await first.close();

      // a second instance on the untouched database starts healthy
      control = await startTestBroker({ db: tdb, rootKey, keepDatabase: true });
      expect((await control.request.get('/readyz')).body.checks.auditChain).toBe('ok');
      await control.close();
      control = undefined;

      // forge: rename the actor of leaf 2, then recompute every node and the heads' roots so the tables agree
      const handle = await tdb.open();
      try {
        await rehashTree(handle.knex, (row) => (Number(row.leaf_index) === 2 ? { actor_name: 'mallory' } : undefined));
      } finally {
        await handle.close();
      }

      second = await startTestBroker({ db: tdb, rootKey, keepDatabase: true });
      const readyz = await second.request.get('/readyz');
      expect(readyz.status).toBe(503);
      expect(readyz.body.checks.auditChain).toBe('broken');
      expect(second.broker.services.auditChain.failure?.reason).toMatch(/its columns differ from what its signed checkpoint says/);
      expectProblem(await second.request.post('/v1/groups').set(bearer(second.adminKey)).send({ name: 'after-rehash' }), 503, 'audit_chain_broken');
    } finally {
      await control?.close();
      await second?.close();
      await tdb.drop();
    }
  });

  it('rows from before the migration are sealed once at startup; a missing MAC after that is tampering', async () => {
    const tdb = freshDatabase();
    const rootKey = crypto.randomBytes(32).toString('base64');
    const first = await startTestBroker({ db: tdb, rootKey, keepDatabase: true });
    let second: TestBroker | undefined;
    try {
      const W = bearer(await first.apiKey('writer'));
      expect((await first.request.post('/v1/groups').set(W).send({ name: 'g' })).status).toBe(201);
      expect((await first.request.post('/v1/secrets').set(W).send({ name: 'old', value: 'sealed-later', groups: ['g'] })).status).toBe(201);
      await first.close();
      // the database as migration 007 leaves one that existed before it
      const handle = await tdb.open();
      try {
        for (const t of ['secrets', 'access_grants', 'secret_versions']) await handle.knex(t).update({ row_mac: null });
        await handle.knex('row_integrity_state').update({ backfilled_at: null, backfilled_rows: null });
      } finally {
        await handle.close();
      }
      second = await startTestBroker({ db: tdb, rootKey, keepDatabase: true });
      const c = await second.client('c', ['g']);
      expect((await second.request.get('/v1/client/secrets/old').set(bearer(c.token))).status).toBe(200);
      expect(await second.broker.services.db('audit_events').where({ action: 'integrity.backfill' }).first()).toBeDefined();
      // the backfill ran: a MAC removed now is not sealed again but refused
      await second.broker.services.db('secrets').where({ name: 'old' }).update({ row_mac: null });
      await withinCacheBound(async () => expectProblem(await second!.request.get('/v1/client/secrets/old').set(bearer(c.token)), 503, 'integrity_failure'));
      expect(await second.broker.services.rowIntegrityScanner.backfillOnce(Date.now)).toBe(0);
    } finally {
      await second?.close();
      await tdb.drop();
    }
  });
});
