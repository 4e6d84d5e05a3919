// Keywarden benchmarks. See bench/RESULTS.md for what each scenario measures and the results.
//
//   npm run bench                                   # everything: a, b, c (1k and 100k), d
//   npm run bench -- --only a,b --duration 10       # a subset
//   npm run bench -- --profile                      # also a CPU-profiled run of (b)
//
// The server under test and the load generator are separate processes, both on 127.0.0.1.
// Load comes from `wrk` when it is installed (apt-get install wrk), else from bench/loadgen.ts.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: {
    only: { type: 'string', default: 'a,b,c,d' },
    duration: { type: 'string', default: '10' },
    connections: { type: 'string', default: '16' },
    tool: { type: 'string' },
    'seed-small': { type: 'string', default: '1000' },
    'seed-large': { type: 'string', default: '100000' },
    profile: { type: 'boolean', default: false },
    out: { type: 'string', default: path.join(root, 'bench', 'last-run.json') },
    keep: { type: 'boolean', default: false },
    repeat: { type: 'string', default: '3' },
    // where the temporary data dir is created (e.g. /dev/shm to take the disk out of the picture)
    tmpdir: { type: 'string', default: os.tmpdir() },
  },
});
const only = new Set(values.only!.split(','));
const duration = Number(values.duration);
const connections = Number(values.connections);
const hasWrk = spawnSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' }).status === 0;
const tool = values.tool ?? (hasWrk ? 'wrk' : 'node');
const ADMIN_KEY = 'kw_bench' + 'A'.repeat(32) + '0123456789';

interface LoadResult {
  tool: string;
  connections: number;
  durationS: number;
  requests: number;
  non2xx: number;
  errors: number;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  max?: number;
  /** wrk's own line, when it reported any (connect, read, write, timeout) */
  socketErrors?: string;
}
const results: Record<string, unknown> = { date: new Date().toISOString(), tool, connections, durationS: duration };

function log(msg: string) {
  process.stderr.write(`[bench] ${msg}\n`);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function waitFor(url: string, child: ChildProcess, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${url}`);
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

async function load(url: string, headers: string[] = [], wrkScript?: string): Promise<LoadResult> {
  if (tool === 'wrk') {
    const args = ['-t1', `-c${connections}`, `-d${duration}s`, '--latency', ...headers.flatMap((h) => ['-H', h]), ...(wrkScript ? ['-s', wrkScript] : []), url];
    const r = spawnSync('wrk', args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
    const out = r.stdout;
    const pick = (re: RegExp) => re.exec(out)?.[1];
    const requests = Number(pick(/(\d+) requests in/));
    return {
      tool: 'wrk 1 thread',
      connections,
      durationS: toMs(pick(/requests in ([\d.]+\w+),/) ?? 'NaN') / 1000,
      requests,
      non2xx: Number(pick(/Non-2xx or 3xx responses: (\d+)/) ?? 0),
      errors: (out.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/)?.slice(1).map(Number) ?? [0]).reduce((a, b) => a + b, 0),
      socketErrors: /Socket errors:[^\n]*/.exec(out)?.[0].trim(),
      rps: Number(pick(/Requests\/sec:\s+([\d.]+)/)),
      p50: toMs(pick(/\s50%\s+([\d.]+\w+)/) ?? 'NaN'),
      p90: toMs(pick(/\s90%\s+([\d.]+\w+)/) ?? 'NaN'),
      p99: toMs(pick(/\s99%\s+([\d.]+\w+)/) ?? 'NaN'),
      max: toMs(pick(/Latency\s+\S+\s+\S+\s+([\d.]+\w+)/) ?? 'NaN'),
    };
  }
  const args = ['--import', 'tsx', path.join(root, 'bench', 'loadgen.ts'), '--url', url, '-c', String(connections), '-d', String(duration), ...headers.flatMap((h) => ['-H', h])];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', cwd: root });
  if (r.status !== 0) throw new Error(`loadgen failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

/** user+system CPU time of a process (all threads), in ms, from /proc. */
function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}

/** Runs load against a server process and adds its CPU cost per request and the host load. */
async function measure(pid: number, url: string, headers: string[] = [], wrkScript?: string): Promise<LoadResult & { serverCpuMsPerRequest: number; serverCpuUtil: number; loadavg1Before: number }> {
  const loadavg1Before = os.loadavg()[0];
  const c0 = cpuMs(pid);
  const t0 = Date.now();
  const r = await load(url, headers, wrkScript);
  const wall = Date.now() - t0;
  const cpu = cpuMs(pid) - c0;
  return { ...r, serverCpuMsPerRequest: cpu / Math.max(r.requests, 1), serverCpuUtil: cpu / wall, loadavg1Before };
}

function fmt(r: LoadResult & { serverCpuMsPerRequest?: number; serverCpuUtil?: number; loadavg1Before?: number }): string {
  const extra = r.serverCpuMsPerRequest !== undefined ? `; server CPU ${(r.serverCpuMsPerRequest * 1000).toFixed(0)} us/request, ${(100 * r.serverCpuUtil!).toFixed(0)}% of a core; loadavg ${r.loadavg1Before!.toFixed(1)}` : '';
  return `${r.rps.toFixed(0)} req/s, p50 ${r.p50.toFixed(2)} ms, p90 ${r.p90.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms (${r.requests} requests, ${r.non2xx} non-2xx, ${r.errors} socket errors${r.socketErrors ? `: ${r.socketErrors}` : ''})${extra}`;
}

// ---------------------------------------------------------------- (a) baseline
async function baseline(): Promise<LoadResult> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'bench', 'baseline-server.ts'), String(port)], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    await waitFor(`http://127.0.0.1:${port}/`, child);
    await load(`http://127.0.0.1:${port}/`); // warm-up run, discarded
    const r = await measure(child.pid!, `http://127.0.0.1:${port}/`);
    log(`(a) baseline node:http: ${fmt(r)}`);
    return r;
  } finally {
    await stop(child);
  }
}

// ---------------------------------------------------------------- the broker
interface BrokerProc {
  child: ChildProcess;
  base: string;
  startedAt: number;
}

/** `preload`: node arguments after tsx is loaded (e.g. `--import bench/x.ts`). */
async function startBroker(dataDir: string, extraNodeArgs: string[] = [], preload: string[] = []): Promise<BrokerProc> {
  const port = await freePort();
  const startedAt = Date.now();
  const env = {
    ...process.env,
    KEYWARDEN_DATA_DIR: dataDir,
    KEYWARDEN_LISTEN: `127.0.0.1:${port}`,
    KEYWARDEN_LOG_LEVEL: 'warn',
    KEYWARDEN_BOOTSTRAP_ADMIN_KEY: ADMIN_KEY,
  };
  const child = spawn(process.execPath, [...extraNodeArgs, '--import', 'tsx', ...preload, path.join(root, 'src', 'cli', 'main.ts'), 'serve'], { cwd: root, env, stdio: ['ignore', 'ignore', 'inherit'] });
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`${base}/healthz`, child);
  return { child, base, startedAt };
}

async function api(base: string, method: string, p: string, body?: unknown, auth = `Bearer ${ADMIN_KEY}`): Promise<any> {
  const r = await fetch(base + p, {
    method,
    headers: { authorization: auth, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

async function setupBroker(base: string): Promise<{ clientId: string; clientSecret: string }> {
  await api(base, 'POST', '/v1/groups', { name: 'bench', description: 'benchmark group' });
  await api(base, 'POST', '/v1/secrets', { name: 'bench-secret', value: 'correct horse battery staple', groups: ['bench'] });
  const client = await api(base, 'POST', '/v1/clients', { name: 'bench-client', groups: ['bench'] });
  return { clientId: client.clientId, clientSecret: client.clientSecret };
}

async function token(base: string, creds: { clientId: string; clientSecret: string }): Promise<string> {
  const r = await fetch(`${base}/v1/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: creds.clientId, client_secret: creds.clientSecret }),
  });
  if (!r.ok) throw new Error(`token: ${r.status} ${await r.text()}`);
  return ((await r.json()) as { access_token: string }).access_token;
}

async function delivery(pid: number, base: string, creds: { clientId: string; clientSecret: string }, label: string, secret = 'bench-secret'): Promise<LoadResult> {
  const t = await token(base, creds);
  const url = `${base}/v1/client/secrets/${secret}`;
  const check = await fetch(url, { headers: { authorization: `Bearer ${t}` } });
  if (check.status !== 200) throw new Error(`delivery check: ${check.status} ${await check.text()}`);
  await check.arrayBuffer();
  const r = await measure(pid, url, [`Authorization: Bearer ${t}`]);
  log(`${label}: ${fmt(r)}`);
  return r;
}

function runNode(script: string, args: string[], dataDir: string, env: NodeJS.ProcessEnv = {}): string {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'bench', script), ...args], {
    cwd: root,
    env: { ...process.env, KEYWARDEN_DATA_DIR: dataDir, KEYWARDEN_LOG_LEVEL: 'warn', ...env },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`${script} failed with ${r.status}`);
  return r.stdout;
}

function auditRows(dataDir: string): number {
  const out = spawnSync(process.execPath, ['-e', `const D=require('better-sqlite3');const d=new D(process.argv[1],{readonly:true});console.log(d.prepare('select count(*) n from audit_events').get().n)`, path.join(dataDir, 'keywarden.db')], { cwd: root, encoding: 'utf8' });
  return Number(out.stdout.trim());
}

// ---------------------------------------------------------------- (v) Vault KV read vs native delivery (issue 14)
/**
 * The same KV-shaped secret, granted to the bench client, read four ways, alternating `repeat`
 * times (median by req/s): the native route and the KV v2 route of the broker as it is (LIST
 * connections taken over on demand, list-connection.ts); the native route of a broker with helper
 * V1's always-on LIST rewrite put back (bench/always-on-list-rewrite.ts); and the KV route on
 * connections whose first request was a LIST (so they run through the rewriter). Each broker has
 * its own data dir; both run throughout, one is loaded at a time. Every run goes through the same
 * wrk Lua script, so the load generator does the same work in all four.
 */
async function vaultComparison(): Promise<Record<string, unknown>> {
  const dirNew = fs.mkdtempSync(path.join(values.tmpdir!, 'keywarden-bench-v-'));
  const dirOld = fs.mkdtempSync(path.join(values.tmpdir!, 'keywarden-bench-v1-'));
  const current = await startBroker(dirNew);
  const always = await startBroker(dirOld, [], ['--import', path.join(root, 'bench', 'always-on-list-rewrite.ts')]);
  const scripts = fs.mkdtempSync(path.join(os.tmpdir(), 'keywarden-bench-lua-'));
  try {
    const setup = async (base: string) => {
      const creds = await setupBroker(base);
      await api(base, 'PUT', '/v1/secret/data/bench-kv', { data: { password: 'correct horse battery staple' } });
      await api(base, 'PUT', '/v1/groups/bench/secrets', { add: ['bench-kv'] });
      return creds;
    };
    const credsNew = await setup(current.base);
    const credsOld = await setup(always.base);
    // `lists` requests (one per connection at the start, as wrk writes each connection's first
    // request before any answer) are LIST /v1/secret/metadata/; the rest are the measured GET.
    // wrk checks the first request() result with its own parser, which refuses LIST: call 1 is a GET
    const script = (lists: number) => {
      const file = path.join(scripts, `list-${lists}.lua`);
      fs.writeFileSync(file, `local n = 0\nrequest = function()\n  n = n + 1\n  if n > 1 and n <= ${lists + 1} then return wrk.format("LIST", "/v1/secret/metadata/") end\n  return wrk.format(nil, nil)\nend\n`);
      return file;
    };
    const scenarios = [
      { key: 'native', label: 'native GET /v1/client/secrets/bench-kv', broker: current, creds: credsNew, path: '/v1/client/secrets/bench-kv', header: 'Authorization: Bearer', lists: 0 },
      { key: 'nativeAlwaysOnRewrite', label: 'native, V1 always-on LIST rewrite', broker: always, creds: credsOld, path: '/v1/client/secrets/bench-kv', header: 'Authorization: Bearer', lists: 0 },
      { key: 'kv', label: 'KV v2 GET /v1/secret/data/bench-kv', broker: current, creds: credsNew, path: '/v1/secret/data/bench-kv', header: 'X-Vault-Token:', lists: 0 },
      { key: 'kvAfterList', label: 'KV v2 on connections that sent LIST first', broker: current, creds: credsNew, path: '/v1/secret/data/bench-kv', header: 'X-Vault-Token:', lists: connections },
    ];
    const runs: Record<string, (LoadResult & { serverCpuMsPerRequest: number })[]> = Object.fromEntries(scenarios.map((s) => [s.key, []]));
    const once = async (s: (typeof scenarios)[number], label: string) => {
      const t = await token(s.broker.base, s.creds);
      const header = `${s.header} ${t}`;
      const check = await fetch(s.broker.base + s.path, { headers: { [header.split(':')[0]]: header.slice(header.indexOf(':') + 1).trim() } });
      if (check.status !== 200) throw new Error(`${s.key} check: ${check.status} ${await check.text()}`);
      await check.arrayBuffer();
      const r = await measure(s.broker.child.pid!, s.broker.base + s.path, [header], script(s.lists));
      log(`(v) ${s.label}, ${label}: ${fmt(r)}`);
      return r;
    };
    for (const s of scenarios) await once(s, 'warm-up (discarded)');
    const repeat = Number(values.repeat);
    for (let i = 0; i < repeat; i++) for (const s of scenarios) runs[s.key].push(await once(s, `run ${i + 1}/${repeat}`));
    const median = <T extends LoadResult>(xs: T[]): T => [...xs].sort((x, y) => x.rps - y.rps)[Math.floor(xs.length / 2)];
    const m = Object.fromEntries(scenarios.map((s) => [s.key, median(runs[s.key])]));
    const cpu = (k: string) => m[k].serverCpuMsPerRequest;
    const ratios = {
      kvCpuPerRequestOverNative: cpu('kv') / cpu('native'),
      kvRpsOverNative: m.kv.rps / m.native.rps,
      kvAfterListCpuPerRequestOverNative: cpu('kvAfterList') / cpu('native'),
      alwaysOnCpuPerRequestOverNative: cpu('nativeAlwaysOnRewrite') / cpu('native'),
      alwaysOnRpsOverNative: m.nativeAlwaysOnRewrite.rps / m.native.rps,
    };
    log(`(v) ratios: ${JSON.stringify(ratios)}`);
    return { medians: m, runs, ratios };
  } finally {
    await stop(current.child);
    await stop(always.child);
    fs.rmSync(scripts, { recursive: true, force: true });
    if (!values.keep) for (const d of [dirNew, dirOld]) fs.rmSync(d, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- main
const dataDir = fs.mkdtempSync(path.join(values.tmpdir!, 'keywarden-bench-'));
log(`tool: ${tool}, ${connections} connections, ${duration} s per run, data dir ${dataDir}`);
try {
  if (only.has('v')) results.v = await vaultComparison();
  // (a) and (b) alternate `repeat` times (the host may be shared: alternating spreads any
  // background load over both); the median run by req/s is reported.
  const repeat = Number(values.repeat);
  const median = <T extends LoadResult>(xs: T[]): T => [...xs].sort((x, y) => x.rps - y.rps)[Math.floor(xs.length / 2)];
  const aRuns: LoadResult[] = [];
  const bRuns: LoadResult[] = [];
  let broker = await startBroker(dataDir);
  const creds = await setupBroker(broker.base);
  if (only.has('b')) await delivery(broker.child.pid!, broker.base, creds, '(b) warm-up (discarded)');
  for (let i = 0; i < repeat; i++) {
    if (only.has('a') || only.has('b')) aRuns.push(await baseline());
    if (only.has('b')) bRuns.push(await delivery(broker.child.pid!, broker.base, creds, `(b) secret delivery, run ${i + 1}/${repeat}`));
  }
  if (aRuns.length) results.a = { median: median(aRuns), runs: aRuns };
  if (bRuns.length) {
    const a = aRuns.length ? median(aRuns) : undefined;
    const b = median(bRuns);
    results.b = { median: b, runs: bRuns, ratioToBaseline: a ? b.rps / a.rps : null, auditRowsAfter: auditRows(dataDir) };
    log(`(b) median ${b.rps.toFixed(0)} req/s vs (a) median ${a?.rps.toFixed(0)} req/s: ${a ? ((100 * b.rps) / a.rps).toFixed(1) : '?'}% (target >= 50%)`);
  }
  if (only.has('b')) {
    // per-component costs, in-process and sequential (server stopped: SQLite has one writer)
    await stop(broker.child);
    const comp = runNode('components.ts', ['2000'], dataDir);
    results.components = comp;
    process.stdout.write(`\n---- per-component cost of a delivery (in-process, sequential) ----\n${comp}\n`);
    broker = await startBroker(dataDir);
  }
  if (values.profile) {
    await stop(broker.child);
    const profDir = path.join(root, 'bench', 'profiles');
    fs.mkdirSync(profDir, { recursive: true });
    for (const f of fs.readdirSync(profDir)) if (f.endsWith('.cpuprofile')) fs.rmSync(path.join(profDir, f));
    broker = await startBroker(dataDir, ['--cpu-prof', `--cpu-prof-dir=${profDir}`]);
    const skipMs = Date.now() - broker.startedAt; // leave start-up (module loading, migrations) out of the summary
    const p = await delivery(broker.child.pid!, broker.base, creds, '(b) profiled run (slower: profiler on)');
    await stop(broker.child);
    const prof = fs.readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
    results.profile = { run: p, file: prof ? path.join('bench', 'profiles', prof) : null };
    if (prof) process.stdout.write(runNode('profile-summary.ts', [path.join(profDir, prof), '30', String(skipMs)], dataDir));
    broker = await startBroker(dataDir);
  }
  if (only.has('c')) {
    const c: Record<string, unknown> = {};
    for (const [label, total] of [['small', Number(values['seed-small'])], ['large', Number(values['seed-large'])]] as const) {
      await stop(broker.child);
      log(`(c) seeding to ${total} secrets through SecretsService.create ...`);
      const seed = JSON.parse(runNode('seed.ts', ['--total', String(total)], dataDir).trim().split('\n').pop()!);
      log(`(c) seeded ${seed.created} in ${seed.seconds.toFixed(1)} s`);
      const explain = runNode('explain.ts', ['bench-client', 'bench-secret'], dataDir);
      broker = await startBroker(dataDir);
      await delivery(broker.child.pid!, broker.base, creds, `(c) warm-up ${total} (discarded)`);
      const r = await delivery(broker.child.pid!, broker.base, creds, `(c) delivery with ${total} secrets`);
      // a seeded secret too, from the middle of the table
      const mid = `seed-${String(Math.floor(total / 2 / 10) * 10).padStart(6, '0')}`;
      const rMid = await delivery(broker.child.pid!, broker.base, creds, `(c) delivery of ${mid} with ${total} secrets`, mid);
      // the same per-component costs as in (b), at this table size (server stopped again)
      await stop(broker.child);
      const components = runNode('components.ts', ['2000'], dataDir);
      process.stdout.write(`\n---- per-component cost with ${total} secrets ----\n${components}\n`);
      broker = await startBroker(dataDir);
      c[label] = { secrets: total, seed, delivery: r, deliveryOfSeeded: { secret: mid, ...rMid }, explain, components, auditRowsAfter: auditRows(dataDir) };
      process.stdout.write(`\n---- EXPLAIN QUERY PLAN with ${total} secrets ----\n${explain}\n`);
    }
    results.c = c;
  }
  if (only.has('d')) {
    await stop(broker.child);
    if (fs.existsSync(path.join(root, 'bench', 'gate.ts'))) {
      results.d = JSON.parse(runNode('gate.ts', [], dataDir).trim().split('\n').pop()!);
      log(`(d) ${JSON.stringify(results.d)}`);
    } else {
      results.d = 'not measured: bench/gate.ts missing';
    }
    // the gate over HTTP (target 6): real registry and notary, 1 and 16 callers, cached and
    // uncached; on PostgreSQL too when KEYWARDEN_TEST_DATABASE_URL names one
    const gateHttp = (env: NodeJS.ProcessEnv) => JSON.parse(runNode('gate-http.ts', [String(Math.min(duration, 3))], dataDir, env).trim().split('\n').pop()!);
    results.dHttp = { sqlite: gateHttp({ KEYWARDEN_TEST_DATABASE_URL: '' }), ...(process.env.KEYWARDEN_TEST_DATABASE_URL ? { postgres: gateHttp({}) } : {}) };
    log(`(d, HTTP) ${JSON.stringify(results.dHttp)}`);
  }
  await stop(broker.child);
} finally {
  fs.writeFileSync(values.out!, JSON.stringify(results, null, 2) + '\n');
  log(`results written to ${values.out}`);
  if (!values.keep) fs.rmSync(dataDir, { recursive: true, force: true });
}
