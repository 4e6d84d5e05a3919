// Issue 27, target 4: event-loop stalls from background work while the sequencer is kept busy.
// An in-process broker (SQLite, or PostgreSQL with --database-url) with a prebuilt log of
// `--events` events and `--secrets` secrets (rows for the integrity scan) serves `--workers`
// delivering clients (a new token, then GET the secret; each delivery queues audit events, so
// the sequencer runs all the time) and a Prometheus-like scraper of /metrics every `--scrape-ms`,
// for `--seconds`. Meanwhile the background work runs as configured for production, only more
// often: the sequencer on its timer and on a batch's worth of events, the watch's incremental
// verification and row-integrity scan every `--verify-interval` s, a full verification every
// `--full-verify-interval` s, and one retention pass (pruneAuditLog, as `keywarden audit prune`
// runs it) at half time over the events older than 5 s.
// The clients run in a process of their own (bench/delivery-load-process.mjs), so the loop and
// the CPU time measured are the broker's. On a shared machine a gap of the loop is also time the
// process waited for a core (or the disk): each stall records the main thread's CPU time over it
// (cpuMs, from /proc/thread-self/schedstat), and `over20msOfCpu` counts the stalls that were
// 20 ms of work on the loop. Measured: the loop delay over the run (perf_hooks.monitorEventLoopDelay at 1 ms:
// p50/p99/max), and every stall over `--stall-ms` (a 1 ms timer chain that came late), with what
// was running: the background activities open at the time (sequencer run, watch pass, verify,
// integrity scan, retention, metrics scrape) and the longest synchronous SQLite statement or
// fast-path transaction since the previous tick (on SQLite, statements run on the loop).
// Usage: node --import tsx bench/loop-stalls.ts [--database-url postgres://postgres@127.0.0.1:5432/test]
//          [--seconds 60] [--workers 4] [--events 20000] [--secrets 2000] [--skip-prune] [--out FILE]
import fs from 'node:fs';
import os from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import { appendEventsProgram } from '../src/audit/audit-dal.js';
import { sequenceProgram } from '../src/audit/audit-tree-dal.js';
import { AuditSequencer } from '../src/audit/audit-sequencer.js';
import { AuditChainWatch } from '../src/audit/audit-watch.js';
import { AuditVerifyService } from '../src/audit/audit-verify-service.js';
import { RowIntegrityScanner } from '../src/secrets/row-integrity-scanner.js';
import { pruneAuditLog } from '../src/audit/audit-retention.js';
import { SqliteFastPath } from '../src/db/sqlite-fast-path.js';
import { emit, percentiles, readEvent, round, startBenchBroker } from './audit-bench-support.js';

const { values } = parseArgs({
  options: {
    'database-url': { type: 'string' },
    seconds: { type: 'string', default: '60' },
    workers: { type: 'string', default: '4' },
    events: { type: 'string', default: '20000' },
    secrets: { type: 'string', default: '2000' },
    'verify-interval': { type: 'string', default: '2' },
    'full-verify-interval': { type: 'string', default: '20' },
    'scrape-ms': { type: 'string', default: '1000' },
    'stall-ms': { type: 'string', default: '5' },
    // the code before issue 27's retention steps took a pass running during retention for tampering (audit_chain_broken)
    'skip-prune': { type: 'boolean', default: false },
    out: { type: 'string' },
  },
});
const pgUrl = values['database-url'];
const seconds = Number(values.seconds);
const workers = Number(values.workers);
const events = Number(values.events);
const secretCount = Number(values.secrets);
const stallMs = Number(values['stall-ms']);
const issuer = 'http://127.0.0.1:8750';

// ---- attribution: which background activities are open, and the longest synchronous step ----
const open = new Map<string, number>();
/** Wraps an async method so that its activity counts as open while it runs. */
function track(proto: object, method: string, label: string): void {
  const target = proto as Record<string, (...args: unknown[]) => unknown>;
  const original = target[method];
  target[method] = function (this: unknown, ...args: unknown[]) {
    open.set(label, (open.get(label) ?? 0) + 1);
    const close = () => open.set(label, (open.get(label) ?? 1) - 1);
    try {
      const result = original.apply(this, args);
      if (result instanceof Promise) return result.finally(close);
      close();
      return result;
    } catch (err) {
      close();
      throw err;
    }
  };
}
track(AuditSequencer.prototype, 'run', 'sequencer');
track(AuditChainWatch.prototype, 'check', 'watch');
track(AuditVerifyService.prototype, 'verify', 'verify');
track(RowIntegrityScanner.prototype, 'scan', 'integrity-scan');

/** The longest synchronous database step since the last tick of the stall detector. */
let longestStep: { ms: number; what: string } | undefined;
const stepStats = new Map<string, { n: number; totalMs: number; maxMs: number }>();
function noteStep(what: string, ms: number): void {
  if (!longestStep || ms > longestStep.ms) longestStep = { ms, what };
  const s = stepStats.get(what) ?? { n: 0, totalMs: 0, maxMs: 0 };
  s.n++;
  s.totalMs += ms;
  s.maxMs = Math.max(s.maxMs, ms);
  stepStats.set(what, s);
}
const sqlLabel = (sql: string) => sql.replace(/\s+/g, ' ').replace(/\((?:\?, )+\?\)(?:, \((?:\?, )+\?\))*/g, '(…)').slice(0, 90);
// every SQLite statement (knex's connection and the fast path both use better-sqlite3)
const statementProto = (BetterSqlite3 as unknown as { prototype: { prepare(sql: string): object } }).prototype;
const prepare = statementProto.prepare;
const wrappedStatements = new WeakSet<object>();
statementProto.prepare = function (this: unknown, sql: string) {
  const stmt = prepare.call(this, sql) as Record<string, (...args: unknown[]) => unknown>;
  const proto = Object.getPrototypeOf(stmt) as Record<string, (...args: unknown[]) => unknown>;
  if (!wrappedStatements.has(proto)) {
    wrappedStatements.add(proto);
    for (const m of ['all', 'get', 'run']) {
      const original = proto[m];
      proto[m] = function (this: { source: string }, ...args: unknown[]) {
        const t = performance.now();
        try {
          return original.apply(this, args);
        } finally {
          const ms = performance.now() - t;
          if (ms >= 1) noteStep(`sql: ${sqlLabel(this.source)}`, ms);
        }
      };
    }
  }
  return stmt;
};
// a fast-path transaction runs a whole statement program (a sequencing batch, a delivery's audit rows) in one tick
const tryImmediate = SqliteFastPath.prototype.tryImmediate;
SqliteFastPath.prototype.tryImmediate = function <T>(this: SqliteFastPath, fn: () => T) {
  const t = performance.now();
  try {
    return tryImmediate.call(this, fn) as { value: T } | undefined;
  } finally {
    const ms = performance.now() - t;
    if (ms >= 1) noteStep(open.get('sequencer') ? 'fast-path transaction (sequencer open)' : 'fast-path transaction', ms);
  }
};

/**
 * CPU time of this (the main) thread in ms: Linux's /proc/thread-self/schedstat (nanoseconds on a
 * core). Elsewhere the whole process's, which also counts GC helpers and the libuv pool.
 */
function mainThreadCpuMs(): number {
  try {
    return Number(fs.readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1e6;
  } catch {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  }
}

async function main(): Promise<void> {
  const bench = await startBenchBroker({
    pgUrl,
    issuer,
    tmpPrefix: 'kw-bench-stalls-',
    env: { KEYWARDEN_AUDIT_VERIFY_INTERVAL: values['verify-interval']!, KEYWARDEN_AUDIT_FULL_VERIFY_INTERVAL: values['full-verify-interval']! },
    keepAliveTimeoutMs: 120_000,
  });
  const { broker, base, post } = bench;
  track(broker.services.metrics.registry, 'metrics', 'metrics-scrape');
  const results: Record<string, unknown> = { database: pgUrl ? 'postgres' : 'sqlite', seconds, workers, events, secrets: secretCount, node: process.version, cpus: os.cpus().length, startedAt: new Date().toISOString() };
  try {
    await post('/v1/groups', { name: 'bench' });
    await post('/v1/secrets', { name: 'bench-secret', value: 'bench-value', groups: ['bench'] });
    const client = await post('/v1/clients', { name: 'bench-app', groups: ['bench'] });

    // rows for the integrity scan, through the service (MACs and all); then the older log
    const t0 = performance.now();
    const principal = { kind: 'operator', role: 'admin', id: 'bench', name: 'bench', via: 'api-key' } as const;
    let nextSecret = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (nextSecret < secretCount) {
          const i = nextSecret++;
          await broker.services.secrets.create(principal, { requestId: `seed-${i}`, sourceIp: null, userAgent: 'bench' }, { name: `seed-${i}`, content: Buffer.from(`value-${i}`), groups: i % 10 === 0 ? ['bench'] : [], labels: {} });
        }
      }),
    );
    const db = broker.services.database;
    const signer = broker.services.auditLogSigner;
    for (let i = 0; i < events; i += 10_000) {
      const inputs = Array.from({ length: Math.min(10_000, events - i) }, (_, k) => readEvent(i + k));
      await db.writeProgram(appendEventsProgram(inputs, [], Date.now() - 3_600_000));
    }
    for (;;) {
      const outcome = await db.writeProgram(sequenceProgram({ batch: 50_000, now: Date.now(), resignAfterMs: Infinity, sign: signer.sign, open: signer.open }));
      if (outcome.status === 'busy') continue;
      if (outcome.status !== 'sequenced' || outcome.sequenced < 50_000) break;
    }
    results.build = emit({ part: 'build', treeSize: (await broker.services.auditTree.latestHead())?.treeSize ?? 0, seconds: round((performance.now() - t0) / 1000) });
    await new Promise((r) => setTimeout(r, 500));
    stepStats.clear();

    // the clients in a process of their own: the broker's CPU time is then its own (stall.cpuMs)
    const load = fork(fileURLToPath(new URL('./delivery-load-process.mjs', import.meta.url)), [JSON.stringify({ base, workers, clientId: client.clientId, clientSecret: client.clientSecret, scrapeMs: Number(values['scrape-ms']) })], { execArgv: [] });
    const done = new Promise<{ latencies: number[]; health: number[]; scrapes: number[] }>((resolve, reject) => {
      load.on('message', (m: { latencies?: number[]; health?: number[]; scrapes?: number[] }) => {
        if (m.latencies && m.health && m.scrapes) resolve({ latencies: m.latencies, health: m.health, scrapes: m.scrapes });
      });
      load.on('error', reject);
      load.on('exit', (code) => {
        if (code) reject(new Error(`the load process exited with ${code}`));
      });
    });
    await new Promise<void>((resolve, reject) => {
      load.once('message', () => resolve());
      load.once('error', reject);
    });

    const loopDelay = monitorEventLoopDelay({ resolution: 1 });
    loopDelay.enable();
    const stalls: Array<{ atS: number; ms: number; cpuMs: number; open: string[]; longestStep?: { ms: number; what: string } }> = [];
    const started = performance.now();
    const cpuStarted = process.cpuUsage();
    let last = started;
    let lastCpu = mainThreadCpuMs();
    let ticking = true;
    const tick = () => {
      const now = performance.now();
      // a 1 ms timer that fires `gap` ms after the previous one: the loop was held for about gap - 1 ms
      const gap = now - last - 1;
      const cpu = mainThreadCpuMs();
      if (gap > stallMs) {
        // the main thread's CPU time over the gap: close to the gap for work on the loop, far below
        // it when the thread was waiting for a core (other processes on the machine) or the disk
        const cpuMs = cpu - lastCpu;
        stalls.push({ atS: round((now - started) / 1000, 2), ms: round(gap), cpuMs: round(cpuMs), open: [...open].filter(([, n]) => n > 0).map(([k]) => k), ...(longestStep ? { longestStep: { ms: round(longestStep.ms), what: longestStep.what } } : {}) });
      }
      longestStep = undefined;
      last = now;
      lastCpu = cpu;
      if (ticking) setTimeout(tick, 1);
    };
    setTimeout(tick, 1);
    const sequencedBefore = (await broker.services.auditTree.latestHead())?.treeSize ?? 0;
    let retention: Record<string, unknown> | undefined;
    await new Promise((r) => setTimeout(r, (seconds * 1000) / 2));
    if (!values['skip-prune']) {
      open.set('retention', 1);
      const t = performance.now();
      const pruned = await pruneAuditLog({ dal: broker.services.auditQuery, sequencer: broker.services.auditSequencer, audit: broker.services.audit }, Date.now() - 5_000);
      open.set('retention', 0);
      retention = { ...pruned, seconds: round((performance.now() - t) / 1000, 2) };
    }
    await new Promise((r) => setTimeout(r, Math.max(0, seconds * 1000 - (performance.now() - started))));
    ticking = false;
    loopDelay.disable();
    const runSeconds = (performance.now() - started) / 1000;
    const cpuUsed = process.cpuUsage(cpuStarted);
    load.send('stop');
    const { latencies, health, scrapes } = await done;
    load.kill();
    const treeSize = (await broker.services.auditTree.latestHead())?.treeSize ?? 0;
    const byActivity: Record<string, { n: number; maxMs: number }> = {};
    for (const s of stalls) {
      const key = s.open.length ? s.open.join('+') : 'requests only';
      const a = (byActivity[key] ??= { n: 0, maxMs: 0 });
      a.n++;
      a.maxMs = Math.max(a.maxMs, s.ms);
    }
    const steps = [...stepStats].map(([what, s]) => ({ what, n: s.n, meanMs: round(s.totalMs / s.n, 2), maxMs: round(s.maxMs, 1) })).sort((a, b) => b.maxMs - a.maxMs).slice(0, 15);
    results.run = emit({
      part: 'run',
      seconds: round(runSeconds, 1),
      loopDelayMs: { p50: round(loopDelay.percentile(50) / 1e6, 2), p99: round(loopDelay.percentile(99) / 1e6, 2), max: round(loopDelay.max / 1e6, 1) },
      stallsOver: { ms: stallMs, n: stalls.length, over20ms: stalls.filter((s) => s.ms > 20).length, over20msOfCpu: stalls.filter((s) => s.cpuMs > 20).length, maxCpuMs: round(Math.max(0, ...stalls.map((s) => s.cpuMs))) },
      brokerCpuPercent: round(((cpuUsed.user + cpuUsed.system) / 1e3 / (runSeconds * 1000)) * 100),
      stallsByOpenActivity: byActivity,
      deliveriesPerSecond: round(latencies.length / runSeconds),
      deliveryMs: percentiles(latencies),
      healthzMaxMs: round(Math.max(0, ...health), 1),
      scrapeMs: percentiles(scrapes),
      sequenced: treeSize - sequencedBefore,
      queuedAtEnd: (await broker.services.auditTree.queueStats()).queued,
      retention,
    });
    results.longestStatements = steps;
    results.stalls = stalls.sort((a, b) => b.cpuMs - a.cpuMs).slice(0, 40);
  } finally {
    await bench.close();
  }
  const doc = JSON.stringify(results, null, 2);
  process.stdout.write(doc + '\n');
  if (values.out) fs.writeFileSync(values.out, doc + '\n');
}

await main();
