import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Express } from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { bindServer, DEFAULT_DRAIN_MS, ListenError } from '../../src/http/server.js';
import { TEST_DATABASE_URL } from '../support/broker.js';
import { assertFetchMatchesContract } from '../support/contract.js';
import { freePort } from '../support/registry.js';
import { baseEnv, REPO_ROOT, runCli, type CliResult, type CliUser } from '../cli/cli-support.js';

/**
 * Start-up, for real (issue 15): the broker as a child process, as an operator starts it.
 * - An unreachable database stops `serve`, `migrate` and `init` with one line naming the host,
 *   port and database (never the password) and exit 78, not a driver stack trace.
 * - A listen address in use is found before anything is created or printed.
 * - A broker whose stdout reader is gone, or stopped reading, still stops on SIGTERM within the
 *   drain time: logging never blocks it.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-startup-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let dirs = 0;
const newDir = () => path.join(tmp, `site-${++dirs}`);

const PASSWORD = 'pw-that-must-never-appear';

/** A one-line start-up error: `keywarden: <message>`, no stack, no password, no admin key. */
function expectOneLineStartupError(r: CliResult, pattern: RegExp): void {
  expect(r.code, r.stderr).toBe(78);
  const lines = r.stderr.split('\n').filter((l) => l.trim());
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  expect(r.stdout + r.stderr).not.toContain(PASSWORD);
  expect(r.stdout + r.stderr).not.toMatch(/kw_[A-Za-z0-9_-]{40,}/);
}

/** A TCP server that accepts and never answers: a frozen or black-holed database. */
async function silentServer(): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

/**
 * A PostgreSQL server that reads the startup message and answers with an ErrorResponse of the
 * given SQLSTATE, as a real one does for a wrong password (28P01) or a missing database (3D000).
 */
async function refusingPostgres(sqlstate: string, message: string): Promise<{ port: number; close(): void }> {
  const field = (type: string, value: string) => Buffer.concat([Buffer.from(type), Buffer.from(value), Buffer.from([0])]);
  const body = Buffer.concat([field('S', 'FATAL'), field('V', 'FATAL'), field('C', sqlstate), field('M', message), Buffer.from([0])]);
  const header = Buffer.alloc(5);
  header.write('E');
  header.writeInt32BE(body.length + 4, 1);
  const packet = Buffer.concat([header, body]);
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.once('data', () => s.end(packet));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

const run = (args: string[], env: Record<string, string>, user?: CliUser) =>
  runCli(args, baseEnv({ KEYWARDEN_LOG_LEVEL: 'warn', KEYWARDEN_LISTEN: '127.0.0.1:0', ...env }), 120_000, user);

describe('an unreachable database stops the start with one line and exit 78', () => {
  it('connection refused names host, port and database, not the password (serve)', async () => {
    const port = await freePort();
    const r = await run(['serve'], { KEYWARDEN_DATA_DIR: newDir(), KEYWARDEN_DATABASE_URL: `postgres://keywarden:${PASSWORD}@127.0.0.1:${port}/kw` });
    expectOneLineStartupError(r, new RegExp(`^keywarden: cannot connect to the database at 127\\.0\\.0\\.1:${port}/kw \\(connection refused\\); check KEYWARDEN_DATABASE_URL$`));
  }, 150_000);

  it('a host name that does not resolve (serve)', async () => {
    const r = await run(['serve'], { KEYWARDEN_DATA_DIR: newDir(), KEYWARDEN_DATABASE_URL: `postgres://keywarden:${PASSWORD}@kw-db.invalid:5432/kw` });
    // .invalid never resolves (RFC 6761); without any DNS at all the lookup fails as temporary
    expectOneLineStartupError(r, /^keywarden: cannot connect to the database at kw-db\.invalid:5432\/kw \(host name kw-db\.invalid (not found in DNS|could not be resolved: temporary DNS failure)\); check KEYWARDEN_DATABASE_URL$/);
  }, 150_000);

  it('a server that never answers: bounded by KEYWARDEN_DB_ACQUIRE_TIMEOUT_MS (serve)', async () => {
    const frozen = await silentServer();
    try {
      const r = await run(['serve'], {
        KEYWARDEN_DATA_DIR: newDir(),
        KEYWARDEN_DATABASE_URL: `postgres://keywarden:${PASSWORD}@127.0.0.1:${frozen.port}/kw`,
        KEYWARDEN_DB_ACQUIRE_TIMEOUT_MS: '1000',
      });
      expectOneLineStartupError(r, new RegExp(`^keywarden: cannot connect to the database at 127\\.0\\.0\\.1:${frozen.port}/kw \\(no answer within KEYWARDEN_DB_ACQUIRE_TIMEOUT_MS=1000 ms\\); check KEYWARDEN_DATABASE_URL$`));
    } finally {
      frozen.close();
    }
  }, 150_000);

  it.each([
    ['28P01', 'password authentication failed for user "keywarden"', 'authentication failed for user "keywarden"'],
    ['3D000', 'database "kw" does not exist', 'database "kw" does not exist'],
  ])('the server refuses the connection with %s (serve)', async (sqlstate, serverMessage, reason) => {
    const pg = await refusingPostgres(sqlstate, serverMessage);
    try {
      const r = await run(['serve'], { KEYWARDEN_DATA_DIR: newDir(), KEYWARDEN_DATABASE_URL: `postgres://keywarden:${PASSWORD}@127.0.0.1:${pg.port}/kw` });
      expectOneLineStartupError(r, new RegExp(`^keywarden: cannot connect to the database at 127\\.0\\.0\\.1:${pg.port}/kw \\(${reason}\\); check KEYWARDEN_DATABASE_URL$`));
    } finally {
      pg.close();
    }
  }, 150_000);

  it.skipIf(!TEST_DATABASE_URL)('a real PostgreSQL server: a database that does not exist, a role that does not exist (migrate)', async () => {
    const missingDb = new URL(TEST_DATABASE_URL!);
    missingDb.pathname = '/kw_no_such_database';
    const r1 = await run(['migrate'], { KEYWARDEN_DATA_DIR: newDir(), KEYWARDEN_DATABASE_URL: missingDb.toString() });
    expectOneLineStartupError(r1, /^keywarden: cannot connect to the database at .+\/kw_no_such_database \(database "kw_no_such_database" does not exist\); check KEYWARDEN_DATABASE_URL$/);
    const missingRole = new URL(TEST_DATABASE_URL!);
    missingRole.username = 'kw_no_such_role';
    missingRole.password = PASSWORD;
    const r2 = await run(['migrate'], { KEYWARDEN_DATA_DIR: newDir(), KEYWARDEN_DATABASE_URL: missingRole.toString() });
    expectOneLineStartupError(r2, /^keywarden: cannot connect to the database at .+ \((the server refused user "kw_no_such_role"|authentication failed for user "kw_no_such_role").*\); check KEYWARDEN_DATABASE_URL$/);
  }, 150_000);

  it.each([['migrate'], ['init']])('the same line from `keywarden %s`', async (command) => {
    const port = await freePort();
    const r = await run([command!], { KEYWARDEN_DATA_DIR: newDir(), KEYWARDEN_DATABASE_URL: `postgresql://keywarden:${PASSWORD}@127.0.0.1:${port}/kw` });
    expectOneLineStartupError(r, new RegExp(`^keywarden: cannot connect to the database at 127\\.0\\.0\\.1:${port}/kw \\(connection refused\\); check KEYWARDEN_DATABASE_URL$`));
  }, 150_000);

  it('a SQLite file under directories that do not exist names the first missing one, and creates none', async () => {
    const missing = path.join(tmp, 'no-such-dir');
    const file = path.join(missing, 'deeper', 'keywarden.db');
    const r = await run(['serve'], { KEYWARDEN_DATA_DIR: newDir(), KEYWARDEN_DATABASE_URL: `sqlite:${file}` });
    expectOneLineStartupError(r, new RegExp(`^keywarden: cannot open the SQLite database ${file} \\(directory ${missing} does not exist\\); check KEYWARDEN_DATABASE_URL or KEYWARDEN_DATA_DIR$`));
    expect(fs.existsSync(missing)).toBe(false);
  }, 150_000);

  it('a SQLite path through a file (migrate)', async () => {
    const notADir = path.join(tmp, 'a-file');
    fs.writeFileSync(notADir, 'x');
    const r = await run(['migrate'], { KEYWARDEN_DATA_DIR: newDir(), KEYWARDEN_DATABASE_URL: `sqlite:${notADir}/keywarden.db` });
    expectOneLineStartupError(r, /^keywarden: cannot open the SQLite database .+ \(a part of the path is a file, not a directory\); check KEYWARDEN_DATABASE_URL or KEYWARDEN_DATA_DIR$/);
  }, 150_000);

  // Root writes anywhere, so a root test runner (CI) starts the broker as nobody: the permission
  // check needs an ordinary user, and the case must not be skipped where the suite runs.
  it('a SQLite file in a directory the broker may not write (serve)', async () => {
    const user = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : undefined;
    // a parent the broker's user can enter, holding a directory nobody may write (not even its owner)
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-startup-perm-'));
    fs.chmodSync(parent, 0o755);
    const readOnly = path.join(parent, 'read-only');
    fs.mkdirSync(readOnly, { mode: 0o555 });
    const dataDir = path.join(parent, 'data');
    fs.mkdirSync(dataDir, { mode: 0o700 });
    if (user) fs.chownSync(dataDir, user.uid, user.gid);
    try {
      const r = await run(['serve'], { KEYWARDEN_DATA_DIR: dataDir, KEYWARDEN_DATABASE_URL: `sqlite:${readOnly}/keywarden.db` }, user);
      expectOneLineStartupError(r, /^keywarden: cannot open the SQLite database .+ \(permission denied: the broker's user cannot write in .+\); check KEYWARDEN_DATABASE_URL or KEYWARDEN_DATA_DIR$/);
      expect(fs.readdirSync(readOnly)).toEqual([]);
    } finally {
      fs.rmSync(parent, { recursive: true, force: true });
    }
  }, 150_000);
});

describe('a listen address in use is found before anything is created or printed', () => {
  it('fresh data dir: exit 78 naming the address; no data dir, root key, database or admin key', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as net.AddressInfo).port;
    const dataDir = newDir();
    try {
      const r = await run(['serve'], { KEYWARDEN_DATA_DIR: dataDir, KEYWARDEN_LISTEN: `127.0.0.1:${port}`, KEYWARDEN_LOG_LEVEL: 'info' });
      expectOneLineStartupError(r, new RegExp(`^keywarden: cannot listen on 127\\.0\\.0\\.1:${port} \\(address already in use: another process listens there\\); check KEYWARDEN_LISTEN$`));
      expect(r.stdout).toBe('');
      expect(fs.existsSync(dataDir)).toBe(false);
    } finally {
      blocker.close();
    }
  }, 150_000);

  it('the address is bound first; requests that arrive while the broker starts wait for it', async () => {
    const bound = await bindServer({ listen: { host: '127.0.0.1', port: 0 }, tls: undefined });
    try {
      // a second bind of the same address fails with the start-up error, not EADDRINUSE
      const port = Number(new URL(bound.url).port);
      const second = await bindServer({ listen: { host: '127.0.0.1', port }, tls: undefined }).catch((e: unknown) => e);
      expect(second).toBeInstanceOf(ListenError);
      expect((second as ListenError).exitCode).toBe(78);

      let answered = false;
      const early = fetch(`${bound.url}/early`).then(async (res) => {
        answered = true;
        return { status: res.status, body: await res.text() };
      });
      await new Promise((r) => setTimeout(r, 300));
      expect(answered).toBe(false);
      // a plain request listener, not an Express app: the suite's contract hook checks every Express app as a broker
      const app = ((req: http.IncomingMessage, res: http.ServerResponse) => res.end(req.url === '/early' ? 'served after start' : 'other')) as unknown as Express;
      const running = bound.serve(app);
      expect(await early).toEqual({ status: 200, body: 'served after start' });
      await running.close({ drainMs: 100 });
    } finally {
      await bound.close().catch(() => undefined);
    }
  });

  it('a start that fails after binding gives the address back and drops the waiting requests', async () => {
    const bound = await bindServer({ listen: { host: '127.0.0.1', port: 0 }, tls: undefined });
    const waiting = fetch(`${bound.url}/x`).then(
      () => 'answered',
      () => 'dropped',
    );
    await new Promise((r) => setTimeout(r, 300));
    await bound.close();
    expect(await waiting).toBe('dropped');
    const port = Number(new URL(bound.url).port);
    const again = await bindServer({ listen: { host: '127.0.0.1', port }, tls: undefined });
    await again.close();
  });
});

describe('SIGTERM stops the broker within the drain time, whatever happened to its stdout', () => {
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  async function startBroker(): Promise<{ child: ChildProcess; port: number; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }> }> {
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), 'serve'], {
      cwd: REPO_ROOT,
      env: baseEnv({ KEYWARDEN_DATA_DIR: newDir(), KEYWARDEN_LISTEN: `127.0.0.1:${port}`, KEYWARDEN_LOG_LEVEL: 'info' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
      child.on('exit', (code, signal) => resolve({ code, signal, at: Date.now() })),
    );
    return { child, port, exited };
  }

  async function waitReady({ child, port }: { child: ChildProcess; port: number }): Promise<void> {
    const until = Date.now() + 120_000;
    while (Date.now() < until) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the broker exited while starting (${child.exitCode ?? child.signalCode})`);
      const url = `http://127.0.0.1:${port}/readyz`;
      const res = await fetch(url).catch(() => undefined);
      if (res) {
        await assertFetchMatchesContract('GET', url, res);
        if (res.ok) return;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error('broker did not become ready');
  }

  /** SIGTERM, then the exit must come within the drain time (and be a clean one). */
  async function expectPromptExit(broker: Awaited<ReturnType<typeof startBroker>>): Promise<void> {
    const sent = Date.now();
    broker.child.kill('SIGTERM');
    const outcome = await Promise.race([broker.exited, new Promise<'still running'>((r) => setTimeout(() => r('still running'), DEFAULT_DRAIN_MS).unref())]);
    expect(outcome, 'the broker ignored SIGTERM').not.toBe('still running');
    const { code, signal, at } = outcome as { code: number | null; signal: NodeJS.Signals | null; at: number };
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(at - sent).toBeLessThan(DEFAULT_DRAIN_MS);
  }

  it('stdout and stderr readers gone (`keywarden serve | head -0`): serves, logs into the void, stops on SIGTERM', async () => {
    const broker = await startBroker();
    // both pipes closed by the reader before the broker wrote anything (the admin key goes to stderr)
    broker.child.stdout!.destroy();
    broker.child.stderr!.destroy();
    await waitReady(broker);
    for (let i = 0; i < 50; i++) expect((await fetch(`http://127.0.0.1:${broker.port}/healthz`)).status).toBe(200);
    await expectPromptExit(broker);
  }, 180_000);

  it('a stdout reader that stopped reading (the pipe is full): requests are still answered, SIGTERM still stops it', async () => {
    const broker = await startBroker();
    broker.child.stderr!.resume();
    await waitReady(broker);
    // from now on nobody reads stdout; each access-log line carries the long path, so the pipe
    // (64 KiB to a few hundred KiB) fills up well before the end
    broker.child.stdout!.pause();
    const longPath = `/${'x'.repeat(6000)}`;
    for (let i = 0; i < 200; i++) await fetch(`http://127.0.0.1:${broker.port}${longPath}`).then((r) => r.arrayBuffer());
    const started = Date.now();
    const health = await fetch(`http://127.0.0.1:${broker.port}/healthz`);
    expect(health.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(5_000);
    await expectPromptExit(broker);
  }, 180_000);
});
