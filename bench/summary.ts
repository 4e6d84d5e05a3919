// The short human summary bench/run.ts prints at the end: one line per figure of issue 27,
// SQLite and PostgreSQL side by side, with the issue's goal. Reads the results document only.
import type { DatabaseKind } from './harness.js';

type Doc = Record<string, any>;

export function printSummary(results: Doc, databases: DatabaseKind[]): void {
  const rows: string[][] = [];
  const per = (key: string, f: (r: Doc) => unknown) => databases.map((d) => (results[key]?.[d] ? String(f(results[key][d]) ?? '–') : '–'));
  const add = (figure: string, key: string, f: (r: Doc) => unknown, goal: string, both?: string) => {
    if (!results[key] || results[key].failed) return;
    rows.push([figure, ...per(key, f), both ?? '', goal]);
  };
  const lat = (l: Doc | undefined) => (l ? `${l.p50} / ${l.p99} / ${l.max}` : '–');

  const baseline = (results.b ?? results.a)?.baseline;
  if (baseline) rows.push(['(a) bare node:http req/s; CPU µs/request', ...databases.map(() => ''), `${baseline.rps}; ${baseline.serverCpuUsPerRequest}`, '']);
  add('(b) deliveries/s (closed loop)', 'b', (r) => r.rps, 'PG ≥ 0.6× SQLite', results.b?.postgresOverSqlite ? `PG ÷ SQLite ${results.b.postgresOverSqlite.throughput}` : '');
  add('(b) broker CPU µs/delivery', 'b', (r) => `${r.serverCpuUsPerRequest}${r.databaseCpuUsPerRequest !== undefined ? ` (+PG ${r.databaseCpuUsPerRequest})` : ''}`, 'PG ≤ 1.5× SQLite', results.b?.postgresOverSqlite ? `PG ÷ SQLite ${results.b.postgresOverSqlite.cpuPerDelivery} (${results.b.postgresOverSqlite.cpuPerDeliveryWithDatabaseBackends} with PG's)` : '');
  add('(b) CPU ÷ bare node:http', 'b', (r) => `${r.cpuOverBaseline}×`, 'SQLite ≤ 10×');
  add(`(o) ${results.o?.rate}/s open: achieved/s`, 'o', (r) => `${r.median.achievedRate}${r.median.overloaded ? ' (overloaded)' : ''}`, 'the rate');
  add(`(o) ${results.o?.rate}/s open: p50 / p99 / max ms`, 'o', (r) => lat(r.median.latencyMs), 'SQLite ≤ 2/10/50, PG ≤ 5/20/80');
  add(`(s) storm ${results.s?.clients}×(1+${results.s?.secretsPerClient}): wall s storm / spread`, 's', (r) => `${r.storm.wallS} / ${r.spread.wallS} = ${r.stormOverSpreadWallTime}×${r.allSessionsCompleted ? '' : ' (sessions failed)'}`, '≤ 1.5×');
  add('(s) storm p50 / p99 / max ms', 's', (r) => lat(r.storm.latencyMs.all), 'report');
  add('(s) storm 5xx; 429', 's', (r) => `${r.storm.statuses.serverError}; ${r.storm.statuses.tooMany}`, '0; 0 unless documented');
  add(`(l) loop delay p99 / max ms (${results.l?.rate}/s, ${results.l?.seconds} s)`, 'l', (r) => `${r.loopDelayMs.p99} / ${r.loopDelayMs.max}${r.overloaded ? ' (overloaded)' : ''}`, 'max ≤ 20');
  add('(d) cached gate decision p50 ms (in-process)', 'd', (r) => (r.decideCached ? r.decideCached.p50.toFixed(3) : r.reason), '≤ 1 (over HTTP)');
  add('(f) large ÷ small: req/s; CPU/delivery', 'f', (r) => `${r.largeOverSmall.rps}; ${r.largeOverSmall.serverCpuPerDelivery}`, 'within 1.2×');
  if (results.c) {
    for (const d of databases) {
      const c = results.c[d];
      if (c?.small && c?.large) rows.push([`(c) ${d}: req/s at ${c.small.secrets} → ${c.large.secrets} secrets`, ...databases.map((x) => (x === d ? `${Math.round(c.small.delivery.rps)} → ${Math.round(c.large.delivery.rps)}` : '')), '', '']);
    }
  }
  for (const [k, v] of Object.entries(results)) if (v && typeof v === 'object' && 'failed' in v) rows.push([`(${k}) FAILED`, ...databases.map(() => ''), String(v.failed).slice(0, 80), '']);

  const header = ['Figure', ...databases.map((d) => (d === 'sqlite' ? 'SQLite' : 'PostgreSQL')), 'Side by side', 'Goal (issue 27)'];
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => `| ${r.map((c, i) => (c ?? '').padEnd(widths[i])).join(' | ')} |`;
  const m = results.machine;
  process.stdout.write(
    `\n==== summary (${results.date}; ${m.nproc} × ${m.cpuModel}, ${m.ramGiB} GiB, Node ${m.node}; load average at start ${results.loadAverage.join(' ')}) ====\n` +
      [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n') +
      '\n',
  );
}
