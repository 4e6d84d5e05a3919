// (s) Startup storm (issue 27, target 5): --storm-clients clients, created up front through the
// admin API in the group `storm`, which is granted --storm-secrets secrets. Each client takes a
// token (client_credentials) and reads every secret, on its own connection (bench/storm.ts):
// all at once (storm), then the same sessions --spread-concurrency at a time (default
// --connections; spread: the same requests as a steady stream at the rate the broker sustains). Per database, alternating storm
// and spread `repeat` times: wall times and their ratio, per-request p50/p99/max, 5xx and 429.
//
// Limits that could shape the storm, from src/config.ts: the token endpoint counts FAILED
// authentications only (KEYWARDEN_AUTH_MAX_FAILURES_PER_CLIENT / _PER_ADDRESS); a storm of valid
// credentials is not throttled. KEYWARDEN_MAX_CONNECTIONS (default 4096) closes connections past
// it: the result says whether the storm's clients exceed it.
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_MAX_CONNECTIONS } from '../src/config.js';
import { round } from './audit-bench-support.js';
import { api, cpuMeter, createStore, databaseLabel, dropStore, log, medianOf, pool, runLoadScript, setupBroker, startBroker, settle, stop, warmUp, type BenchOptions, type DatabaseKind, type ServerProc } from './harness.js';

interface StormResult {
  mode: string;
  wallS: number;
  requests: number;
  sessionsCompleted: number;
  statuses: { ok: number; tooMany: number; serverError: number; other: number; errors: number };
  latencyMs: { all: { p50?: number; p99?: number; max?: number } };
  [k: string]: unknown;
}

const fmtStorm = (r: StormResult) =>
  `${r.mode}: ${r.wallS} s for ${r.requests} requests (${r.sessionsCompleted} sessions complete), p50 ${r.latencyMs.all.p50} / p99 ${r.latencyMs.all.p99} / max ${r.latencyMs.all.max} ms; 5xx ${r.statuses.serverError}, 429 ${r.statuses.tooMany}, other non-2xx ${r.statuses.other}, connection errors ${r.statuses.errors}`;

async function prepare(kind: DatabaseKind, opts: BenchOptions): Promise<{ broker: ServerProc; clientsFile: string; secrets: string[]; setupSeconds: number }> {
  const store = await createStore(kind, 's');
  const broker = await startBroker(store);
  const t0 = performance.now();
  await api(broker.base, 'POST', '/v1/groups', { name: 'storm', description: 'startup storm' });
  const secrets = Array.from({ length: opts.stormSecrets }, (_, i) => `storm-secret-${i}`);
  for (const name of secrets) await api(broker.base, 'POST', '/v1/secrets', { name, value: `value of ${name}`, groups: ['storm'] });
  const names = Array.from({ length: opts.stormClients }, (_, i) => `storm-client-${String(i).padStart(5, '0')}`);
  const clients = await pool(names, 8, async (name) => {
    const c = await api(broker.base, 'POST', '/v1/clients', { name, groups: ['storm'] });
    return { clientId: c.clientId as string, clientSecret: c.clientSecret as string };
  });
  const clientsFile = path.join(store.dataDir, 'storm-clients.json');
  fs.writeFileSync(clientsFile, JSON.stringify(clients), { mode: 0o600 });
  const setupSeconds = round((performance.now() - t0) / 1000);
  await warmUp(broker, await setupBroker(broker.base));
  log(`(s) ${databaseLabel(kind)}: ${clients.length} clients and ${secrets.length} secrets created in ${setupSeconds} s`);
  return { broker, clientsFile, secrets, setupSeconds };
}

async function run(broker: ServerProc, clientsFile: string, secrets: string[], mode: 'storm' | 'spread', opts: BenchOptions): Promise<StormResult> {
  const meter = cpuMeter(broker.child.pid!, broker.store?.dbName);
  const r = (await runLoadScript('storm.ts', ['--base', broker.base, '--clients-file', clientsFile, '--secrets', secrets.join(','), '--mode', mode, '--concurrency', String(opts.spreadConcurrency)])) as StormResult;
  const cpu = meter();
  return { ...r, serverCpuUsPerRequest: round((cpu.serverCpuMs * 1000) / Math.max(1, r.requests)), ...(cpu.databaseCpuMs !== undefined ? { databaseCpuUsPerRequest: round((cpu.databaseCpuMs * 1000) / Math.max(1, r.requests)) } : {}) };
}

export async function stormScenario(opts: BenchOptions): Promise<Record<string, unknown>> {
  const result: Record<string, unknown> = {
    clients: opts.stormClients,
    secretsPerClient: opts.stormSecrets,
    spreadConcurrency: opts.spreadConcurrency,
    limits: {
      tokenEndpoint: 'failed authentications only (KEYWARDEN_AUTH_MAX_FAILURES_PER_CLIENT/_PER_ADDRESS); valid credentials are not rate-limited',
      maxConnections: DEFAULT_MAX_CONNECTIONS,
      stormExceedsMaxConnections: opts.stormClients > DEFAULT_MAX_CONNECTIONS,
    },
  };
  // one database at a time: 2,000 idle keep-alive sockets and their clients are not left on the other broker
  for (const kind of opts.databases) {
    const { broker, clientsFile, secrets, setupSeconds } = await prepare(kind, opts);
    try {
      const storms: StormResult[] = [];
      const spreads: StormResult[] = [];
      for (let i = 0; i < opts.repeat; i++) {
        for (const mode of ['storm', 'spread'] as const) {
          await settle(broker);
          const r = await run(broker, clientsFile, secrets, mode, opts);
          log(`(s) ${databaseLabel(kind)} ${i + 1}/${opts.repeat} ${fmtStorm(r)}`);
          (mode === 'storm' ? storms : spreads).push(r);
        }
      }
      const ratios = storms.map((s, i) => s.wallS / spreads[i].wallS);
      const pick = (rs: StormResult[]) => [...rs].sort((x, y) => x.wallS - y.wallS)[Math.floor(rs.length / 2)];
      // a storm whose sessions ended early (a 5xx, a 429) did less work than its spread: its ratio is not comparable
      const complete = [...storms, ...spreads].every((r) => r.sessionsCompleted === opts.stormClients);
      result[kind] = { setupSeconds, stormOverSpreadWallTime: round(medianOf(ratios), 2), allSessionsCompleted: complete, storm: pick(storms), spread: pick(spreads), runs: { storm: storms, spread: spreads } };
      log(`(s) ${databaseLabel(kind)}: storm ÷ spread wall time ${round(medianOf(ratios), 2)} (median of ${ratios.length})${complete ? '' : '; NOT every session completed: the ratio compares unequal work'}`);
    } finally {
      await stop(broker.child);
      await dropStore(broker.store!);
    }
  }
  return result;
}
