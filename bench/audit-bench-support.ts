/** What the audit benches share: rounding, percentiles, JSON lines with the load average, and a delivery's audit event. */
import crypto from 'node:crypto';
import os from 'node:os';
import type { AuditEventInput } from '../src/audit/audit-types.js';

export const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

export const loadAverage = () => os.loadavg().map((l) => round(l, 2));

/** Prints one result as a JSON line, with the load average at the time. */
export function emit(record: Record<string, unknown>): Record<string, unknown> {
  const withLoad = { ...record, loadAverage: loadAverage() };
  process.stdout.write(JSON.stringify(withLoad) + '\n');
  return withLoad;
}

export type Percentiles = { n: number; p50: number; p90: number; p99: number; max: number };

/** Nearest-rank percentiles of `xs`, rounded to `digits`; `{ n: 0 }` when there are none. */
export function percentiles(xs: number[], digits = 2): Percentiles | { n: 0 } {
  if (xs.length === 0) return { n: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const at = (p: number) => round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))], digits);
  return { n: s.length, p50: at(50), p90: at(90), p99: at(99), max: at(100) };
}

/** A client delivery's audit event, shaped as secrets-service.deliver records it. */
export function readEvent(i: number): AuditEventInput {
  return {
    actor: { kind: 'client', id: String(1 + (i % 50)), name: `bench-client-${i % 50}` },
    action: 'secret.read',
    resource: { kind: 'secret', name: `bench/secret-${i % 1000}` },
    outcome: 'allow',
    details: { version: 1 + (i % 7), via: 'client', group: 'bench' },
    request: { requestId: crypto.randomUUID(), sourceIp: '127.0.0.1', userAgent: 'keywarden-bench/1' },
  };
}
