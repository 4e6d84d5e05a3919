// The audit log as a Merkle tree (issue 12): what sequencing costs, how long an event waits
// for a signed tree head, and what a proof costs as the tree grows. The broker runs in-process
// on SQLite (a fresh data directory) or on a fresh schema of a PostgreSQL database (dropped at
// the end); proofs are timed as service calls and over HTTP on a loopback port.
//   (a) sequencing: queue `--events` events, then time the sequencer (default batch) until all
//       are leaves: wall time and this process's CPU per event (the PostgreSQL server's CPU is
//       not in it).
//   (b) commit to inclusion: a steady `--rate` events/s for `--load-seconds`, recorded the way
//       deliveries are (group commit), with the sequencer on its timer (default 500 ms); per
//       event, from its commit to the first signed head that covers it (polled every 5 ms), and
//       the broker's own keywarden_audit_inclusion_delay_seconds histogram.
//   (c) proofs: the tree built to each of `--sizes` leaves (events queued through the DAL
//       program, sequenced in batches of `--build-batch`), then `--proofs` random inclusion and
//       consistency proofs at that size, in-process and over HTTP.
// Prints JSON lines as it goes, and the whole result as one JSON document at the end (`--out FILE` too).
// Usage: node --import tsx bench/audit-tlog.ts [--database-url postgres://postgres@127.0.0.1:5432/test]
//          [--only a,b,c] [--events 50000] [--rate 500] [--load-seconds 20] [--sizes 10000,1000000]
//          [--proofs 500] [--build-batch 50000] [--out FILE]
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { appendEventsProgram } from '../src/audit/audit-dal.js';
import { sequenceProgram } from '../src/audit/audit-tree-dal.js';
import { defaultAuditOrigin, loadAuditLogSigner } from '../src/audit/audit-log-key.js';
import { verifyConsistency, verifyInclusion } from '../src/audit/merkle.js';
import { emit, loadAverage, percentiles, readEvent, round, startBenchBroker } from './audit-bench-support.js';

const { values } = parseArgs({
  options: {
    'database-url': { type: 'string' },
    only: { type: 'string', default: 'a,b,c' },
    events: { type: 'string', default: '50000' },
    rate: { type: 'string', default: '500' },
    'load-seconds': { type: 'string', default: '20' },
    sizes: { type: 'string', default: '10000,1000000' },
    proofs: { type: 'string', default: '500' },
    'build-batch': { type: 'string', default: '50000' },
    out: { type: 'string' },
  },
});
const only = new Set(values.only!.split(','));
const pgUrl = values['database-url'];
const issuer = 'http://127.0.0.1:8750';




/** A broker on a fresh SQLite directory or PostgreSQL schema, served on a loopback port, with an auditor key; torn down by `close`. */
async function startBroker(env: Record<string, string>) {
  const bench = await startBenchBroker({ pgUrl, issuer, tmpPrefix: 'kw-bench-tlog-', env });
  try {
    const auditorKey = (await bench.post('/v1/api-keys', { name: 'bench-auditor', role: 'auditor' })).key;
    return { ...bench, auditorKey };
  } catch (err) {
    await bench.close();
    throw err;
  }
}

type Bench = Awaited<ReturnType<typeof startBroker>>;

/** Queues `count` events through the DAL program, `perTransaction` to a transaction. */
async function queueEvents(b: Bench, count: number, perTransaction: number, offset = 0): Promise<number> {
  const started = performance.now();
  for (let i = 0; i < count; i += perTransaction) {
    const n = Math.min(perTransaction, count - i);
    const inputs = Array.from({ length: n }, (_, k) => readEvent(offset + i + k));
    await b.broker.services.database.writeProgram(appendEventsProgram(inputs, [], Date.now()));
  }
  return (performance.now() - started) / 1000;
}

async function queued(b: Bench): Promise<number> {
  return (await b.broker.services.auditTree.queueStats()).queued;
}

const results: Record<string, unknown> = {
  database: pgUrl ? 'postgres' : 'sqlite',
  startedAt: new Date().toISOString(),
  node: process.version,
  cpus: os.cpus().length,
  cpuModel: os.cpus()[0]?.model,
  argv: process.argv.slice(2),
};

// (a) sequencing cost per event, with the broker's own sequencer and its default batch (1000)
async function sequencingCost(): Promise<void> {
  const events = Number(values.events);
  const b = await startBroker({ KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0' });
  try {
    const queueSeconds = await queueEvents(b, events, 1000);
    const before = await queued(b);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    // flush() is one run of at most 50 batches: call it until the queue is empty
    let runs = 0;
    while ((await queued(b)) > 0) {
      await b.broker.services.auditSequencer.flush(600_000);
      runs++;
    }
    const wall = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const head = await b.broker.services.auditTree.latestHead();
    results.sequencing = emit({
      part: 'a: sequencing cost',
      queuedEvents: before,
      queueSeconds: round(queueSeconds, 2),
      flushRuns: runs,
      treeSize: head?.treeSize,
      sequencingSeconds: round(wall, 2),
      wallMicrosPerEvent: round((wall * 1e6) / before),
      processCpuMicrosPerEvent: round((cpu.user + cpu.system) / before),
      eventsPerSecond: Math.round(before / wall),
    });
  } finally {
    await b.close();
  }
}

// (b) delay from commit to inclusion under a steady load, sequencer on its default timer
async function inclusionDelay(): Promise<void> {
  const rate = Number(values.rate);
  const seconds = Number(values['load-seconds']);
  const b = await startBroker({});
  const audit = b.broker.services.audit;
  const tree = b.broker.services.auditTree;
  try {
    await b.broker.services.auditSequencer.flush();
    const committed = new Map<number, number>(); // seq -> commit time (ms, performance clock)
    const heads: Array<{ at: number; size: number }> = [];
    let polling = true;
    const poller = (async () => {
      let last = -1;
      while (polling) {
        const h = await tree.latestHead();
        const size = h?.treeSize ?? 0;
        if (size !== last) {
          heads.push({ at: performance.now(), size });
          last = size;
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    // ticks of 10 ms, each recording its share of the rate as single-event deliveries (group-committed)
    const perTick = rate / 100;
    const pending: Promise<void>[] = [];
    const start = performance.now();
    let sent = 0;
    let failed = 0;
    for (let tick = 0; performance.now() - start < seconds * 1000; tick++) {
      const due = Math.floor(((performance.now() - start) / 1000) * rate) - sent;
      for (let k = 0; k < Math.max(0, due); k++) {
        const i = sent++;
        pending.push(
          audit.recordReads([readEvent(i)], []).then(
            ([e]) => void committed.set(e.seq, performance.now()),
            () => void failed++,
          ),
        );
      }
      await new Promise((r) => setTimeout(r, Math.max(0, start + (tick + 1) * (1000 / (rate / perTick)) - performance.now())));
    }
    await Promise.all(pending);
    const loadSeconds = (performance.now() - start) / 1000;
    // wait for the timer to take the last ones
    const deadline = performance.now() + 10_000;
    while ((await queued(b)) > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 50));
    polling = false;
    await poller;
    const seqs = [...committed.keys()];
    const leafOf = new Map<number, number>();
    for (let i = 0; i < seqs.length; i += 5000) {
      const chunk = seqs.slice(i, i + 5000);
      const got = (await b.broker.services.database.reader('audit_events').select('seq', 'leaf_index').whereIn('seq', chunk)) as Array<{ seq: number | string; leaf_index: number | string | null }>;
      for (const r of got) if (r.leaf_index !== null) leafOf.set(Number(r.seq), Number(r.leaf_index));
    }
    const delays: number[] = [];
    let notIncluded = 0;
    for (const [seq, at] of committed) {
      const leaf = leafOf.get(seq);
      const head = leaf === undefined ? undefined : heads.find((h) => h.size > leaf);
      if (!head) {
        notIncluded++;
        continue;
      }
      // a head seen before the commit promise settled (the sequencer ran between commit and resolve) counts as 0
      delays.push(Math.max(0, head.at - at));
    }
    const metric = (await b.broker.services.metrics.registry.getSingleMetric('keywarden_audit_inclusion_delay_seconds')!.get()) as {
      values: Array<{ metricName?: string; value: number; labels: Record<string, string | number> }>;
    };
    const buckets = metric.values.filter((v) => v.metricName?.endsWith('_bucket')).map((v) => ({ le: v.labels.le, count: v.value }));
    const sum = metric.values.find((v) => v.metricName?.endsWith('_sum'))?.value ?? 0;
    const count = metric.values.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0;
    results.inclusionDelay = emit({
      part: 'b: commit to inclusion',
      targetRate: rate,
      achievedRate: round(committed.size / loadSeconds),
      recorded: committed.size,
      failed,
      notIncluded,
      headsSeen: heads.length,
      delayMs: percentiles(delays, 3),
      histogram: { count, meanMs: count ? round((sum / count) * 1000) : null, buckets },
    });
  } finally {
    await b.close();
  }
}

// (c) proof latency as the tree grows
async function proofLatency(): Promise<void> {
  const sizes = values.sizes!.split(',').map(Number).sort((a, b) => a - b);
  const proofs = Number(values.proofs);
  const buildBatch = Number(values['build-batch']);
  const b = await startBroker({ KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0' });
  const db = b.broker.services.database;
  const signer = await loadAuditLogSigner(b.broker.services.systemKeys, defaultAuditOrigin(issuer));
  const service = b.broker.services.auditProofs;
  const auth = { authorization: `Bearer ${b.auditorKey}` };
  const out: Record<string, unknown>[] = [];
  try {
    await b.broker.services.auditSequencer.flush();
    let size = (await b.broker.services.auditTree.latestHead())?.treeSize ?? 0;
    for (const target of sizes) {
      const queueSeconds = await queueEvents(b, target - size, 10_000, size);
      const t0 = performance.now();
      for (;;) {
        const outcome = await db.writeProgram(sequenceProgram({ batch: buildBatch, now: Date.now(), resignAfterMs: Infinity, sign: signer.sign, open: signer.open }));
        if (outcome.status !== 'sequenced' || outcome.sequenced < buildBatch) break;
      }
      const sequenceSeconds = (performance.now() - t0) / 1000;
      size = (await b.broker.services.auditTree.latestHead())!.treeSize;
      if (size !== target) throw new Error(`tree has ${size} leaves, wanted ${target}`);
      emit({ part: 'c: build', treeSize: size, queueSeconds: round(queueSeconds, 1), sequenceSeconds: round(sequenceSeconds, 1) });

      const leaves = Array.from({ length: proofs }, () => crypto.randomInt(0, size));
      const froms = Array.from({ length: proofs }, () => crypto.randomInt(1, size));
      const time = async (xs: number[], f: (x: number) => Promise<unknown>) => {
        for (const x of xs.slice(0, 20)) await f(x); // warm-up, not counted
        const ms: number[] = [];
        for (const x of xs) {
          const s = performance.now();
          await f(x);
          ms.push(performance.now() - s);
        }
        return percentiles(ms, 3);
      };
      // the build blocks this process's event loop (SQLite runs a sequencing batch in one tick), so the
      // server's keep-alive timers fire late and a pooled socket can be reset under the next request:
      // let them fire, and retry a request once on a network error (counted)
      await new Promise((r) => setTimeout(r, 200));
      let httpRetries = 0;
      const getJson = async (p: string) => {
        const res = await fetch(`${b.base}${p}`, { headers: auth }).catch(() => {
          httpRetries++;
          return fetch(`${b.base}${p}`, { headers: auth });
        });
        if (res.status !== 200) throw new Error(`${p}: ${res.status} ${await res.text()}`);
        return res.json();
      };
      // the proofs must check, or their timings mean nothing
      for (const leaf of leaves.slice(0, 10)) {
        const p = await service.inclusion({ leafIndex: leaf }, size);
        if (!verifyInclusion(Buffer.from(p.leafHash, 'hex'), leaf, size, p.hashes.map((h) => Buffer.from(h, 'hex')), Buffer.from(p.rootHash, 'hex'))) throw new Error(`inclusion proof for ${leaf} does not verify`);
      }
      for (const from of froms.slice(0, 10)) {
        const p = await service.consistency(from, size);
        if (!verifyConsistency(from, size, p.hashes.map((h) => Buffer.from(h, 'hex')), Buffer.from(p.fromRoot, 'hex'), Buffer.from(p.toRoot, 'hex'))) throw new Error(`consistency proof from ${from} does not verify`);
      }
      const sample = await service.inclusion({ leafIndex: leaves[0] }, size);
      out.push(
        emit({
          part: 'c: proofs',
          treeSize: size,
          proofs,
          inclusionHashes: sample.hashes.length,
          inclusionServiceMs: await time(leaves, (leaf) => service.inclusion({ leafIndex: leaf }, size)),
          consistencyServiceMs: await time(froms, (from) => service.consistency(from, size)),
          inclusionHttpMs: await time(leaves, (leaf) => getJson(`/v1/audit/proof/inclusion?leaf=${leaf}&treeSize=${size}`)),
          consistencyHttpMs: await time(froms, (from) => getJson(`/v1/audit/proof/consistency?from=${from}&to=${size}`)),
          httpRetries,
          build: { queueSeconds: round(queueSeconds, 1), sequenceSeconds: round(sequenceSeconds, 1) },
        }),
      );
    }
    results.proofs = out;
  } finally {
    await b.close();
  }
}

if (only.has('a')) await sequencingCost();
if (only.has('b')) await inclusionDelay();
if (only.has('c')) await proofLatency();
results.finishedAt = new Date().toISOString();
results.loadAverageAtEnd = loadAverage();
if (values.out) fs.writeFileSync(values.out, JSON.stringify(results, null, 2) + '\n');
process.stdout.write(JSON.stringify(results) + '\n');
