/** What the in-process benches share: a broker on a fresh store, rounding, percentiles, JSON lines with the load average, and a delivery's audit event. */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import type { AuditEventInput } from '../src/audit/audit-types.js';
import { createBroker, type Broker } from '../src/broker.js';
import { loadConfig } from '../src/config.js';
import { openDatabase } from '../src/db/connection.js';

export interface BenchBroker {
  broker: Broker;
  base: string;
  adminKey: string;
  /** POSTs as the admin; the answer must be 201. */
  post(p: string, body: unknown): Promise<Record<string, string>>;
  close(): Promise<void>;
}

/**
 * An in-process broker on a fresh SQLite directory, or a fresh schema of the PostgreSQL database
 * at `pgUrl` (dropped by `close`), served on a loopback port, with its bootstrap admin key.
 * `keepAliveTimeoutMs`: for benches whose set-up holds the loop for seconds, where keep-alive
 * timers firing late would reset pooled sockets under the first measured requests.
 */
export async function startBenchBroker(options: { pgUrl?: string; issuer: string; tmpPrefix: string; env?: Record<string, string>; keepAliveTimeoutMs?: number }): Promise<BenchBroker> {
  const { pgUrl } = options;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), options.tmpPrefix));
  const schema = pgUrl ? `kw_bench_${crypto.randomBytes(5).toString('hex')}` : undefined;
  const config = loadConfig({
    KEYWARDEN_DATA_DIR: dataDir,
    ...(pgUrl ? { KEYWARDEN_DATABASE_URL: pgUrl } : {}),
    KEYWARDEN_ROOT_KEY: crypto.randomBytes(32).toString('base64'),
    KEYWARDEN_LOG_LEVEL: 'silent',
    KEYWARDEN_ISSUER: options.issuer,
    ...options.env,
  });
  const broker = await createBroker(config, { ...(schema ? { dbSchema: schema } : {}), logger: pino({ level: 'silent' }) });
  const server = http.createServer(broker.app);
  if (options.keepAliveTimeoutMs !== undefined) server.keepAliveTimeout = options.keepAliveTimeoutMs;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const close = async () => {
    server.closeAllConnections();
    server.close();
    await broker.close();
    if (schema) {
      const admin = await openDatabase(pgUrl!);
      await admin.knex.raw(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).finally(() => admin.close());
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  const adminKey = await broker.services.apiKeys.bootstrapAdmin();
  if (!adminKey) {
    await close();
    throw new Error('fresh database has an API key already');
  }
  const post = async (p: string, body: unknown) => {
    const res = await fetch(`${base}${p}`, { method: 'POST', headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (res.status !== 201) throw new Error(`${p}: ${res.status} ${await res.text()}`);
    return res.json() as Promise<Record<string, string>>;
  };
  return { broker, base, adminKey, post, close };
}

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
