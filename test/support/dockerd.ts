/**
 * Test support: a private Docker daemon (Debian's docker.io, dockerd 20.10) started as root with
 * its own data root, exec root, socket, pid file and CLI config, so that concurrent test files can
 * each run one and nothing touches the system daemon (/var/run/docker.sock) or ~/.docker.
 *
 * Host-global things that a private daemon still shares (see /tmp/kw-notes/docker-harness.md):
 * the legacy plugin directories (/run/docker/plugins, /etc/docker/plugins), /etc/docker/key.json,
 * and, once in swarm mode, the gossip port 7946 (only one swarm per host gets a network agent).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './registry.js';

const execFileAsync = promisify(execFile);

export const DOCKERD_BINARY = process.env.KEYWARDEN_DOCKERD_BIN ?? 'dockerd';
export const DOCKER_CLI = process.env.KEYWARDEN_DOCKER_CLI ?? 'docker';
export const BUSYBOX_BINARY = process.env.KEYWARDEN_BUSYBOX_BIN ?? '/bin/busybox';

/** Where dockerd looks for legacy plugins: fixed paths, not relative to --exec-root. */
export const LEGACY_PLUGIN_SOCKET_DIR = '/run/docker/plugins';
export const LEGACY_PLUGIN_SPEC_DIR = '/etc/docker/plugins';

// sun_path is 108 bytes including the NUL; keep a margin for the daemon's own sockets under the exec root
const MAX_SOCKET_PATH = 100;

function onPath(bin: string): boolean {
  if (bin.includes('/')) return existsSync(bin);
  return (process.env.PATH ?? '').split(':').some((dir) => dir !== '' && existsSync(join(dir, bin)));
}

/** True for a dynamically linked ELF64 executable: it has a PT_INTERP program header. */
function hasElfInterpreter(path: string): boolean {
  const elf = readFileSync(path);
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 <= elf.length && elf.readUInt32LE(at) === 3) return true;
  }
  return false;
}

/**
 * Whether a private dockerd can run here: the binaries, busybox for the base image, and root.
 * With KEYWARDEN_REQUIRE_TOOLS=1 (CI) anything missing throws instead of skipping.
 */
export function requireDocker(): { ok: boolean; reason?: string } {
  const problems: string[] = [];
  for (const bin of [DOCKERD_BINARY, DOCKER_CLI, 'containerd', 'runc', 'tar']) {
    if (!onPath(bin)) problems.push(`${bin} not found`);
  }
  if (!existsSync(BUSYBOX_BINARY)) problems.push(`${BUSYBOX_BINARY} not found (install busybox-static)`);
  else if (hasElfInterpreter(BUSYBOX_BINARY)) problems.push(`${BUSYBOX_BINARY} is dynamically linked (install busybox-static)`);
  if (typeof process.getuid === 'function' && process.getuid() !== 0) problems.push('dockerd must run as root');
  if (problems.length === 0) return { ok: true };
  const reason = `${problems.join('; ')}; skipping Docker Engine tests (apt-get install docker.io busybox-static)`;
  // CI installs the tools; there a missing daemon is a failure, not a skip
  if (process.env.KEYWARDEN_REQUIRE_TOOLS === '1') throw new Error(reason);
  console.warn(reason);
  return { ok: false, reason };
}

export interface DockerResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface DockerCallOptions {
  /** Written to the CLI's stdin. */
  input?: string | Buffer;
  /** Extra environment for this call (e.g. DOCKER_CONTENT_TRUST=1). */
  env?: Record<string, string>;
  /** Kill the CLI after this long (default 120 s); the result then has code 124. */
  timeoutMs?: number;
  /** This CLI binary instead of DOCKER_CLI (e.g. '/usr/bin/docker' to pin the 20.10 CLI for content trust). */
  cli?: string;
}

export interface DockerdOptions {
  /** Appended to the dockerd command line, e.g. ['--authorization-plugin=kw-1a2b']. */
  extraArgs?: string[];
  /** Each becomes `--insecure-registry H:P` (127.0.0.0/8 is insecure by default anyway). */
  insecureRegistries?: string[];
  /**
   * Contents of the daemon.json passed with --config-file (default `{}`, so that a host
   * /etc/docker/daemon.json never leaks in). dockerd refuses a directive given both here and as a flag.
   */
  daemonConfig?: Record<string, unknown>;
  /** How long to wait for `docker version` to answer (default 60 s). */
  startTimeoutMs?: number;
}

export interface SwarmInfo {
  /** 127.0.0.1:PORT, the swarm's listen and advertise address */
  listenAddr: string;
  /**
   * False when another swarm on this host already holds the fixed gossip port 7946: tasks without
   * networks still run, but overlay networking does not.
   */
  networkAgent: boolean;
}

export interface TestDockerd {
  /** The unique temp dir that holds everything of this daemon. */
  dir: string;
  dataRoot: string;
  execRoot: string;
  /** Path of the daemon's unix socket. */
  socket: string;
  /** DOCKER_HOST=unix://…, a private DOCKER_CONFIG, for child processes that run the docker CLI. */
  env: Record<string, string>;
  /** Runs the docker CLI against this daemon; never throws on a non-zero exit. */
  docker(args: string[], opts?: DockerCallOptions): Promise<DockerResult>;
  /** Same, but throws with stdout and stderr when the exit code is not 0. */
  dockerOk(args: string[], opts?: DockerCallOptions): Promise<string>;
  /** Last lines of the daemon's log. */
  logs(): string;
  /** Stops the daemon and starts it again on the same data root with new options. */
  restart(opts?: DockerdOptions): Promise<void>;
  /** Initialises a single-node swarm listening on a free loopback port. */
  swarmInit(): Promise<SwarmInfo>;
  /** Leaves swarm, removes containers and bridge networks, kills the daemon, unmounts, removes dirs. */
  stop(): Promise<void>;
}

function runCli(env: Record<string, string>, args: string[], opts: DockerCallOptions = {}): Promise<DockerResult> {
  // async on purpose: a plugin served from this same process must keep answering the daemon
  return new Promise((resolve, reject) => {
    const child = spawn(opts.cli ?? DOCKER_CLI, args, {
      env: { ...process.env, ...env, ...(opts.env ?? {}) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 120_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({
        code: timedOut ? 124 : (code ?? 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + (timedOut ? '\n[killed: timeout]' : ''),
      });
    });
    child.stdin.on('error', () => {
      /* the CLI may exit before reading its input */
    });
    child.stdin.end(opts.input ?? '');
  });
}

function describeFailure(args: string[], r: DockerResult): string {
  return `docker ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout.trim()}\nstderr: ${r.stderr.trim()}`;
}

/** Mount points at or below `dir`, deepest first. */
function mountsUnder(dir: string): string[] {
  const found: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    // field 5 is the mount point, with spaces etc. octal-escaped
    const mountPoint = line.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (mountPoint && (mountPoint === dir || mountPoint.startsWith(dir + '/'))) found.push(mountPoint);
  }
  return found.sort((a, b) => b.length - a.length);
}

/** Pids whose command line names `dir` (this daemon's containerd and shims carry its paths). */
function pidsMentioning(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(dir)) pids.push(Number(entry));
    } catch {
      /* exited meanwhile */
    }
  }
  return pids;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

export async function startDockerd(opts: DockerdOptions = {}): Promise<TestDockerd> {
  // short, unique paths: the daemon socket and containerd's sockets under the exec root must fit sun_path
  const dir = mkdtempSync('/tmp/kwd-');
  const dataRoot = join(dir, 'data');
  const execRoot = join(dir, 'x');
  const socket = join(dir, 'd.sock');
  const pidFile = join(dir, 'd.pid');
  const logFile = join(dir, 'dockerd.log');
  const configFile = join(dir, 'daemon.json');
  const cliConfig = join(dir, 'cli');
  if (Buffer.byteLength(join(execRoot, 'containerd', 'containerd.sock.ttrpc')) > MAX_SOCKET_PATH) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`socket paths under ${dir} are too long for a unix socket`);
  }
  mkdirSync(dataRoot);
  mkdirSync(execRoot);
  mkdirSync(cliConfig);
  const env: Record<string, string> = {
    DOCKER_HOST: `unix://${socket}`,
    // trust data, registry logins and TLS CAs of this test stay out of ~/.docker
    DOCKER_CONFIG: cliConfig,
    DOCKER_CLI_HINTS: 'false',
    DOCKER_CONTEXT: 'default',
    DOCKER_TLS_VERIFY: '',
    DOCKER_CERT_PATH: '',
  };

  let child: ChildProcess | undefined;
  let logTail = '';
  const logs = () => logTail;

  const launch = async (o: DockerdOptions) => {
    writeFileSync(configFile, JSON.stringify(o.daemonConfig ?? {}, null, 2));
    logTail = '';
    const args = [
      '--data-root', dataRoot,
      '--exec-root', execRoot,
      '-H', `unix://${socket}`,
      '--pidfile', pidFile,
      '--config-file', configFile,
      '--iptables=false',
      '--bridge=none',
      // the bridge driver would otherwise switch on the host's net.ipv4.ip_forward
      '--ip-forward=false',
      '--shutdown-timeout=3',
      ...(o.insecureRegistries ?? []).flatMap((r) => ['--insecure-registry', r]),
      ...(o.extraArgs ?? []),
    ];
    const proc = spawn(DOCKERD_BINARY, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child = proc;
    const onLog = (d: Buffer) => {
      logTail = (logTail + d.toString()).slice(-20_000);
    };
    proc.stdout?.on('data', onLog);
    proc.stderr?.on('data', onLog);
    proc.on('error', onLog.bind(null, Buffer.from('spawn error\n')));
    const deadline = Date.now() + (o.startTimeoutMs ?? 60_000);
    while (Date.now() < deadline) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`dockerd exited (${proc.exitCode ?? proc.signalCode}) before answering:\n${logTail.slice(-4000)}`);
      }
      const r = await runCli(env, ['version', '--format', '{{.Server.Version}}'], { timeoutMs: 5000 });
      if (r.code === 0 && r.stdout.trim() !== '') return;
      await new Promise((res) => setTimeout(res, 200));
    }
    throw new Error(`dockerd did not answer on ${socket} within ${o.startTimeoutMs ?? 60_000} ms:\n${logTail.slice(-4000)}`);
  };

  const docker = (args: string[], o?: DockerCallOptions) => runCli(env, args, o);
  const dockerOk = async (args: string[], o?: DockerCallOptions) => {
    const r = await docker(args, o);
    if (r.code !== 0) throw new Error(describeFailure(args, r));
    return r.stdout;
  };

  const killDaemon = async () => {
    const proc = child;
    child = undefined;
    if (proc) {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        if (!(await waitExit(proc, 15_000))) {
          try {
            process.kill(-proc.pid!, 'SIGKILL');
          } catch {
            /* already gone */
          }
          await waitExit(proc, 5000);
        }
      }
    }
    // containerd and its shims outlive a killed dockerd; they are ours because they name our dir
    for (const pid of pidsMentioning(dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* exited meanwhile */
      }
    }
  };

  // the agent either creates the ingress sandbox or logs why it could not (port 7946 taken)
  const networkAgentStarted = async (): Promise<boolean> => {
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (existsSync(join(execRoot, 'netns', 'ingress_sbox'))) return true;
      if (/error in agentInit/.test(logTail)) return false;
      await new Promise((res) => setTimeout(res, 100));
    }
    return false;
  };

  const swarmInit = async (): Promise<SwarmInfo> => {
    // docker_gwbridge would otherwise be a host interface of that very name, shared by every daemon
    const gatewayBridge = `kwgw${randomBytes(4).toString('hex')}`; // interface names are at most 15 bytes
    await dockerOk([
      'network', 'create', '--driver', 'bridge',
      '--opt', `com.docker.network.bridge.name=${gatewayBridge}`,
      '--opt', 'com.docker.network.bridge.enable_icc=false',
      '--opt', 'com.docker.network.bridge.enable_ip_masquerade=false',
      'docker_gwbridge',
    ]);
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const listenAddr = `127.0.0.1:${await freePort()}`;
      const r = await docker(['swarm', 'init', '--advertise-addr', listenAddr, '--listen-addr', listenAddr]);
      if (r.code === 0) return { listenAddr, networkAgent: await networkAgentStarted() };
      lastError = new Error(describeFailure(['swarm', 'init'], r));
    }
    throw lastError;
  };

  const cleanupDaemonState = async () => {
    const quick = { timeoutMs: 15_000 };
    // best effort: with a dead plugin (authz, volumes) these calls fail, and the kill below still runs
    const ids = (await docker(['ps', '-aq'], quick)).stdout.split(/\s+/).filter(Boolean);
    if (ids.length > 0) await docker(['rm', '-f', ...ids], quick);
    const state = await docker(['info', '--format', '{{.Swarm.LocalNodeState}}'], quick);
    if (state.code === 0 && state.stdout.trim() !== 'inactive') await docker(['swarm', 'leave', '--force'], quick);
    // bridge networks are host interfaces; removing them deletes the interfaces
    const bridges = (await docker(['network', 'ls', '--filter', 'driver=bridge', '-q'], quick)).stdout
      .split(/\s+/)
      .filter(Boolean);
    for (const id of bridges) await docker(['network', 'rm', id], quick);
  };

  let stopped = false;
  const handle: TestDockerd = {
    dir,
    dataRoot,
    execRoot,
    socket,
    env,
    docker,
    dockerOk,
    logs,
    swarmInit,
    async restart(o: DockerdOptions = {}) {
      await killDaemon();
      await launch(o);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child) await cleanupDaemonState();
      await killDaemon();
      for (const m of mountsUnder(dir)) {
        try {
          await execFileAsync('umount', [m]);
        } catch {
          await execFileAsync('umount', ['-l', m]).catch(() => undefined);
        }
      }
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    },
  };

  try {
    await launch(opts);
  } catch (e) {
    await handle.stop().catch(() => undefined);
    throw e;
  }
  return handle;
}

// ---------------------------------------------------------------------------- base image

/** Applets every image gets at least; the rest of `busybox --list` is linked too. */
export const REQUIRED_APPLETS = ['sh', 'cat', 'ls', 'id', 'stat', 'sleep', 'echo', 'test', 'mount', 'wc'];

/**
 * Imports a one-layer image made of Debian's static busybox and its applet symlinks (no registry,
 * no network). With `user`, the image's config says `USER <user>`.
 */
export async function buildBusyboxImage(
  d: TestDockerd,
  tag: string,
  opts: { user?: string; labels?: Record<string, string> } = {},
): Promise<string> {
  const root = mkdtempSync(join(d.dir, 'rootfs-'));
  try {
    for (const sub of ['bin', 'etc', 'tmp', 'root', 'home/app']) mkdirSync(join(root, sub), { recursive: true });
    chmodSync(join(root, 'tmp'), 0o1777);
    writeFileSync(join(root, 'bin', 'busybox'), readFileSync(BUSYBOX_BINARY), { mode: 0o755 });
    const { stdout } = await execFileAsync(BUSYBOX_BINARY, ['--list']);
    const applets = new Set([...REQUIRED_APPLETS, ...stdout.split('\n').filter((a) => /^[a-z0-9_.-]+$/i.test(a))]);
    applets.delete('busybox');
    for (const applet of applets) symlinkSync('busybox', join(root, 'bin', applet));
    writeFileSync(join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n');
    writeFileSync(join(root, 'etc', 'group'), 'root:x:0:\napp:x:1000:\n');
    const { stdout: tarball } = await execFileAsync('tar', ['-C', root, '--numeric-owner', '--owner=0', '--group=0', '-c', '.'], {
      encoding: 'buffer',
      maxBuffer: 64 * 1024 * 1024,
    });
    const changes = ['CMD ["/bin/sh"]', 'ENV PATH=/bin', 'WORKDIR /'];
    if (opts.user !== undefined) changes.push(`USER ${opts.user}`);
    for (const [k, v] of Object.entries(opts.labels ?? {})) changes.push(`LABEL ${JSON.stringify(k)}=${JSON.stringify(v)}`);
    const out = await d.dockerOk(['import', ...changes.flatMap((c) => ['--change', c]), '-', tag], { input: tarball });
    return out.trim();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------- legacy plugins

/** A plugin name no other daemon or test on this host uses (legacy plugin lookup is host-global). */
export function uniquePluginName(prefix = 'kwtest'): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/**
 * Registers a legacy plugin through `/etc/docker/plugins/<name>.spec` pointing at `address`
 * (e.g. `unix:///tmp/kwd-…/plugin.sock`), so the socket itself can live in the test's temp dir.
 * Returns the function that removes the spec again.
 */
export function registerLegacyPlugin(name: string, address: string): () => void {
  mkdirSync(LEGACY_PLUGIN_SPEC_DIR, { recursive: true });
  const spec = join(LEGACY_PLUGIN_SPEC_DIR, `${name}.spec`);
  if (existsSync(spec)) throw new Error(`${spec} exists already: plugin names must be unique per host`);
  writeFileSync(spec, `${address}\n`);
  return () => rmSync(spec, { force: true });
}
