/**
 * Test support: a private PostgreSQL cluster on a free loopback port, for
 * reliability tests that must stop, freeze and restart "the database" without
 * disturbing the shared server on 5432.
 *
 * Usage:
 *
 *   const pg = pgClusterAvailable();             // { ok } or skip (throws under KEYWARDEN_REQUIRE_TOOLS=1)
 *   const cluster = await startPgCluster();      // initdb + start; cluster.url() is a postgres:// URL
 *   await cluster.stop();                        // pg_ctl stop -m immediate (like a crash)
 *   await cluster.start();                       // start again on the same port and data dir
 *   await cluster.freeze();                      // SIGSTOP postmaster and every backend: sockets stay open, nothing answers
 *   await cluster.thaw();                        // SIGCONT
 *   await cluster.restart();                     // stop -m immediate + start
 *   await cluster.destroy();                     // thaw, stop, remove the data dir (always call it in afterAll)
 *
 * PostgreSQL refuses to run as root, so when the tests run as root every
 * server-side command runs as the `postgres` user (runuser) and the data
 * directory is chowned to it. A process 'exit' hook thaws and stops clusters
 * that a crashed test left behind, so a frozen postmaster never outlives the run.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../support/registry.js';

const execFileAsync = promisify(execFile);

/** Directory holding initdb/pg_ctl/postgres; KEYWARDEN_PG_BIN_DIR overrides the search of /usr/lib/postgresql/<ver>/bin. */
export const PG_BIN_DIR: string | undefined = process.env.KEYWARDEN_PG_BIN_DIR ?? findPgBinDir();

function findPgBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length ? join(root, versions[0]!, 'bin') : undefined;
}

/**
 * Whether private clusters can be made here; when not, the reason is printed.
 * Under KEYWARDEN_REQUIRE_TOOLS=1 (CI) a missing tool throws instead of skipping.
 */
export function pgClusterAvailable(): { ok: boolean; reason?: string } {
  let reason: string | undefined;
  if (!PG_BIN_DIR || !existsSync(join(PG_BIN_DIR, 'pg_ctl'))) {
    reason = 'PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin (install postgresql or set KEYWARDEN_PG_BIN_DIR)';
  } else if (isRoot() && !postgresUserExists()) {
    reason = 'running as root but there is no "postgres" user to run the private cluster as';
  }
  if (!reason) return { ok: true };
  reason += '; skipping private-cluster tests';
  if (process.env.KEYWARDEN_REQUIRE_TOOLS === '1') throw new Error(reason);
  console.warn(reason);
  return { ok: false, reason };
}

export interface PgCluster {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** The cluster's directory (data dir, socket and log live inside). */
  readonly dir: string;
  /** postgres://postgres@127.0.0.1:PORT/<database> (trust auth; "postgres" database by default). */
  url(database?: string): string;
  /** Whether the server is running (started and not stopped); a frozen server counts as running. */
  readonly running: boolean;
  readonly frozen: boolean;
  /** Starts the server (again) on the same port and data dir; resolves when it accepts connections. */
  start(): Promise<void>;
  /** Crash-like stop: `pg_ctl stop -m immediate`. Thaws first if frozen. */
  stop(): Promise<void>;
  /** stop() then start(). */
  restart(): Promise<void>;
  /** SIGSTOP the postmaster and all its children: connections stay open but nothing answers. */
  freeze(): Promise<void>;
  /** SIGCONT what freeze() stopped. */
  thaw(): Promise<void>;
  /** Runs SQL with psql against `database` and returns its unaligned, tuples-only output. */
  psql(sql: string, database?: string): Promise<string>;
  /** Thaws, stops and removes the cluster directory. Safe to call more than once. */
  destroy(): Promise<void>;
  /** The tail of the server log (for failure messages). */
  logTail(): string;
}

export interface PgClusterOptions {
  /** Extra server settings, passed as `-c name=value` (e.g. { max_connections: '20' }). */
  settings?: Record<string, string>;
}

const liveClusters = new Set<ClusterImpl>();
let exitHookInstalled = false;

/** initdb a new cluster in a temp dir and start it on a free loopback port. */
export async function startPgCluster(options: PgClusterOptions = {}): Promise<PgCluster> {
  if (!PG_BIN_DIR) throw new Error('PostgreSQL binaries not found (check pgClusterAvailable() first)');
  const dir = mkdtempSync(join(tmpdir(), 'kw-pg-'));
  if (isRoot()) chownToPostgres(dir);
  const cluster = new ClusterImpl(dir, 0, options.settings ?? {});
  liveClusters.add(cluster);
  installExitHook();
  try {
    await cluster.runAsServerUser('initdb', ['-D', cluster.dataDir, '-A', 'trust', '-U', 'postgres', '-E', 'UTF8', '--no-sync', '--no-instructions']);
    // A free port can be taken between probing and binding; try a few.
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      cluster.port = await freePort();
      try {
        await cluster.start();
        return cluster;
      } catch (err) {
        lastError = err;
      }
    }
    throw lastError;
  } catch (err) {
    await cluster.destroy().catch(() => undefined);
    throw err;
  }
}

class ClusterImpl implements PgCluster {
  readonly host = '127.0.0.1' as const;
  running = false;
  frozen = false;
  private frozenPids: number[] = [];
  private destroyed = false;

  constructor(
    readonly dir: string,
    public port: number,
    private readonly settings: Record<string, string>,
  ) {}

  get dataDir(): string {
    return join(this.dir, 'data');
  }

  private get logFile(): string {
    return join(this.dir, 'server.log');
  }

  url(database = 'postgres'): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  async runAsServerUser(binary: string, args: string[], timeoutMs = 60_000): Promise<string> {
    const full = join(PG_BIN_DIR!, binary);
    const [cmd, argv] = isRoot() ? ['runuser', ['-u', 'postgres', '--', full, ...args]] : [full, args];
    try {
      const { stdout } = await execFileAsync(cmd, argv, { timeout: timeoutMs, cwd: this.dir });
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`${binary} failed: ${e.stderr || e.message}\n${this.logTail()}`);
    }
  }

  async start(): Promise<void> {
    if (this.destroyed) throw new Error('cluster destroyed');
    if (this.running) return;
    const serverOptions = [
      `-k ${this.dir}`,
      `-p ${this.port}`,
      '-c listen_addresses=127.0.0.1',
      ...Object.entries(this.settings).map(([k, v]) => `-c ${k}=${v}`),
    ].join(' ');
    await this.runAsServerUser('pg_ctl', ['-D', this.dataDir, '-l', this.logFile, '-w', '-t', '30', '-o', serverOptions, 'start']);
    this.running = true;
  }

  async stop(): Promise<void> {
    if (this.frozen) await this.thaw();
    if (!this.running) return;
    await this.runAsServerUser('pg_ctl', ['-D', this.dataDir, '-m', 'immediate', '-w', '-t', '30', 'stop']);
    this.running = false;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  async freeze(): Promise<void> {
    if (!this.running || this.frozen) return;
    const postmaster = this.postmasterPid();
    // Stop the postmaster first so it cannot fork new backends while we stop the others.
    process.kill(postmaster, 'SIGSTOP');
    this.frozenPids = [postmaster];
    this.frozen = true;
    for (const pid of childPids(postmaster)) {
      try {
        process.kill(pid, 'SIGSTOP');
        this.frozenPids.push(pid);
      } catch {
        /* exited meanwhile */
      }
    }
  }

  async thaw(): Promise<void> {
    if (!this.frozen) return;
    // Children first, postmaster last (reverse of freeze).
    for (const pid of [...this.frozenPids].reverse()) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        /* gone */
      }
    }
    this.frozenPids = [];
    this.frozen = false;
  }

  async psql(sql: string, database = 'postgres'): Promise<string> {
    const { stdout } = await execFileAsync(
      join(PG_BIN_DIR!, 'psql'),
      ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(this.port), '-U', 'postgres', '-d', database, '-c', sql],
      { timeout: 30_000 },
    );
    return stdout.trim();
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    try {
      await this.stop();
    } finally {
      this.destroyed = true;
      liveClusters.delete(this);
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /** Synchronous best-effort cleanup for the process 'exit' hook. */
  destroySync(): void {
    for (const pid of this.frozenPids) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        /* gone */
      }
    }
    if (this.running) {
      try {
        const full = join(PG_BIN_DIR!, 'pg_ctl');
        const args = ['-D', this.dataDir, '-m', 'immediate', '-w', '-t', '10', 'stop'];
        if (isRoot()) execFileSync('runuser', ['-u', 'postgres', '--', full, ...args], { stdio: 'ignore' });
        else execFileSync(full, args, { stdio: 'ignore' });
      } catch {
        /* best effort */
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  postmasterPid(): number {
    const pid = Number(readFileSync(join(this.dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (!Number.isInteger(pid) || pid <= 0) throw new Error('no postmaster pid');
    return pid;
  }

  logTail(): string {
    try {
      return readFileSync(this.logFile, 'utf8').slice(-3000);
    } catch {
      return '';
    }
  }
}

/** Direct children of `parent`, from /proc (Linux). */
function childPids(parent: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The command name is in parentheses and may contain spaces; fields after it are fixed.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === parent) pids.push(Number(entry));
    } catch {
      /* process exited */
    }
  }
  return pids;
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

function postgresUserExists(): boolean {
  try {
    return readFileSync('/etc/passwd', 'utf8').split('\n').some((l) => l.startsWith('postgres:'));
  } catch {
    return false;
  }
}

function chownToPostgres(dir: string): void {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
  if (!line) throw new Error('no postgres user');
  const [, , uid, gid] = line.split(':');
  chownSync(dir, Number(uid), Number(gid));
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const cluster of liveClusters) cluster.destroySync();
  });
}
