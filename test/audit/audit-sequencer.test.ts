import client from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditSequencer } from '../../src/audit/audit-sequencer.js';
import { queuedLeafHash, sequenceProgram } from '../../src/audit/audit-tree-dal.js';
import { silentLogger, startTestBroker, type TestBroker } from '../support/broker.js';

describe('the audit sequencer', () => {
  let tb: TestBroker;
  beforeAll(async () => {
    tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0' } });
  });
  afterAll(() => tb?.close());

  it('flush() drains a queue longer than one run of batches, in seq order, with one signed head per batch', async () => {
    const s = tb.broker.services;
    // tiny batches: 120 events need 60 of them, more than one run takes
    const sequencer = new AuditSequencer({ db: s.database, tree: s.auditTree, signer: async () => s.auditLogSigner, clock: Date.now, logger: silentLogger, registry: new client.Registry(), intervalMs: 0, resignAfterMs: 0, batch: 2 });
    await s.auditSequencer.flush();
    // the broker's own sequencer would take a batch's worth of the queue (its noteAppended)
    await s.auditSequencer.stop();
    const before = (await s.auditTree.latestHead())!;
    await Promise.all(Array.from({ length: 120 }, (_, i) => s.audit.record({ actor: { kind: 'system', name: 'test' }, action: 'test.queued', outcome: 'allow', details: { i } })));
    expect((await s.auditTree.queueStats()).queued).toBe(120);
    const last = await sequencer.flush();
    expect(last).toMatchObject({ treeSize: before.treeSize + 120 });
    expect((await s.auditTree.queueStats()).queued).toBe(0);
    const events = (await s.auditQuery.query({ action: 'test.queued', order: 'asc', limit: 1000 })).map((e) => [e.seq, e.leafIndex]);
    // leaves follow the event numbers (one writer: numbers are in commit order)
    expect(events.map(([, leaf]) => leaf)).toEqual(events.map((_, i) => before.treeSize + i));
    const heads = await s.auditTree.headsBetween(before.treeSize, before.treeSize + 120);
    expect(heads.map((h) => h.treeSize)).toEqual(Array.from({ length: 60 }, (_, i) => before.treeSize + 2 * (i + 1)));
    expect((await s.auditVerifier.verify()).ok).toBe(true);
  });

  it('sequences with leaf hashes computed before the transaction, and hashes in it the events that came after', async () => {
    const s = tb.broker.services;
    await s.auditSequencer.flush();
    await s.auditSequencer.stop(); // nothing but this test sequences
    const record = (i: number) => s.audit.record({ actor: { kind: 'system', name: 'test' }, action: 'test.prehashed', outcome: 'allow', details: { i } });
    for (let i = 0; i < 5; i++) await record(i);
    // hashed before the transaction: the five queued now; three more are queued after that
    const leafHashes = new Map((await s.auditTree.queuedEvents(100)).map((row) => [Number(row.seq), queuedLeafHash(row)]));
    expect(leafHashes.size).toBe(5);
    for (let i = 5; i < 8; i++) await record(i);
    const before = (await s.auditTree.latestHead())!;
    const outcome = await s.database.writeProgram(sequenceProgram({ batch: 100, now: Date.now(), resignAfterMs: Infinity, sign: s.auditLogSigner.sign, open: s.auditLogSigner.open, leafHashes }));
    expect(outcome).toMatchObject({ status: 'sequenced', sequenced: 8, treeSize: before.treeSize + 8 });
    // each leaf commits to its own event, whichever way its hash was computed
    expect(await s.auditVerifier.verify()).toMatchObject({ ok: true });
  });
});
