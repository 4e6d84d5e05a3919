import client from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditSequencer } from '../../src/audit/audit-sequencer.js';
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
});
