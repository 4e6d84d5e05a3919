// (o) Latency at a fixed OPEN rate (issue 27, target 3): bench/open-loop.ts sends --open-rate
// deliveries/s for --open-seconds whatever the answers do, latency from each request's scheduled
// send time (no coordinated omission). One broker per database on a fresh store, alternating
// `repeat` times; the run with the median p99 is reported, with every run kept.
import { round } from './audit-bench-support.js';
import { cpuMeter, createStore, databaseLabel, deliveryHeader, dropStore, log, median, runLoadScript, setupBroker, startBroker, stop, settle, warmUp, type BenchOptions, type Creds, type DatabaseKind, type ServerProc } from './harness.js';

export interface OpenLoopResult {
  targetRate: number;
  achievedRate: number;
  sent: number;
  completed: number;
  non2xx: number;
  errors: number;
  unanswered: number;
  latencyMs: { n: number; p50?: number; p90?: number; p99?: number; max?: number };
  [k: string]: unknown;
}

/** Open-loop deliveries of `secret` at `rate`/s for `seconds`, with the broker's CPU (and its PostgreSQL backends') per answered request. */
export async function openLoop(broker: ServerProc, creds: Creds, rate: number, seconds: number, connections: number, secret = 'bench-secret'): Promise<OpenLoopResult> {
  const { url, header } = await deliveryHeader(broker.base, creds, secret);
  const meter = cpuMeter(broker.child.pid!, broker.store?.dbName);
  const r = (await runLoadScript('open-loop.ts', ['--url', url, '--rate', String(rate), '-d', String(seconds), '-c', String(connections), '-H', header])) as OpenLoopResult;
  const cpu = meter();
  // the meter ran over the warm-up too: divide by every answer (requests still unanswered cost CPU as well: an overloaded run's figure is high)
  const n = Math.max(1, (r.answeredTotal as number | undefined) ?? r.completed);
  return {
    ...r,
    // the broker did not keep up: its latencies are a growing queue's, not its own
    overloaded: r.unanswered > 0 || r.errors > 0 || r.achievedRate < 0.95 * rate,
    serverCpuUsPerRequest: round((cpu.serverCpuMs * 1000) / n),
    serverCpuUtil: round(cpu.serverCpuMs / cpu.wallMs, 2),
    ...(cpu.databaseCpuMs !== undefined ? { databaseCpuUsPerRequest: round((cpu.databaseCpuMs * 1000) / n) } : {}),
  };
}

export const fmtOpen = (r: OpenLoopResult) =>
  `${r.overloaded ? 'OVERLOADED ' : ''}${r.achievedRate}/s of ${r.targetRate}/s, p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms, max ${r.latencyMs.max} ms (${r.completed} answered, ${r.non2xx} non-2xx, ${r.errors} errors, ${r.unanswered} unanswered; server CPU ${r.serverCpuUsPerRequest} us/request${r.databaseCpuUsPerRequest !== undefined ? `, PostgreSQL backends ${r.databaseCpuUsPerRequest} us/request` : ''})`;

export async function openRateScenario(opts: BenchOptions): Promise<Record<string, unknown>> {
  const brokers = new Map<DatabaseKind, { broker: ServerProc; creds: Creds }>();
  try {
    for (const kind of opts.databases) {
      const broker = await startBroker(await createStore(kind, 'o'));
      const creds = await setupBroker(broker.base);
      await warmUp(broker, creds);
      brokers.set(kind, { broker, creds });
    }
    const runs = new Map<DatabaseKind, OpenLoopResult[]>([...brokers.keys()].map((k) => [k, []]));
    for (let i = 0; i < opts.repeat; i++) {
      for (const [kind, { broker, creds }] of brokers) {
        await settle(broker);
        const r = await openLoop(broker, creds, opts.openRate, opts.openSeconds, opts.openConnections);
        log(`(o) ${databaseLabel(kind)} open rate, run ${i + 1}/${opts.repeat}: ${fmtOpen(r)}`);
        runs.get(kind)!.push(r);
      }
    }
    const result: Record<string, unknown> = { rate: opts.openRate, seconds: opts.openSeconds, connections: opts.openConnections };
    for (const [kind, rs] of runs) result[kind] = { median: median(rs, (r) => r.latencyMs.p99 ?? Infinity), runs: rs };
    return result;
  } finally {
    for (const { broker } of brokers.values()) {
      await stop(broker.child);
      await dropStore(broker.store!);
    }
  }
}
