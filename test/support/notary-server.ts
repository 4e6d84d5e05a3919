/**
 * Test support: a real `notary-server` (in-memory storage; plain http, or TLS with a test
 * certificate) on a free loopback port, and a wrapper around the real `notary` client CLI.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './registry.js';

export { freePort };

const execFileAsync = promisify(execFile);

function onPath(bin: string): boolean {
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() !== '';
}

/** Whether the real notary tooling is available; `reason` explains why not. */
export function notaryToolsAvailable(): { ok: boolean; reason?: string } {
  const missing = ['notary-server', 'notary', 'openssl'].filter((b) => !onPath(b));
  if (missing.length > 0) {
    const reason = `${missing.join(', ')} not found on PATH`;
    // CI installs the tools; there a missing binary is a failure, not a skip
    if (process.env.KEYWARDEN_REQUIRE_TOOLS === '1') throw new Error(reason);
    return { ok: false, reason };
  }
  return { ok: true };
}

/** A loopback port that nothing listens on right now. */

export interface NotaryServerHandle {
  url: string;
  port: number;
  dir: string;
  logs: () => string;
  stop: () => Promise<void>;
}

/** GET over https trusting only `caPem` (global fetch cannot be given a CA). */
function httpsStatus(url: string, caPem: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca: caPem, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

async function waitHealthy(url: string, proc: ChildProcess, logs: () => string, timeoutMs: number, caPem?: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`notary-server exited with ${proc.exitCode}: ${logs()}`);
    try {
      const health = `${url}/_notary_server/health`;
      if (caPem) {
        if ((await httpsStatus(health, caPem)) === 200) return;
      } else {
        const res = await fetch(health, { signal: AbortSignal.timeout(1000) });
        if (res.ok) return;
      }
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`notary-server did not become healthy within ${timeoutMs} ms: ${logs()}`);
}

export interface NotaryServerTls {
  /** PEM server certificate (with a SAN for 127.0.0.1) and its key, e.g. from test/support/pki.ts. */
  certPem: string;
  keyPem: string;
  /** PEM of the CA that issued it: the health check trusts only this. */
  caPem: string;
}

/**
 * Start `notary-server -config server.json` with memory storage and a local trust service. With
 * `tls` it serves https (Docker's content trust refuses a plain-http trust server).
 */
export async function startNotaryServer(opts: { tls?: NotaryServerTls } = {}): Promise<NotaryServerHandle> {
  const dir = await mkdtemp(join(tmpdir(), 'kw-notary-server-'));
  const tlsFiles = opts.tls ? { tls_cert_file: join(dir, 'server.crt'), tls_key_file: join(dir, 'server.key') } : {};
  if (opts.tls) {
    await writeFile(tlsFiles.tls_cert_file!, opts.tls.certPem);
    await writeFile(tlsFiles.tls_key_file!, opts.tls.keyPem, { mode: 0o600 });
  }
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const config = {
      server: { http_addr: `127.0.0.1:${port}`, ...tlsFiles },
      trust_service: { type: 'local' },
      storage: { backend: 'memory' },
      logging: { level: 'error' },
    };
    const configPath = join(dir, 'server.json');
    await writeFile(configPath, JSON.stringify(config));
    let output = '';
    const proc = spawn('notary-server', ['-config', configPath], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    proc.stdout?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-8000)));
    proc.stderr?.on('data', (d: Buffer) => (output = (output + d.toString()).slice(-8000)));
    const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
    const stop = async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise<void>((r) => proc.once('exit', () => r()));
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    };
    try {
      await waitHealthy(url, proc, () => output, 10_000, opts.tls?.caPem);
      return { url, port, dir, logs: () => output, stop };
    } catch (err) {
      lastError = err;
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
  }
  await rm(dir, { recursive: true, force: true });
  throw lastError;
}

export const NOTARY_PASSPHRASE = 'keywarden-test-passphrase';

/** Wrapper around the real `notary` client with a private trust directory. */
export class NotaryCli {
  constructor(
    readonly serverUrl: string,
    readonly trustDir: string,
  ) {}

  static async create(serverUrl: string): Promise<NotaryCli> {
    return new NotaryCli(serverUrl, await mkdtemp(join(tmpdir(), 'kw-notary-trust-')));
  }

  async run(...args: string[]): Promise<{ stdout: string; stderr: string }> {
    const env = {
      ...process.env,
      NOTARY_ROOT_PASSPHRASE: NOTARY_PASSPHRASE,
      NOTARY_TARGETS_PASSPHRASE: NOTARY_PASSPHRASE,
      NOTARY_SNAPSHOT_PASSPHRASE: NOTARY_PASSPHRASE,
      NOTARY_DELEGATION_PASSPHRASE: NOTARY_PASSPHRASE,
    };
    try {
      return await execFileAsync('notary', ['-s', this.serverUrl, '-d', this.trustDir, ...args], {
        env,
        timeout: 30_000,
        maxBuffer: 4 * 1024 * 1024,
      });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(`notary ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
    }
  }

  init(gun: string) {
    return this.run('init', gun, '-p');
  }

  /** `notary addhash GUN TAG SIZE --sha256 HEX [--roles R]... -p` */
  addHash(gun: string, tag: string, size: number, sha256Hex: string, roles: string[] = []) {
    return this.run('addhash', gun, tag, String(size), '--sha256', sha256Hex, ...roles.flatMap((r) => ['--roles', r]), '-p');
  }

  importKey(keyPath: string, role: string) {
    return this.run('key', 'import', keyPath, '--role', role);
  }

  /** `notary delegation add GUN ROLE CERT --all-paths -p` */
  addDelegation(gun: string, role: string, certPath: string) {
    return this.run('delegation', 'add', gun, role, certPath, '--all-paths', '-p');
  }

  /** The local copy of root.json the client wrote for a GUN. */
  async rootJson(gun: string): Promise<{ signed: { keys: Record<string, { keytype: string; keyval: { public: string } }>; roles: Record<string, { keyids: string[] }> } }> {
    return JSON.parse(await readFile(join(this.trustDir, 'tuf', ...gun.split('/'), 'metadata', 'root.json'), 'utf8'));
  }

  /** The pinned root key for a GUN: `keyval.public` of the root role's key (base64 of an ecdsa-x509 PEM certificate). */
  async rootKey(gun: string): Promise<{ keyId: string; keytype: string; publicB64: string; certPem: string }> {
    const root = await this.rootJson(gun);
    const keyId = root.signed.roles.root.keyids[0];
    const key = root.signed.keys[keyId];
    return {
      keyId,
      keytype: key.keytype,
      publicB64: key.keyval.public,
      certPem: Buffer.from(key.keyval.public, 'base64').toString('utf8'),
    };
  }

  /** Root key id as printed by `notary key list` (notary's canonical id of the bare public key). */
  async listedRootKeyId(): Promise<string> {
    const { stdout } = await this.run('key', 'list');
    const line = stdout.split('\n').find((l) => /^\s*root\s/.test(l));
    const id = line?.match(/\b[0-9a-f]{64}\b/)?.[0];
    if (!id) throw new Error(`no root key in notary key list output:\n${stdout}`);
    return id;
  }

  async cleanup(): Promise<void> {
    await rm(this.trustDir, { recursive: true, force: true });
  }
}

/** A delegation key pair (EC P-256 key + self-signed certificate) made with openssl. */
export async function createDelegationKey(dir: string, name: string, days = 365): Promise<{ keyPath: string; certPath: string }> {
  const keyPath = join(dir, `${name}.key`);
  const certPath = join(dir, `${name}.crt`);
  await execFileAsync('openssl', ['ecparam', '-genkey', '-name', 'prime256v1', '-noout', '-out', keyPath]);
  await execFileAsync('openssl', ['req', '-new', '-x509', '-key', keyPath, '-out', certPath, '-subj', `/CN=${name}`, '-days', String(days)]);
  return { keyPath, certPath };
}
