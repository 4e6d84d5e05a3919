// Keywarden benchmarks (issue 27's targets, on SQLite and PostgreSQL in one run). See
// bench/RESULTS.md for what each scenario measures and the results.
//
//   npm run bench                                        # a,b,d,o,s,l on both databases
//   npm run bench -- --quick                             # the same, short (a few minutes)
//   npm run bench -- --only b,o --databases sqlite       # a subset
//   npm run bench -- --only f                            # flatness: 100k secrets, 10k clients (slow)
//   npm run bench -- --only c --databases sqlite         # the secrets table growing, with query plans (slow)
//   npm run bench -- --profile                           # also a CPU-profiled run of (b) on SQLite
//
//   a  bare node:http baseline          b  delivery, closed loop (wrk), ratios to (a) and PG ÷ SQLite
//   c  delivery as the secrets grow     d  cached release decision (in-process)
//   o  latency at a fixed open rate     s  startup storm vs the same requests spread
//   l  event-loop delay under load      f  flatness: large ÷ small tables, side by side
//   v  Vault KV read vs native delivery (SQLite)
//
// Each broker runs as its own process on a fresh store: a SQLite data dir, or a new database
// kw_bench_<pid>_<n>_<scenario> on the PostgreSQL server of --database-url (dropped at the end).
// With --pin (default when taskset exists and there are 2+ cores) servers run on core 0 and load
// generators on core 1. Load: wrk when installed, else bench/loadgen.ts; open-loop and storm
// clients are bench/open-loop.ts and bench/storm.ts. Writes --out (bench/last-run.json) with the
// machine, and each scenario's start and end time and load average.
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { round } from './audit-bench-support.js';
import {
  configurePinning,
  createStore,
  databaseLabel,
  deliveryHeader,
  dropAllStores,
  dropStore,
  fmt,
  hasWrk,
  lastJson,
  loadOptions,
  log,
  machine,
  measure,
  moment,
  root,
  runScript,
  setupBroker,
  startBroker,
  stop,
  stopAll,
  storeOptions,
  timed,
  type BenchOptions,
  type DatabaseKind,
} from './harness.js';
import { deliveryScenario } from './scenario-delivery.js';
import { flatScenario } from './scenario-flat.js';
import { loopScenario } from './scenario-loop.js';
import { openRateScenario } from './scenario-open-rate.js';
import { stormScenario } from './scenario-storm.js';
import { tableSizeScenario } from './scenario-table-size.js';
import { vaultScenario } from './scenario-vault.js';
import { printSummary } from './summary.js';

const { values } = parseArgs({
  options: {
    // c (the secrets table growing, sequential) and f (flatness, side by side) seed 100k secrets: slow, so opt-in
    only: { type: 'string', default: 'a,b,d,o,s,l' },
    databases: { type: 'string', default: 'sqlite,postgres' },
    // the PostgreSQL server: each scenario creates (and drops) its own database on it
    'database-url': { type: 'string', default: 'postgres://postgres@127.0.0.1:5432/postgres' },
    // short runs for a check end to end: the defaults marked "quick" below
    quick: { type: 'boolean', default: false },
    duration: { type: 'string' },
    connections: { type: 'string', default: '64' },
    tool: { type: 'string' },
    repeat: { type: 'string' },
    pin: { type: 'string', default: 'auto' },
    'seed-small': { type: 'string', default: '1000' },
    'seed-large': { type: 'string' },
    'clients-small': { type: 'string', default: '1000' },
    'clients-large': { type: 'string' },
    'open-rate': { type: 'string', default: '1000' },
    'open-seconds': { type: 'string' },
    'open-connections': { type: 'string', default: '128' },
    'storm-clients': { type: 'string' },
    'storm-secrets': { type: 'string', default: '10' },
    // default: --connections, the concurrency at which (b) measures throughput
    'spread-concurrency': { type: 'string' },
    'loop-seconds': { type: 'string' },
    // below both databases' capacity: the delay measured is the background work's, not a queue's
    'loop-rate': { type: 'string', default: '250' },
    'scrape-seconds': { type: 'string', default: '5' },
    profile: { type: 'boolean', default: false },
    out: { type: 'string', default: path.join(root, 'bench', 'last-run.json') },
    keep: { type: 'boolean', default: false },
    // where the temporary data dirs are created (e.g. /dev/shm to take the disk out of the picture)
    tmpdir: { type: 'string', default: os.tmpdir() },
  },
});
const quick = values.quick!;
/** An option's value, else its quick-mode or full default. */
const num = (name: keyof typeof values, full: number, short = full) => Number(values[name] ?? (quick ? short : full));

const only = new Set(values.only!.split(','));
const databases = values.databases!.split(',') as DatabaseKind[];
for (const d of databases) if (d !== 'sqlite' && d !== 'postgres') throw new Error(`--databases: sqlite and/or postgres, not ${d}`);
const opts: BenchOptions = {
  databases,
  repeat: num('repeat', 3, 1),
  openRate: num('open-rate', 1000),
  openSeconds: num('open-seconds', 10, 3),
  openConnections: num('open-connections', 128),
  stormClients: num('storm-clients', 2000, 200),
  stormSecrets: num('storm-secrets', 10),
  spreadConcurrency: num('spread-concurrency', num('connections', 64)),
  loopSeconds: num('loop-seconds', 60, 10),
  loopRate: num('loop-rate', 250),
  scrapeSeconds: num('scrape-seconds', 5),
  seedSmall: num('seed-small', 1000),
  seedLarge: num('seed-large', 100_000, 10_000),
  clientsSmall: num('clients-small', 1000),
  clientsLarge: num('clients-large', 10_000, 2_000),
};
loadOptions.duration = num('duration', 10, 3);
loadOptions.connections = num('connections', 64);
loadOptions.tool = values.tool ?? (hasWrk() ? 'wrk' : 'node');
storeOptions.tmpdir = values.tmpdir!;
storeOptions.postgresUrl = values['database-url']!;
storeOptions.keep = values.keep!;
const pin = configurePinning(values.pin!);

const results: Record<string, unknown> = {
  machine: machine(),
  ...moment(),
  options: { only: [...only], quick, ...opts, tool: loadOptions.tool, connections: loadOptions.connections, durationS: loadOptions.duration, postgres: databases.includes('postgres') ? values['database-url'] : undefined },
  pinning: pin,
};
log(`${JSON.stringify(results.machine)}; tool ${loadOptions.tool}, ${loadOptions.connections} connections, ${loadOptions.duration} s per closed-loop run, repeat ${opts.repeat}; pinning: ${pin.reason}; databases ${databases.join(', ')}`);

const interrupted = async () => {
  log('interrupted: stopping servers and dropping the databases');
  await stopAll();
  await dropAllStores();
  process.exit(130);
};
process.once('SIGINT', interrupted);
process.once('SIGTERM', interrupted);

const write = () => fs.writeFileSync(values.out!, JSON.stringify(results, null, 2) + '\n');

/** Runs one scenario, recording it with its moments; a failure is recorded and the run goes on. */
async function scenario(key: string, fn: () => Promise<Record<string, unknown>>): Promise<void> {
  log(`---- (${key}) ----`);
  try {
    results[key] = await timed(fn);
  } catch (err) {
    log(`(${key}) failed: ${(err as Error).stack ?? err}`);
    results[key] = { failed: String((err as Error).message ?? err), ...moment() };
  }
  write(); // a partial file survives a later failure
}

try {
  if (only.has('a') || only.has('b')) await scenario(only.has('b') ? 'b' : 'a', () => deliveryScenario(opts, only));
  if (only.has('o')) await scenario('o', () => openRateScenario(opts));
  if (only.has('s')) await scenario('s', () => stormScenario(opts));
  if (only.has('l')) await scenario('l', () => loopScenario(opts));
  if (only.has('d')) {
    await scenario('d', async () => {
      const out: Record<string, unknown> = {};
      for (const kind of databases) {
        const store = await createStore(kind, 'd');
        try {
          const inProcess = lastJson(runScript('gate.ts', [], store));
          // over HTTP (target 6): a real registry and notary, 1 and 16 callers, cached and
          // uncached; its brokers take the test support's database (a fresh schema on PostgreSQL)
          const overHttp = lastJson(runScript('gate-http.ts', [String(Math.min(loadOptions.duration, 3))], { ...store, env: { ...store.env, KEYWARDEN_TEST_DATABASE_URL: store.databaseUrl ?? '' } }));
          out[kind] = { inProcess, overHttp };
          log(`(d) ${databaseLabel(kind)}: ${JSON.stringify(out[kind])}`);
        } finally {
          await dropStore(store);
        }
      }
      return out;
    });
  }
  if (only.has('c')) {
    await scenario('c', async () => {
      const out: Record<string, unknown> = {};
      for (const kind of databases) out[kind] = await tableSizeScenario(kind, [['small', opts.seedSmall], ['large', opts.seedLarge]]);
      return out;
    });
  }
  if (only.has('f')) await scenario('f', () => flatScenario(opts));
  if (only.has('v')) await scenario('v', () => vaultScenario(opts.repeat));
  if (values.profile) {
    await scenario('profile', async () => {
      const store = await createStore('sqlite', 'profile');
      const profDir = path.join(root, 'bench', 'profiles');
      fs.mkdirSync(profDir, { recursive: true });
      for (const f of fs.readdirSync(profDir)) if (f.endsWith('.cpuprofile')) fs.rmSync(path.join(profDir, f));
      const broker = await startBroker(store, { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profDir}`] });
      try {
        const skipMs = Date.now() - broker.startedAt; // leave start-up (module loading, migrations) out of the summary
        const { url, header } = await deliveryHeader(broker.base, await setupBroker(broker.base));
        const p = await measure(broker, url, [header]);
        log(`(b) profiled run (slower: profiler on): ${fmt(p)}`);
        await stop(broker.child);
        const prof = fs.readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
        if (prof) process.stdout.write(runScript('profile-summary.ts', [path.join(profDir, prof), '30', String(skipMs)], store));
        return { run: p, file: prof ? path.join('bench', 'profiles', prof) : null };
      } finally {
        await stop(broker.child);
        await dropStore(store);
      }
    });
  }
} finally {
  await stopAll();
  await dropAllStores();
  Object.assign(results, { ended: moment() });
  write();
  log(`results written to ${values.out}`);
}
printSummary(results, databases);
log(`done in ${round((Date.now() - Date.parse(results.date as string)) / 60_000, 1)} min`);
