// (a) + (b): secret delivery under a closed loop (wrk, --connections) against the bare node:http
// baseline, on every database of the run, side by side: one broker per database (each on a fresh
// store) runs throughout; the rounds alternate baseline, SQLite, PostgreSQL, baseline, ... `repeat`
// times, one loaded at a time, so background load on a shared host falls on all of them.
// Reported per database: the medians, and the median over rounds of the ratios measured within a
// round (broker CPU per delivery ÷ baseline CPU per request; PostgreSQL ÷ SQLite CPU and req/s).
import {
  databaseLabel,
  deliveryHeader,
  fmt,
  log,
  measure,
  median,
  medianOf,
  runScript,
  setupBroker,
  startBaseline,
  startBroker,
  stop,
  createStore,
  dropStore,
  settle,
  warmUp,
  type BenchOptions,
  type Creds,
  type DatabaseKind,
  type Measured,
  type ServerProc,
} from './harness.js';
import { round } from './audit-bench-support.js';

async function baselineRun(label: string): Promise<Measured> {
  const server = await startBaseline();
  try {
    await measure(server, `${server.base}/`); // warm-up, discarded
    const r = await measure(server, `${server.base}/`);
    log(`(a) baseline node:http, ${label}: ${fmt(r)}`);
    return r;
  } finally {
    await stop(server.child);
  }
}

async function deliveryRun(broker: ServerProc, creds: Creds, label: string, secret = 'bench-secret'): Promise<Measured> {
  const { url, header } = await deliveryHeader(broker.base, creds, secret);
  const r = await measure(broker, url, [header]);
  log(`${label}: ${fmt(r)}`);
  return r;
}

/** Medians of a set of runs, with the figures the issue compares. */
function summary(runs: Measured[]) {
  return {
    rps: round(medianOf(runs.map((r) => r.rps))),
    serverCpuUsPerRequest: round(medianOf(runs.map((r) => r.serverCpuMsPerRequest * 1000))),
    ...(runs[0].databaseCpuMsPerRequest !== undefined ? { databaseCpuUsPerRequest: round(medianOf(runs.map((r) => r.databaseCpuMsPerRequest! * 1000))) } : {}),
    p50: median(runs, (r) => r.rps).p50,
    p99: median(runs, (r) => r.rps).p99,
  };
}

export async function deliveryScenario(opts: BenchOptions, only: Set<string>): Promise<Record<string, unknown>> {
  const withDelivery = only.has('b');
  const brokers = new Map<DatabaseKind, { broker: ServerProc; creds: Creds }>();
  try {
    if (withDelivery) {
      for (const kind of opts.databases) {
        const store = await createStore(kind, 'b');
        const broker = await startBroker(store);
        const creds = await setupBroker(broker.base);
        brokers.set(kind, { broker, creds });
        await warmUp(broker, creds);
      }
    }
    const aRuns: Measured[] = [];
    const bRuns = new Map<DatabaseKind, Measured[]>([...brokers.keys()].map((k) => [k, []]));
    const ratios = { cpuOverBaseline: new Map<DatabaseKind, number[]>(), rpsOverBaseline: new Map<DatabaseKind, number[]>(), pgOverSqliteCpu: [] as number[], pgOverSqliteRps: [] as number[], pgWithBackendsOverSqliteCpu: [] as number[] };
    for (let i = 0; i < opts.repeat; i++) {
      const round_ = `run ${i + 1}/${opts.repeat}`;
      const a = await baselineRun(round_);
      aRuns.push(a);
      const thisRound = new Map<DatabaseKind, Measured>();
      for (const [kind, { broker, creds }] of brokers) {
        await settle(broker);
        const b = await deliveryRun(broker, creds, `(b) ${databaseLabel(kind)} secret delivery, ${round_}`);
        bRuns.get(kind)!.push(b);
        thisRound.set(kind, b);
        ratios.cpuOverBaseline.set(kind, [...(ratios.cpuOverBaseline.get(kind) ?? []), b.serverCpuMsPerRequest / a.serverCpuMsPerRequest]);
        ratios.rpsOverBaseline.set(kind, [...(ratios.rpsOverBaseline.get(kind) ?? []), b.rps / a.rps]);
      }
      const s = thisRound.get('sqlite');
      const p = thisRound.get('postgres');
      if (s && p) {
        ratios.pgOverSqliteCpu.push(p.serverCpuMsPerRequest / s.serverCpuMsPerRequest);
        ratios.pgOverSqliteRps.push(p.rps / s.rps);
        // the broker's CPU and its database's on PostgreSQL (SQLite's runs in the broker's process)
        ratios.pgWithBackendsOverSqliteCpu.push((p.serverCpuMsPerRequest + (p.databaseCpuMsPerRequest ?? 0)) / s.serverCpuMsPerRequest);
      }
    }
    const result: Record<string, unknown> = { baseline: { ...summary(aRuns), runs: aRuns } };
    for (const [kind, runs] of bRuns) {
      result[kind] = {
        ...summary(runs),
        cpuOverBaseline: round(medianOf(ratios.cpuOverBaseline.get(kind)!), 2),
        rpsOverBaseline: round(medianOf(ratios.rpsOverBaseline.get(kind)!), 3),
        runs,
      };
      log(`(b) ${databaseLabel(kind)}: CPU per delivery ${round(medianOf(ratios.cpuOverBaseline.get(kind)!), 1)}× the baseline's per request (median of ${opts.repeat} rounds)`);
    }
    if (ratios.pgOverSqliteCpu.length) {
      result.postgresOverSqlite = {
        cpuPerDelivery: round(medianOf(ratios.pgOverSqliteCpu), 2),
        throughput: round(medianOf(ratios.pgOverSqliteRps), 2),
        cpuPerDeliveryWithDatabaseBackends: round(medianOf(ratios.pgWithBackendsOverSqliteCpu), 2),
      };
      log(`(b) PostgreSQL ÷ SQLite: CPU per delivery ${round(medianOf(ratios.pgOverSqliteCpu), 2)}×, throughput ${round(medianOf(ratios.pgOverSqliteRps), 2)}×`);
    }
    // per-component costs, in-process and sequential, each broker stopped first (SQLite has one writer)
    for (const [kind, { broker }] of brokers) {
      await stop(broker.child);
      let components: string;
      try {
        components = runScript('components.ts', ['2000'], broker.store!);
      } catch (err) {
        components = `not measured: ${(err as Error).message}`; // a diagnostic: the figures above stand without it
      }
      process.stdout.write(`\n---- ${databaseLabel(kind)}: per-component cost of a delivery (in-process, sequential) ----\n${components}\n`);
      (result[kind] as Record<string, unknown>).components = components;
    }
    return result;
  } finally {
    for (const { broker } of brokers.values()) {
      await stop(broker.child);
      await dropStore(broker.store!);
    }
  }
}
