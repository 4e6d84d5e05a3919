// What bench/run.ts and its scenarios share: the machine's description, the stores a broker runs
// on (a SQLite data dir, or a fresh PostgreSQL database on the same server), processes pinned to
// a core, the broker and the bare node:http baseline as child processes, the admin API, the load
// generators (wrk or bench/loadgen.ts closed loop, bench/open-loop.ts, bench/storm.ts) and the
// server CPU they cost, read from /proc.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { loadAverage, round } from './audit-bench-support.js';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ADMIN_KEY = 'kw_bench' + 'A'.repeat(32) + '0123456789';

export function log(msg: string) {
  process.stderr.write(`[bench] ${new Date().toISOString().slice(11, 19)} ${msg}\n`);
}

// ---------------------------------------------------------------- the machine and the moment
/** nproc, CPU model (/proc/cpuinfo), RAM, Node version and kernel: recorded once per run. */
export function machine(): Record<string, unknown> {
  let cpuModel = os.cpus()[0]?.model ?? 'unknown';
  try {
    cpuModel = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpuModel;
  } catch {
    /* not Linux: os.cpus() is what there is */
  }
  const nproc = Number(spawnSync('nproc', { encoding: 'utf8' }).stdout?.trim()) || os.availableParallelism();
  return { nproc, cpuModel, ramGiB: round(os.totalmem() / 2 ** 30, 1), node: process.version, kernel: os.release(), hostname: os.hostname() };
}

/** When a scenario ran, and the load average at that moment (the machine may be shared). */
export function moment(): { date: string; loadAverage: number[] } {
  return { date: new Date().toISOString(), loadAverage: loadAverage() };
}

/** Runs `fn` and records its start and end moments around its result. */
export async function timed<T extends object>(fn: () => Promise<T>): Promise<T & { started: ReturnType<typeof moment>; ended: ReturnType<typeof moment> }> {
  const started = moment();
  const r = await fn();
  return { ...r, started, ended: moment() };
}

// ---------------------------------------------------------------- pinning
/**
 * The broker (and the baseline server) on core 0, every load generator on core 1, when `taskset`
 * exists and the machine has two cores or more. PostgreSQL is not pinned: it shares the cores.
 */
export const pinning = { enabled: false, serverCore: 0, loadCore: 1 };

export function configurePinning(mode: string): { enabled: boolean; reason: string } {
  const hasTaskset = spawnSync('sh', ['-c', 'command -v taskset'], { encoding: 'utf8' }).status === 0;
  const cores = os.availableParallelism();
  if (mode === 'off') return { enabled: (pinning.enabled = false), reason: '--pin off' };
  if (!hasTaskset || cores < 2) {
    if (mode === 'on') log(`pinning asked for but ${hasTaskset ? `only ${cores} core` : 'taskset is missing'}: not pinned`);
    return { enabled: (pinning.enabled = false), reason: hasTaskset ? `${cores} core` : 'no taskset' };
  }
  pinning.enabled = true;
  return { enabled: true, reason: `server on core ${pinning.serverCore}, load generators on core ${pinning.loadCore}` };
}

/** [command, args] for `command args`, under `taskset -c <core>` when pinning is on (taskset execs: the pid is the command's). */
export function pinned(role: 'server' | 'load', command: string, args: string[]): [string, string[]] {
  if (!pinning.enabled) return [command, args];
  return ['taskset', ['-c', String(role === 'server' ? pinning.serverCore : pinning.loadCore), command, ...args]];
}

// ---------------------------------------------------------------- stores
export type DatabaseKind = 'sqlite' | 'postgres';

export interface Store {
  kind: DatabaseKind;
  /** the data dir: the SQLite file and, on both, the root key file */
  dataDir: string;
  /** PostgreSQL: the fresh database's name and URL */
  dbName?: string;
  databaseUrl?: string;
  /** KEYWARDEN_* variables that point a broker or a bench script at this store */
  env: Record<string, string>;
}

export const storeOptions = { tmpdir: os.tmpdir(), postgresUrl: 'postgres://postgres@127.0.0.1:5432/postgres', keep: false };
const openStores = new Set<Store>();
let storeCount = 0;

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: storeOptions.postgresUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/**
 * A fresh store for one scenario: a new data dir, and on PostgreSQL a new database
 * kw_bench_<pid>_<n>_<label> on the server of --database-url (created here, dropped by dropStore).
 */
export async function createStore(kind: DatabaseKind, label: string): Promise<Store> {
  const dataDir = fs.mkdtempSync(path.join(storeOptions.tmpdir, `keywarden-bench-${kind}-${label}-`));
  const store: Store = { kind, dataDir, env: { KEYWARDEN_DATA_DIR: dataDir } };
  if (kind === 'postgres') {
    store.dbName = `kw_bench_${process.pid}_${++storeCount}_${label.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}`;
    await adminQuery(`create database "${store.dbName}"`);
    const url = new URL(storeOptions.postgresUrl);
    url.pathname = `/${store.dbName}`;
    store.databaseUrl = url.toString();
    store.env.KEYWARDEN_DATABASE_URL = store.databaseUrl;
  }
  openStores.add(store);
  return store;
}

export async function dropStore(store: Store): Promise<void> {
  openStores.delete(store);
  if (storeOptions.keep) {
    log(`kept ${store.dataDir}${store.dbName ? ` and database ${store.dbName}` : ''}`);
    return;
  }
  if (store.dbName) await adminQuery(`drop database if exists "${store.dbName}" with (force)`);
  fs.rmSync(store.dataDir, { recursive: true, force: true });
}

/** Drops every store still open (the run failed or was interrupted). */
export async function dropAllStores(): Promise<void> {
  for (const s of [...openStores]) await dropStore(s).catch((err) => log(`could not drop ${s.dbName ?? s.dataDir}: ${err}`));
}

// ---------------------------------------------------------------- processes
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export async function waitFor(url: string, child: ChildProcess, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    try {
      const r = await fetch(url);
      await r.arrayBuffer();
      if (r.ok) return;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${url}`);
}

const children = new Set<ChildProcess>();

export function stop(child: ChildProcess): Promise<void> {
  children.delete(child);
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** Stops every server and load generator this process started and has not stopped yet. */
export async function stopAll(): Promise<void> {
  await Promise.all([...children].map(stop));
}

/** user+system CPU time of a process (all threads), in ms, from /proc. */
export function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}

/**
 * CPU (ms) of the PostgreSQL backends serving database `dbName` (their process title is
 * "postgres: <user> <db> <address> ..."), by pid, so a backend that exits mid-run only loses its
 * own share. The server's shared processes (WAL writer, checkpointer) are not in it.
 */
export function backendCpuMs(dbName: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (!cmdline.startsWith('postgres: ') || !cmdline.split(' ').includes(dbName)) continue;
      out.set(Number(entry), cpuMs(Number(entry)));
    } catch {
      /* gone meanwhile, or not ours to read */
    }
  }
  return out;
}

/** A CPU meter over the broker process and, on PostgreSQL, its database's backends. */
export function cpuMeter(pid: number, dbName?: string): () => { serverCpuMs: number; databaseCpuMs?: number; wallMs: number } {
  const t0 = Date.now();
  const c0 = cpuMs(pid);
  const b0 = dbName ? backendCpuMs(dbName) : undefined;
  return () => {
    const serverCpuMs = cpuMs(pid) - c0;
    let databaseCpuMs: number | undefined;
    if (dbName) {
      databaseCpuMs = 0;
      for (const [p, ms] of backendCpuMs(dbName)) databaseCpuMs += ms - (b0!.get(p) ?? 0);
    }
    return { serverCpuMs, databaseCpuMs, wallMs: Date.now() - t0 };
  };
}

// ---------------------------------------------------------------- the baseline and the broker
export interface ServerProc {
  child: ChildProcess;
  base: string;
  startedAt: number;
  store?: Store;
}

export async function startBaseline(): Promise<ServerProc> {
  const port = await freePort();
  const [cmd, args] = pinned('server', process.execPath, ['--import', 'tsx', path.join(root, 'bench', 'baseline-server.ts'), String(port)]);
  const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  children.add(child);
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`${base}/`, child);
  return { child, base, startedAt: Date.now() };
}

/** `preload`: node arguments after tsx is loaded (e.g. `--import bench/x.ts`); `env`: extra KEYWARDEN_* settings. */
export async function startBroker(store: Store, opts: { nodeArgs?: string[]; preload?: string[]; env?: Record<string, string> } = {}): Promise<ServerProc> {
  const port = await freePort();
  const startedAt = Date.now();
  const env = {
    ...process.env,
    ...store.env,
    KEYWARDEN_LISTEN: `127.0.0.1:${port}`,
    KEYWARDEN_LOG_LEVEL: 'warn',
    KEYWARDEN_BOOTSTRAP_ADMIN_KEY: ADMIN_KEY,
    ...opts.env,
  };
  const [cmd, args] = pinned('server', process.execPath, [...(opts.nodeArgs ?? []), '--import', 'tsx', ...(opts.preload ?? []), path.join(root, 'src', 'cli', 'main.ts'), 'serve']);
  const child = spawn(cmd, args, { cwd: root, env, stdio: ['ignore', 'ignore', 'inherit'] });
  children.add(child);
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`${base}/healthz`, child);
  return { child, base, startedAt, store };
}

// ---------------------------------------------------------------- the admin API
export interface Creds {
  clientId: string;
  clientSecret: string;
}

export async function api(base: string, method: string, p: string, body?: unknown, auth = `Bearer ${ADMIN_KEY}`): Promise<any> {
  const r = await fetch(base + p, {
    method,
    headers: { authorization: auth, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

/** The bench group, its secret `bench-secret`, and the client `bench-client` in the group. */
export async function setupBroker(base: string): Promise<Creds> {
  await api(base, 'POST', '/v1/groups', { name: 'bench', description: 'benchmark group' });
  await api(base, 'POST', '/v1/secrets', { name: 'bench-secret', value: 'correct horse battery staple', groups: ['bench'] });
  const client = await api(base, 'POST', '/v1/clients', { name: 'bench-client', groups: ['bench'] });
  return { clientId: client.clientId, clientSecret: client.clientSecret };
}

export async function token(base: string, creds: Creds): Promise<string> {
  const r = await fetch(`${base}/v1/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', client_id: creds.clientId, client_secret: creds.clientSecret }),
  });
  if (!r.ok) throw new Error(`token: ${r.status} ${await r.text()}`);
  return ((await r.json()) as { access_token: string }).access_token;
}

/** A fresh token for `creds`, checked once against the secret's delivery URL: the header for the load. */
export async function deliveryHeader(base: string, creds: Creds, secret = 'bench-secret'): Promise<{ url: string; header: string }> {
  const t = await token(base, creds);
  const url = `${base}/v1/client/secrets/${secret}`;
  const check = await fetch(url, { headers: { authorization: `Bearer ${t}` } });
  if (check.status !== 200) throw new Error(`delivery check: ${check.status} ${await check.text()}`);
  await check.arrayBuffer();
  return { url, header: `Authorization: Bearer ${t}` };
}

/** Runs `fn` over `items`, `concurrency` at a time. */
export async function pool<T, R>(items: T[], concurrency: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i], i);
      }
    }),
  );
  return out;
}

// ---------------------------------------------------------------- bench scripts
/** Runs a bench script in-process with a store's settings (server stopped on SQLite: one writer); its stdout. */
export function runScript(script: string, args: string[], store: Store): string {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(root, 'bench', script), ...args], {
    cwd: root,
    env: { ...process.env, ...store.env, KEYWARDEN_LOG_LEVEL: 'warn' },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`${script} failed with ${r.status}`);
  return r.stdout;
}

/** Last line of a script's stdout, parsed. */
export const lastJson = (out: string) => JSON.parse(out.trim().split('\n').pop()!);

/** Runs a load-generating bench script as its own process (on the load core) without blocking this one; its last JSON line. */
export function runLoadScript(script: string, args: string[]): Promise<any> {
  const [cmd, argv] = pinned('load', process.execPath, ['--import', 'tsx', path.join(root, 'bench', script), ...args]);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    children.add(child); // stopped with the servers when the run is interrupted
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('exit', (code) => {
      children.delete(child);
      if (code !== 0) return reject(new Error(`${script} exited with ${code}`));
      try {
        resolve(lastJson(out));
      } catch (err) {
        reject(err);
      }
    });
  });
}

// ---------------------------------------------------------------- closed-loop load
export interface LoadResult {
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

export type Measured = LoadResult & { serverCpuMsPerRequest: number; serverCpuUtil: number; databaseCpuMsPerRequest?: number; loadavg1Before: number };

export const loadOptions = { tool: 'wrk', connections: 64, duration: 10 };

export function hasWrk(): boolean {
  return spawnSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' }).status === 0;
}

function toMs(v: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(v.trim());
  if (!m) return NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : n * 60_000;
}

/** A closed loop (each connection sends its next request when the answer arrives) of `loadOptions.duration` seconds. */
export async function load(url: string, headers: string[] = [], wrkScript?: string, duration = loadOptions.duration): Promise<LoadResult> {
  const { tool, connections } = loadOptions;
  if (tool === 'wrk') {
    const [cmd, args] = pinned('load', 'wrk', ['-t1', `-c${connections}`, `-d${duration}s`, '--latency', ...headers.flatMap((h) => ['-H', h]), ...(wrkScript ? ['-s', wrkScript] : []), url]);
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`wrk failed: ${r.stderr}`);
    const out = r.stdout;
    const pick = (re: RegExp) => re.exec(out)?.[1];
    return {
      tool: 'wrk 1 thread',
      connections,
      durationS: toMs(pick(/requests in ([\d.]+\w+),/) ?? 'NaN') / 1000,
      requests: Number(pick(/(\d+) requests in/)),
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
  return runLoadScript('loadgen.ts', ['--url', url, '-c', String(connections), '-d', String(duration), ...headers.flatMap((h) => ['-H', h])]);
}

/** Runs closed-loop load against a server process and adds its CPU per request (and its database backends', on PostgreSQL). */
export async function measure(server: ServerProc, url: string, headers: string[] = [], wrkScript?: string): Promise<Measured> {
  const loadavg1Before = os.loadavg()[0];
  const meter = cpuMeter(server.child.pid!, server.store?.dbName);
  const r = await load(url, headers, wrkScript);
  const { serverCpuMs, databaseCpuMs, wallMs } = meter();
  const n = Math.max(r.requests, 1);
  return { ...r, serverCpuMsPerRequest: serverCpuMs / n, serverCpuUtil: serverCpuMs / wallMs, ...(databaseCpuMs !== undefined ? { databaseCpuMsPerRequest: databaseCpuMs / n } : {}), loadavg1Before };
}

/**
 * Before a measured run on a freshly started broker: 2 s of closed-loop deliveries (JIT, pools,
 * caches), then up to 10 s for its start-up work (first verification pass, integrity scan) to end,
 * i.e. until it uses under 5% of a core over half a second.
 */
export async function warmUp(broker: ServerProc, creds: Creds): Promise<void> {
  const { url, header } = await deliveryHeader(broker.base, creds);
  await load(url, [header], undefined, 2);
  await settle(broker);
}

export async function settle(server: ServerProc, maxMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < maxMs) {
    const c0 = cpuMs(server.child.pid!);
    await new Promise((r) => setTimeout(r, 500));
    if (cpuMs(server.child.pid!) - c0 < 25) return;
  }
}

export function fmt(r: LoadResult & Partial<Measured>): string {
  const db = r.databaseCpuMsPerRequest !== undefined ? `, PostgreSQL backends ${(r.databaseCpuMsPerRequest * 1000).toFixed(0)} us/request` : '';
  const extra = r.serverCpuMsPerRequest !== undefined ? `; server CPU ${(r.serverCpuMsPerRequest * 1000).toFixed(0)} us/request, ${(100 * r.serverCpuUtil!).toFixed(0)}% of a core${db}; loadavg ${r.loadavg1Before!.toFixed(1)}` : '';
  return `${r.rps.toFixed(0)} req/s, p50 ${r.p50.toFixed(2)} ms, p90 ${r.p90.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms (${r.requests} requests, ${r.non2xx} non-2xx, ${r.errors} socket errors${r.socketErrors ? `: ${r.socketErrors}` : ''})${extra}`;
}

/** The median of `xs` by `key` (the upper one of an even count). */
export function median<T>(xs: T[], key: (x: T) => number): T {
  return [...xs].sort((x, y) => key(x) - key(y))[Math.floor(xs.length / 2)];
}

export function medianOf(xs: number[]): number {
  return median(xs, (x) => x);
}

// ---------------------------------------------------------------- the run's options
/** What bench/run.ts parsed, as the scenarios read it. */
export interface BenchOptions {
  databases: DatabaseKind[];
  repeat: number;
  /** (o) */
  openRate: number;
  openSeconds: number;
  openConnections: number;
  /** (s) */
  stormClients: number;
  stormSecrets: number;
  spreadConcurrency: number;
  /** (l) */
  loopSeconds: number;
  loopRate: number;
  scrapeSeconds: number;
  /** (c) and (f) */
  seedSmall: number;
  seedLarge: number;
  clientsSmall: number;
  clientsLarge: number;
}

export const databaseLabel = (kind: DatabaseKind) => (kind === 'sqlite' ? 'SQLite' : 'PostgreSQL');
