import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pruneAuditLog } from '../../src/audit/audit-retention.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * Retention removes events in steps, oldest first, each its own transaction with its own
 * audit.prune event (issue 27, target 4: no long synchronous DELETE on SQLite). After it the
 * log is a pruned prefix that verification accepts, whatever the step size.
 */
describe('audit retention in steps', () => {
  let tb: TestBroker;
  beforeAll(async () => {
    tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0' } });
  });
  afterAll(() => tb?.close());

  it('removes every event before the cut-off in steps of 4 leaves, one audit.prune event per step, and the log still verifies', async () => {
    const s = tb.broker.services;
    for (let i = 0; i < 13; i++) await s.audit.record({ actor: { kind: 'system', name: 'test' }, action: 'test.old', outcome: 'allow', details: { i } });
    await s.auditSequencer.flush();
    const cutoff = Date.now() + 1;
    await new Promise<void>((resolve) => {
      const wait = () => (Date.now() > cutoff ? resolve() : setTimeout(wait, 1));
      wait();
    });
    const oldCount = (await s.auditQuery.query({ order: 'asc', limit: 1000 })).filter((e) => e.ts < cutoff).length;

    const result = await pruneAuditLog({ dal: s.auditQuery, sequencer: s.auditSequencer, audit: s.audit }, cutoff, { leavesPerStep: 4 });
    expect(result).toEqual({ removed: oldCount, throughLeaf: oldCount - 1 });
    await s.auditSequencer.flush();
    const remaining = await s.auditQuery.query({ order: 'asc', limit: 1000 });
    expect(remaining[0].leafIndex).toBe(oldCount);
    const steps = remaining.filter((e) => e.action === 'audit.prune');
    const ends = Array.from({ length: Math.ceil(oldCount / 4) }, (_, i) => Math.min(4 * (i + 1), oldCount) - 1);
    expect(steps.map((e) => e.details.throughLeaf)).toEqual(ends);
    expect(steps.reduce((n, e) => n + (e.details.removed as number), 0)).toBe(oldCount);
    expect((await s.auditVerifier.verify()).ok).toBe(true);
  });
});
