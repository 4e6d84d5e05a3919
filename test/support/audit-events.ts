import { appendEventsProgram } from '../../src/audit/audit-dal.js';
import { sequenceProgram } from '../../src/audit/audit-tree-dal.js';
import type { AuditEvent } from '../../src/audit/audit-types.js';
import type { TestBroker } from './broker.js';

/** The highest event number recorded so far (queued events included: they are numbered at commit). */
export async function headSeq(tb: TestBroker): Promise<number> {
  const [last] = await tb.broker.services.auditQuery.query({ order: 'desc', limit: 1 });
  return last?.seq ?? 0;
}

export async function eventsAfter(tb: TestBroker, seq: number): Promise<AuditEvent[]> {
  return tb.broker.services.auditQuery.query({ order: 'asc', limit: 100_000, cursor: seq });
}

/** Runs `fn` and returns its result with the audit events recorded meanwhile (tests in a file run serially). */
export async function capture<T>(tb: TestBroker, fn: () => Promise<T>): Promise<{ result: T; events: AuditEvent[] }> {
  const before = await headSeq(tb);
  const result = await fn();
  return { result, events: await eventsAfter(tb, before) };
}

/**
 * Grows the audit log by `count` sequenced events quickly: queued through the audit DAL's own
 * program, many to a transaction, then sequenced and signed in large batches (as bench/audit-tlog.ts
 * builds its trees). Start the broker with KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS=0 so that its
 * sequencer does not race these batches. Answers the newest signed tree size.
 */
export async function bulkAuditLog(tb: TestBroker, count: number): Promise<number> {
  const { database, auditLogSigner, auditTree } = tb.broker.services;
  const perTransaction = 5000;
  for (let i = 0; i < count; i += perTransaction) {
    const inputs = Array.from({ length: Math.min(perTransaction, count - i) }, (_, k) => ({
      actor: { kind: 'client', id: String(1 + ((i + k) % 50)), name: `bulk-client-${(i + k) % 50}` },
      action: 'secret.read',
      resource: { kind: 'secret', name: `bulk/secret-${(i + k) % 1000}` },
      outcome: 'allow' as const,
      details: { version: 1 + ((i + k) % 7), via: 'client', group: 'bulk' },
      request: { requestId: `bulk-${i + k}`, sourceIp: '127.0.0.1', userAgent: 'keywarden-test/1' },
    }));
    await database.writeProgram(appendEventsProgram(inputs, [], Date.now()));
  }
  const batch = 20_000;
  for (;;) {
    const outcome = await database.writeProgram(sequenceProgram({ batch, now: Date.now(), resignAfterMs: Infinity, sign: auditLogSigner.sign, open: auditLogSigner.open }));
    if (outcome.status === 'busy') continue;
    if (outcome.status !== 'sequenced' || outcome.sequenced < batch) break;
  }
  return (await auditTree.latestHead())?.treeSize ?? 0;
}
