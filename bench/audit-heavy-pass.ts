// Issue 28, finding 1: what an auditor's pass over the whole audit log costs secret deliveries.
// A log of `--events` events is built (queued through the DAL program, sequenced in large
// batches, as bench/audit-tlog.ts does), then `--workers` clients deliver in a loop (a new
// access token, then GET the secret) over a loopback port, in three phases: idle for
// `--idle-seconds`; while an auditor runs POST /v1/audit/verify {}; while an auditor downloads
// GET /v1/audit/export (read to the end). Per phase: delivery latency percentiles, how many
// deliveries, the longest /healthz answer (probed every 50 ms), the event loop's delay (p99 and
// max: the longest the loop was held, node:perf_hooks monitorEventLoopDelay at 5 ms resolution),
// and how long the pass took.
// The clients run in a worker thread (bench/delivery-load-worker.mjs) with their own event loop,
// so the timings are the broker's: the main thread runs only the broker and the auditor's call.
// Prints JSON lines as it goes, and the whole result as one JSON document at the end (`--out FILE` too).
// Usage: node --import tsx bench/audit-heavy-pass.ts [--database-url postgres://postgres@127.0.0.1:5432/test]
//          [--events 1000000] [--workers 4] [--idle-seconds 5] [--out FILE]
import fs from 'node:fs';
import os from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { appendEventsProgram } from '../src/audit/audit-dal.js';
import { sequenceProgram } from '../src/audit/audit-tree-dal.js';
import { emit, percentiles, readEvent, round, startBenchBroker } from './audit-bench-support.js';

const { values } = parseArgs({
  options: {
    'database-url': { type: 'string' },
    events: { type: 'string', default: '1000000' },
    workers: { type: 'string', default: '4' },
    'idle-seconds': { type: 'string', default: '5' },
    out: { type: 'string' },
  },
});
const pgUrl = values['database-url'];
const events = Number(values.events);
const workers = Number(values.workers);
const idleSeconds = Number(values['idle-seconds']);
const issuer = 'http://127.0.0.1:8750';




async function main(): Promise<void> {
  const bench = await startBenchBroker({
    pgUrl,
    issuer,
    tmpPrefix: 'kw-bench-heavy-',
    // only the measured passes: no background verification, sequencing on demand, no budget in the way
    env: {
      KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0',
      KEYWARDEN_AUDIT_VERIFY_INTERVAL: '0',
      KEYWARDEN_AUDIT_FULL_VERIFY_INTERVAL: '0',
      KEYWARDEN_AUDIT_PASS_BUDGET_MS: '86400000',
    },
    // building the log holds the loop for seconds (SQLite sequences a batch in one tick)
    keepAliveTimeoutMs: 120_000,
  });
  const { broker, base, post } = bench;
  const results: Record<string, unknown> = { database: pgUrl ? 'postgres' : 'sqlite', events, workers, node: process.version, cpus: os.cpus().length, startedAt: new Date().toISOString() };
  try {
    const auditorKey = (await post('/v1/api-keys', { name: 'bench-auditor', role: 'auditor' })).key;
    await post('/v1/groups', { name: 'bench' });
    await post('/v1/secrets', { name: 'bench-secret', value: 'bench-value', groups: ['bench'] });
    const client = await post('/v1/clients', { name: 'bench-app', groups: ['bench'] });

    // the log
    const db = broker.services.database;
    const signer = broker.services.auditLogSigner;
    const t0 = performance.now();
    for (let i = 0; i < events; i += 10_000) {
      const inputs = Array.from({ length: Math.min(10_000, events - i) }, (_, k) => readEvent(i + k));
      await db.writeProgram(appendEventsProgram(inputs, [], Date.now()));
    }
    const batch = 50_000;
    for (;;) {
      const outcome = await db.writeProgram(sequenceProgram({ batch, now: Date.now(), resignAfterMs: Infinity, sign: signer.sign, open: signer.open }));
      if (outcome.status === 'busy') continue;
      if (outcome.status !== 'sequenced' || outcome.sequenced < batch) break;
    }
    const treeSize = (await broker.services.auditTree.latestHead())?.treeSize ?? 0;
    results.build = emit({ part: 'build', treeSize, seconds: round((performance.now() - t0) / 1000) });
    await new Promise((r) => setTimeout(r, 500));

    /** Deliveries and /healthz probes (in a worker thread: bench/delivery-load-worker.mjs) until `during` settles; answers their timings and what `during` answered. */
    const phase = async (name: string, during: () => Promise<Record<string, unknown>>) => {
      const load = new Worker(new URL('./delivery-load-worker.mjs', import.meta.url), { workerData: { base, workers, clientId: client.clientId, clientSecret: client.clientSecret } });
      const done = new Promise<{ latencies: number[]; health: number[] }>((resolve, reject) => {
        load.on('message', (m: { latencies?: number[]; health?: number[] }) => {
          if (m.latencies && m.health) resolve({ latencies: m.latencies, health: m.health });
        });
        load.on('error', reject);
        load.on('exit', (code) => reject(new Error(`the load worker exited with ${code}`)));
      });
      await new Promise<void>((resolve, reject) => {
        load.once('message', () => resolve());
        load.once('error', reject);
      });
      const loopDelay = monitorEventLoopDelay({ resolution: 5 });
      loopDelay.enable();
      const started = performance.now();
      const pass = await during();
      loopDelay.disable();
      const passSeconds = round((performance.now() - started) / 1000, 2);
      load.postMessage('stop');
      const { latencies, health } = await done;
      await load.terminate();
      return emit({ part: name, passSeconds, ...pass, deliveryMs: percentiles(latencies), healthzMaxMs: round(Math.max(0, ...health), 1), loopDelayMs: { p99: round(loopDelay.percentile(99) / 1e6), max: round(loopDelay.max / 1e6) }, deliveriesPerSecond: round(latencies.length / passSeconds) });
    };
    const auditor = { authorization: `Bearer ${auditorKey}` };

    results.idle = await phase('idle', async () => {
      await new Promise((r) => setTimeout(r, idleSeconds * 1000));
      return {};
    });
    results.verify = await phase('during POST /v1/audit/verify', async () => {
      const res = await fetch(`${base}/v1/audit/verify`, { method: 'POST', headers: { ...auditor, 'content-type': 'application/json' }, body: '{}' });
      const body = (await res.json()) as { ok?: boolean; leavesChecked?: number };
      return { status: res.status, ok: body.ok, leavesChecked: body.leavesChecked };
    });
    results.export = await phase('during GET /v1/audit/export', async () => {
      const res = await fetch(`${base}/v1/audit/export`, { headers: auditor });
      let bytes = 0;
      for await (const chunk of res.body!) bytes += (chunk as Uint8Array).length;
      return { status: res.status, megabytes: round(bytes / 1e6) };
    });
  } finally {
    await bench.close();
  }
  const doc = JSON.stringify(results, null, 2);
  process.stdout.write(doc + '\n');
  if (values.out) fs.writeFileSync(values.out, doc + '\n');
}

await main();
