// Write throughput on one secret with and without concurrent client reads of it (issue 10:
// version writes and the client-read audit batch used to deadlock on PostgreSQL). Starts the
// broker in-process on a fresh schema of the given PostgreSQL database, serves it on a loopback
// port, and runs three closed-loop phases of `--duration` seconds each:
//   1. `--writers` clients posting new versions of one secret, nothing else;
//   2. `--readers` clients reading that secret through the client API (audited deliveries), nothing else;
//   3. both at once: deliveries with concurrent version writers (issue 12).
// Prints one JSON line per phase (writes/s, reads/s, status counts, write and read latency percentiles)
// and drops the schema at the end. Load generator and broker share the process (and the CPUs),
// so compare runs made the same way on the same machine.
// Usage: node --import tsx bench/write-contention.ts [--database-url postgres://postgres@127.0.0.1:5432/test]
//          [--duration 10] [--writers 8] [--readers 16]
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { createBroker } from '../src/broker.js';
import { loadConfig } from '../src/config.js';
import { openDatabase } from '../src/db/connection.js';

const { values } = parseArgs({
  options: {
    'database-url': { type: 'string', default: process.env.KEYWARDEN_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test' },
    duration: { type: 'string', default: '10' },
    writers: { type: 'string', default: '8' },
    readers: { type: 'string', default: '16' },
  },
});
const url = values['database-url']!;
const durationMs = Number(values.duration) * 1000;
const writers = Number(values.writers);
const readers = Number(values.readers);
const schema = `kw_bench_${crypto.randomBytes(5).toString('hex')}`;
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-bench-wc-'));
const rootKey = crypto.randomBytes(32).toString('base64');

const config = loadConfig({
  KEYWARDEN_DATA_DIR: dataDir,
  KEYWARDEN_DATABASE_URL: url,
  KEYWARDEN_ROOT_KEY: rootKey,
  KEYWARDEN_LOG_LEVEL: 'silent',
  KEYWARDEN_ISSUER: 'http://127.0.0.1:8750',
});
const broker = await createBroker(config, { dbSchema: schema, logger: pino({ level: 'silent' }) });
const server = http.createServer(broker.app);
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

async function call(method: string, p: string, token: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}${p}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}
function must<T extends { status: number; body: any }>(res: T, status: number, what: string): T {
  if (res.status !== status) throw new Error(`${what}: ${res.status} ${JSON.stringify(res.body)}`);
  return res;
}

const adminKey = await broker.services.apiKeys.bootstrapAdmin();
if (!adminKey) throw new Error('fresh schema has an API key already');
const writerKey = must(await call('POST', '/v1/api-keys', adminKey, { name: 'bench-writer', role: 'writer' }), 201, 'writer key').body.key as string;
must(await call('POST', '/v1/groups', writerKey, { name: 'bench' }), 201, 'group');
must(await call('POST', '/v1/secrets', writerKey, { name: 'contended', value: 'v0', groups: ['bench'] }), 201, 'secret');
const client = must(await call('POST', '/v1/clients', adminKey, { name: 'bench-reader', groups: ['bench'] }), 201, 'client').body;
const tokenRes = await fetch(`${base}/v1/auth/token`, {
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret }),
});
const clientToken = ((await tokenRes.json()) as { access_token: string }).access_token;

async function phase(name: string, withWriters: number, withReaders: number) {
  const statuses: Record<string, number> = {};
  const count = (kind: string, status: number) => {
    statuses[`${kind} ${status}`] = (statuses[`${kind} ${status}`] ?? 0) + 1;
  };
  const latencies: number[] = [];
  const readLatencies: number[] = [];
  let writes = 0;
  let reads = 0;
  const until = Date.now() + durationMs;
  const writer = async (w: number) => {
    for (let i = 0; Date.now() < until; i++) {
      const t0 = performance.now();
      const res = await call('POST', '/v1/secrets/contended/versions', writerKey, { value: `w${w}-${i}` });
      latencies.push(performance.now() - t0);
      count('write', res.status);
      if (res.status === 201) writes++;
    }
  };
  const reader = async () => {
    while (Date.now() < until) {
      const t0 = performance.now();
      const res = await call('GET', '/v1/client/secrets/contended', clientToken);
      readLatencies.push(performance.now() - t0);
      count('read', res.status);
      if (res.status === 200) reads++;
    }
  };
  const t0 = Date.now();
  await Promise.all([...Array.from({ length: withWriters }, (_, w) => writer(w)), ...Array.from({ length: withReaders }, () => reader())]);
  const seconds = (Date.now() - t0) / 1000;
  const percentiles = (xs: number[]) => {
    if (xs.length === 0) return null;
    xs.sort((a, b) => a - b);
    const at = (p: number) => Math.round(xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] * 10) / 10;
    return { p50: at(50), p90: at(90), p99: at(99), max: at(100) };
  };
  return {
    phase: name,
    writers: withWriters,
    readers: withReaders,
    seconds,
    writesPerSecond: Math.round((writes / seconds) * 10) / 10,
    readsPerSecond: Math.round((reads / seconds) * 10) / 10,
    writeLatencyMs: percentiles(latencies),
    readLatencyMs: percentiles(readLatencies),
    loadAverage1m: os.loadavg()[0],
    statuses,
  };
}

try {
  // printed as each phase ends, so a run cut short still shows what it measured
  for (const [name, w, r] of [['writers only', writers, 0], ['readers only', 0, readers], ['writers + readers', writers, readers]] as const) {
    process.stdout.write(JSON.stringify(await phase(name, w, r)) + '\n');
  }
} finally {
  server.closeAllConnections();
  server.close();
  await broker.close();
  const admin = await openDatabase(url);
  await admin.knex.raw(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).finally(() => admin.close());
  fs.rmSync(dataDir, { recursive: true, force: true });
}
