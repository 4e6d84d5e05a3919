/**
 * Issue 12: two broker instances on one PostgreSQL database build one audit tree.
 *
 * Both sequence every 20 ms while audited writes go to both. The advisory lock lets one
 * sequencing transaction in at a time, so: leaf indexes are 0..N-1, each once; tree heads only
 * grow (a re-signed head keeps its size and root); every head verifies; events written through
 * either instance have inclusion proofs that an independent RFC 9162 verifier accepts; and both
 * instances publish the same newest head. Then one instance stops in the middle of the load and
 * the other carries on sequencing by itself, within seconds.
 *
 * SQLite is one file with one writer per process: two brokers on it are not a supported setup,
 * so there is nothing to test there.
 */
import crypto from 'node:crypto';
import supertest from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dialectUnderTest, startTestBroker, type TestBroker } from '../support/broker.js';
import { eventLeaf, openCheckpoint, verifyInclusionRfc } from '../support/independent-tlog-verifier.js';

const fast = { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '20' };
const H = (key: string) => ({ Authorization: `Bearer ${key}` });

/** Audited writes on one instance until `stop()` is true: group creations, each named after its instance. */
async function load(tb: TestBroker, key: string, tag: string, workers: number, stop: () => boolean): Promise<{ acked: string[]; failures: string[] }> {
  const acked: string[] = [];
  const failures: string[] = [];
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let i = 0; !stop(); i++) {
        const name = `${tag}-w${w}-${i}`;
        const res = await supertest(tb.broker.app).post('/v1/groups').set(H(key)).send({ name });
        if (res.status === 201) acked.push(name);
        else failures.push(`${name}: ${res.status} ${res.text.slice(0, 200)}`);
      }
    }),
  );
  return { acked, failures };
}

interface EventRow {
  seq: number;
  leafIndex: number | null;
  action: string;
  name: string | null;
}

async function eventRows(tb: TestBroker): Promise<EventRow[]> {
  const rows = (await tb.broker.services.db('audit_events').select('seq', 'leaf_index', 'action', 'resource_name').orderBy('seq')) as Array<Record<string, any>>;
  return rows.map((r) => ({ seq: Number(r.seq), leafIndex: r.leaf_index === null ? null : Number(r.leaf_index), action: r.action, name: r.resource_name }));
}

async function heads(tb: TestBroker): Promise<Array<{ id: number; size: number; root: string }>> {
  const rows = (await tb.broker.services.db('audit_tree_heads').select('id', 'tree_size', 'root_hash').orderBy('id')) as Array<Record<string, any>>;
  return rows.map((r) => ({ id: Number(r.id), size: Number(r.tree_size), root: r.root_hash }));
}

function expectLeafIndexesDense(events: EventRow[]): number {
  const indexes = events.filter((e) => e.leafIndex !== null).map((e) => e.leafIndex!).sort((a, b) => a - b);
  expect(indexes.filter((v, i) => v !== i).slice(0, 10), 'leaf indexes are 0..N-1, each once').toEqual([]);
  return indexes.length;
}

function expectHeadsGrow(list: Array<{ id: number; size: number; root: string }>): void {
  const bad: string[] = [];
  for (let i = 1; i < list.length; i++) {
    const [p, h] = [list[i - 1], list[i]];
    if (h.size < p.size) bad.push(`head ${h.id} (size ${h.size}) after head ${p.id} (size ${p.size})`);
    if (h.size === p.size && h.root !== p.root) bad.push(`heads ${p.id} and ${h.id} both size ${h.size} with different roots`);
  }
  expect(bad, 'heads in id order: sizes never shrink, a re-signed size keeps its root').toEqual([]);
}

describe.skipIf(dialectUnderTest !== 'postgres')('two instances sequence one audit tree (PostgreSQL; SQLite has a single writer process)', () => {
  let a: TestBroker;
  let b: TestBroker;
  let keyA: string;
  let keyB: string;
  let auditor: string;
  let aClosed = false;

  beforeAll(async () => {
    const rootKey = crypto.randomBytes(32).toString('base64');
    // a stops mid-test, so b owns (and drops) the database
    a = await startTestBroker({ rootKey, keepDatabase: true, env: fast });
    b = await startTestBroker({ db: a.db, rootKey, env: fast });
    keyA = await a.apiKey('writer');
    keyB = await b.apiKey('writer');
    auditor = await a.apiKey('auditor');
  }, 60_000);
  afterAll(async () => {
    if (!aClosed) await a?.close();
    await b?.close();
  });

  it('concurrent writes on both: dense leaf indexes, growing heads, proofs via either, one newest head', async () => {
    let stop = false;
    const runs = [load(a, keyA, 'two-a', 6, () => stop), load(b, keyB, 'two-b', 6, () => stop)];
    await new Promise((r) => setTimeout(r, 3000));
    stop = true;
    const [ra, rb] = await Promise.all(runs);
    expect([...ra.failures, ...rb.failures]).toEqual([]);
    expect(ra.acked.length).toBeGreaterThan(20);
    expect(rb.acked.length).toBeGreaterThan(20);

    // both sequencers took turns: heads were written in the load, by whichever held the lock
    await a.broker.services.auditSequencer.flush();
    await b.broker.services.auditSequencer.flush();
    const events = await eventRows(a);
    expect(events.filter((e) => e.leafIndex === null), 'still queued after both flushed').toEqual([]);
    const n = expectLeafIndexesDense(events);
    const list = await heads(a);
    expect(list.length).toBeGreaterThan(5);
    expectHeadsGrow(list);
    expect(Math.max(...list.map((h) => h.size))).toBe(n);

    // every acknowledged write has exactly one event
    const creates = new Map<string, number>();
    for (const e of events) if (e.action === 'group.create' && e.name) creates.set(e.name, (creates.get(e.name) ?? 0) + 1);
    expect([...ra.acked, ...rb.acked].filter((name) => creates.get(name) !== 1)).toEqual([]);

    // both publish the same newest head, whose signature verifies
    const [cpA, cpB] = await Promise.all([a, b].map((tb) => supertest(tb.broker.app).get('/v1/audit/checkpoint').set(H(auditor))));
    expect(cpA.status).toBe(200);
    expect(cpB.body).toEqual(cpA.body);
    expect(cpA.body.treeSize).toBe(n);
    const head = openCheckpoint(cpA.body.checkpoint, cpA.body.verifierKey);
    expect(head.size).toBe(n);

    // inclusion proofs of events written via either instance, asked of both
    const bySeq = new Map(events.map((e) => [e.name, e]));
    const sample = [...ra.acked.filter((_, i) => i % 7 === 0), ...rb.acked.filter((_, i) => i % 7 === 0)];
    for (const name of sample) {
      const ev = bySeq.get(name)!;
      for (const tb of [a, b]) {
        const res = await supertest(tb.broker.app).get('/v1/audit/proof/inclusion').query({ seq: ev.seq, treeSize: n }).set(H(auditor));
        expect(res.status, res.text).toBe(200);
        expect(res.body.leafIndex).toBe(ev.leafIndex);
        const proof = res.body.hashes.map((h: string) => Buffer.from(h, 'hex'));
        expect(verifyInclusionRfc(ev.leafIndex!, n, eventLeaf(res.body.event), proof, head.root), `inclusion of ${name}`).toBe(true);
      }
    }

    for (const tb of [a, b]) {
      const res = await supertest(tb.broker.app).post('/v1/audit/verify').set(H(auditor)).send({});
      expect(res.status).toBe(200);
      expect(res.body, JSON.stringify(res.body)).toMatchObject({ ok: true });
      expect(res.body.treeSize).toBeGreaterThanOrEqual(n);
    }
  }, 120_000);

  it('one instance stops in the middle of the load: the other keeps sequencing, alone, within seconds', async () => {
    let stopA = false;
    let stopB = false;
    const runA = load(a, keyA, 'stop-a', 4, () => stopA);
    const runB = load(b, keyB, 'stop-b', 4, () => stopB);
    await new Promise((r) => setTimeout(r, 1000));
    stopA = true;
    const ra = await runA;
    // closing waits for a's sequencing run in progress; from here on only b sequences
    aClosed = true;
    await a.close();
    const sizeAtStop = Math.max(...(await heads(b)).map((h) => h.size));
    await new Promise((r) => setTimeout(r, 1500));
    stopB = true;
    const rb = await runB;
    expect([...ra.failures, ...rb.failures]).toEqual([]);

    // no flush: b's timer alone must sequence everything, a's leftovers included
    const deadline = Date.now() + 5000;
    let events = await eventRows(b);
    while (events.some((e) => e.leafIndex === null) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      events = await eventRows(b);
    }
    expect(events.filter((e) => e.leafIndex === null).length, 'events b left queued 5 s after the load').toBe(0);
    const n = expectLeafIndexesDense(events);
    const list = await heads(b);
    expectHeadsGrow(list);
    expect(Math.max(...list.map((h) => h.size))).toBe(n);
    expect(n, 'b sequenced the writes made after a stopped').toBeGreaterThan(sizeAtStop);
    const creates = new Set(events.filter((e) => e.action === 'group.create' && e.leafIndex !== null).map((e) => e.name));
    expect([...ra.acked, ...rb.acked].filter((name) => !creates.has(name))).toEqual([]);

    const res = await supertest(b.broker.app).post('/v1/audit/verify').set(H(auditor)).send({});
    expect(res.body, JSON.stringify(res.body)).toMatchObject({ ok: true });
  }, 60_000);
});
