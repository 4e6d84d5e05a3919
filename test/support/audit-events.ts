import type { AuditEvent } from '../../src/audit/audit-types.js';
import type { TestBroker } from './broker.js';

export async function headSeq(tb: TestBroker): Promise<number> {
  return (await tb.broker.services.auditQuery.head()).seq;
}

export async function eventsAfter(tb: TestBroker, seq: number): Promise<AuditEvent[]> {
  const out: AuditEvent[] = [];
  for await (const e of tb.broker.services.auditQuery.range(seq + 1, undefined)) out.push(e);
  return out;
}

/** Runs `fn` and returns its result with the audit events recorded meanwhile (tests in a file run serially). */
export async function capture<T>(tb: TestBroker, fn: () => Promise<T>): Promise<{ result: T; events: AuditEvent[] }> {
  const before = await headSeq(tb);
  const result = await fn();
  return { result, events: await eventsAfter(tb, before) };
}
