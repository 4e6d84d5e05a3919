// (l) Event-loop delay while background work runs (issue 27, target 4): deliveries at a steady
// open rate (--loop-rate/s for --loop-seconds, bench/open-loop.ts) keep the audit sequencer busy
// (every delivery queues an audit event; the sequencer batches them on its timer), with the
// broker's other background work (verification watch, row-integrity scan) on its defaults, and
// the rate below both databases' capacity (default 250/s; `overloaded` says when it was not), and
// /metrics scraped every --scrape-seconds as Prometheus would. The broker's own event-loop delay
// comes from prom-client's default metrics (keywarden_nodejs_eventloop_lag_{p99,max}_seconds:
// a monitorEventLoopDelay histogram, 10 ms resolution, reset at every scrape), so each scrape
// reports the window since the previous one. Reported: the highest window p99 and max, every
// window, how long each scrape took, and the sequencer's work during the run (its own counters).
import { round } from './audit-bench-support.js';
import { openLoop, fmtOpen } from './scenario-open-rate.js';
import { ADMIN_KEY, createStore, databaseLabel, dropStore, log, setupBroker, startBroker, stop, warmUp, type BenchOptions, type ServerProc } from './harness.js';

/** Sum of a metric's samples (over its labels) in Prometheus text format; undefined when absent. */
export function metricValue(text: string, name: string): number | undefined {
  let sum: number | undefined;
  const re = new RegExp(`^${name}(?:\\{[^}]*\\})? ([^\\s]+)`, 'gm');
  for (const m of text.matchAll(re)) sum = (sum ?? 0) + Number(m[1]);
  return sum;
}

async function scrape(broker: ServerProc): Promise<{ text: string; ms: number }> {
  const t0 = performance.now();
  // the admin key, in case the broker runs with KEYWARDEN_METRICS_AUTH=api-key
  const r = await fetch(`${broker.base}/metrics`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`/metrics: ${r.status} ${text.slice(0, 200)}`);
  return { text, ms: performance.now() - t0 };
}

const LAG = 'keywarden_nodejs_eventloop_lag';
const COUNTERS = ['keywarden_audit_sequenced_events_total', 'keywarden_audit_sequencer_runs_total', 'keywarden_secret_deliveries_total'];

export async function loopScenario(opts: BenchOptions): Promise<Record<string, unknown>> {
  const result: Record<string, unknown> = { rate: opts.loopRate, seconds: opts.loopSeconds, scrapeSeconds: opts.scrapeSeconds, metric: `${LAG}_{p99,max}_seconds` };
  for (const kind of opts.databases) {
    const broker = await startBroker(await createStore(kind, 'l'));
    try {
      const creds = await setupBroker(broker.base);
      await warmUp(broker, creds);
      const first = await scrape(broker); // resets the delay histogram: the windows start now
      if (metricValue(first.text, `${LAG}_p99_seconds`) === undefined) throw new Error(`/metrics has no ${LAG}_p99_seconds`);
      const before = Object.fromEntries(COUNTERS.map((c) => [c, metricValue(first.text, c) ?? 0]));
      const windows: Array<{ p99Ms: number; maxMs: number; scrapeMs: number }> = [];
      let last = first.text;
      let running = true;
      const load = openLoop(broker, creds, opts.loopRate, opts.loopSeconds, opts.openConnections).finally(() => (running = false));
      while (running) {
        await Promise.race([new Promise((r) => setTimeout(r, opts.scrapeSeconds * 1000)), load.catch(() => undefined)]);
        const s = await scrape(broker);
        last = s.text;
        windows.push({ p99Ms: round(metricValue(s.text, `${LAG}_p99_seconds`)! * 1000, 1), maxMs: round(metricValue(s.text, `${LAG}_max_seconds`)! * 1000, 1), scrapeMs: round(s.ms, 1) });
      }
      const deliveries = await load;
      const work = Object.fromEntries(COUNTERS.map((c) => [c.replace(/^keywarden_/, ''), (metricValue(last, c) ?? 0) - before[c]]));
      const r = {
        loopDelayMs: { p99: Math.max(...windows.map((w) => w.p99Ms)), max: Math.max(...windows.map((w) => w.maxMs)) },
        // an overloaded broker's loop is held by its queue of requests: lower --loop-rate to see the background work's share
        overloaded: deliveries.overloaded,
        windows,
        scrapeMs: { max: Math.max(...windows.map((w) => w.scrapeMs)) },
        backgroundWork: work,
        deliveries,
      };
      log(`(l) ${databaseLabel(kind)}: event-loop delay p99 ${r.loopDelayMs.p99} ms, max ${r.loopDelayMs.max} ms (worst of ${windows.length} windows of ${opts.scrapeSeconds} s); ${JSON.stringify(work)}; deliveries ${fmtOpen(deliveries)}`);
      result[kind] = r;
    } finally {
      await stop(broker.child);
      await dropStore(broker.store!);
    }
  }
  return result;
}
