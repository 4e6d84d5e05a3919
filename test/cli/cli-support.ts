/** Shared fixtures for the `keywarden exec` / `keywarden fetch` tests: a real broker over HTTP and CLI child processes. */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import supertest from 'supertest';
import { listen, type RunningServer } from '../../src/http/server.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const ADDON_PATH = path.join(REPO_ROOT, 'build/Release/keywarden_execve.node');
export const addonBuilt = fs.existsSync(ADDON_PATH);

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  pid: number;
  stdout: string;
  stderr: string;
}

/** Environment for the CLI: the test runner's PATH etc., minus any KEYWARDEN_* it may carry. */
export function baseEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('KEYWARDEN_')) env[k] = v;
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) env[k] = v;
  return env;
}

export interface RunningCli {
  pid: number;
  /** stderr so far */
  stderr(): string;
  done: Promise<CliResult>;
  kill(signal?: NodeJS.Signals): void;
}

/** Another user to run the CLI as (only a root test runner can switch). */
export interface CliUser {
  uid: number;
  gid: number;
}

/** Starts `node --import tsx src/cli/main.ts ARGS` as a real child process. */
export function startCli(args: string[], env: Record<string, string>, timeoutMs = 60_000, user?: CliUser): RunningCli {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), ...args], {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...user,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c) => (stdout += c));
  child.stderr.on('data', (c) => (stderr += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, pid: child.pid!, stdout, stderr });
    });
  });
  return { pid: child.pid!, done, stderr: () => stderr, kill: (signal = 'SIGTERM') => child.kill(signal) };
}

export function runCli(args: string[], env: Record<string, string>, timeoutMs?: number, user?: CliUser): Promise<CliResult> {
  return startCli(args, env, timeoutMs, user).done;
}

export interface CliBroker {
  tb: TestBroker;
  server: RunningServer;
  url: string;
  admin: Record<string, string>;
  api(method: string, urlPath: string, body?: unknown): Promise<{ status: number; body: any }>;
  close(): Promise<void>;
}

/** A real broker listening on a loopback port (HTTPS when `tls` is given). */
export async function startCliBroker(
  options: { env?: Record<string, string>; tls?: { certFile: string; keyFile: string; clientCaFile?: string }; port?: number } = {},
): Promise<CliBroker> {
  const tb = await startTestBroker({ env: options.env });
  const server = await listen(tb.broker.app, { listen: { host: '127.0.0.1', port: options.port ?? 0 }, tls: options.tls });
  const admin = { Authorization: `Bearer ${tb.adminKey}` };
  // In-process (supertest), so it works the same whether the listener is HTTP or HTTPS.
  const api = async (method: string, urlPath: string, body?: unknown) => {
    const m = method.toLowerCase() as 'get' | 'post' | 'put' | 'patch' | 'delete';
    const req = supertest(tb.broker.app)[m](urlPath).set(admin);
    const res = body === undefined ? await req : await req.send(body as object);
    return { status: res.status, body: res.body };
  };
  return {
    tb,
    server,
    url: server.url,
    admin,
    api,
    async close() {
      await server.close();
      await tb.close();
    },
  };
}

/** A loopback port with nothing listening on it. */
export async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

export async function waitFor<T>(fn: () => T | undefined | false, timeoutMs: number, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out waiting for condition');
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** `node -e` program that prints the named env vars (and its pid) as JSON. */
export function printEnvCmd(names: string[]): string[] {
  return [
    process.execPath,
    '-e',
    `const o={pid:process.pid,argv:process.argv.slice(1),env:{}};for(const n of ${JSON.stringify(names)})o.env[n]=process.env[n]??null;process.stdout.write(JSON.stringify(o))`,
  ];
}
