import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pruneAuditLog } from '../../src/audit/audit-retention.js';
import type { AuditTreeDal } from '../../src/audit/audit-tree-dal.js';
import { AuditVerifyService } from '../../src/audit/audit-verify-service.js';
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

  it('a verification pass that reads the log while retention removes its oldest events does not take that for tampering', async () => {
    const s = tb.broker.services;
    for (let i = 0; i < 20; i++) await s.audit.record({ actor: { kind: 'system', name: 'test' }, action: 'test.racing', outcome: 'allow', details: { i } });
    await s.auditSequencer.flush();
    const cutoff = Date.now() + 1;
    await new Promise<void>((resolve) => {
      const wait = () => (Date.now() > cutoff ? resolve() : setTimeout(wait, 1));
      wait();
    });
    // the pass reads pages of 4 leaves; after the first with events in it, retention runs to the
    // end before the pass reads on: the next leaves it reads have lost their events
    const tree = s.auditTree;
    let pruned: { removed: number } | undefined;
    const racing: AuditTreeDal = Object.create(tree, {
      leaves: {
        value: async function* (from: number, to: number) {
          for await (const page of tree.leaves(from, to, 4)) {
            yield page;
            if (page.some((leaf) => leaf.event)) pruned ??= await pruneAuditLog({ dal: s.auditQuery, sequencer: s.auditSequencer, audit: s.audit }, cutoff, { leavesPerStep: 3 });
          }
        },
      },
    });
    const result = await new AuditVerifyService({ tree: racing, signer: async () => s.auditLogSigner }).verify();
    expect(pruned?.removed).toBeGreaterThan(8);
    expect(result).toMatchObject({ ok: true });
  });
});
