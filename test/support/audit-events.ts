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
