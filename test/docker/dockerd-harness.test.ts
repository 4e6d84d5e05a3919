/**
 * Proves the private-dockerd harness that the Docker plugin tests (issue #13) stand on: containers,
 * swarm secrets, a push to a local registry, legacy plugin discovery, and a stop() that leaves
 * nothing behind, with two daemons side by side.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  LEGACY_PLUGIN_SOCKET_DIR,
  buildBusyboxImage,
  registerLegacyPlugin,
  requireDocker,
  startDockerd,
  uniquePluginName,
  type TestDockerd,
} from '../support/dockerd.js';
import { registryAvailable, startRegistry, type TestRegistry } from '../support/registry.js';

const docker = requireDocker();
const describeDocker = docker.ok ? describe : describe.skip;

const IMAGE = 'kw/busybox:1';
const IMAGE_NONROOT = 'kw/busybox:nonroot';

async function waitForTask(d: TestDockerd, service: string, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let states = '';
  while (Date.now() < deadline) {
    states = await d.dockerOk(['service', 'ps', '--no-trunc', '--format', '{{.CurrentState}}|{{.Error}}', service]);
    if (/^(Complete|Failed|Rejected)/m.test(states)) return states;
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`service ${service} did not finish: ${states}\n${d.logs().slice(-3000)}`);
}

async function serviceWithSecret(d: TestDockerd, secret: string, value: string): Promise<string> {
  await d.dockerOk(['secret', 'create', secret, '-'], { input: value });
  const name = `svc-${secret}`;
  // no --network: "none" is a local network and swarm services only attach to swarm-scoped ones
  await d.dockerOk([
    'service', 'create', '--detach', '--quiet', '--name', name, '--secret', secret,
    '--restart-condition', 'none', IMAGE, 'sh', '-c', `cat /run/secrets/${secret}; stat -c ' %a %u' /run/secrets/${secret}`,
  ]);
  const state = await waitForTask(d, name);
  expect(state).toMatch(/^Complete/m);
  return d.dockerOk(['service', 'logs', '--raw', name]);
}

function processesMentioning(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(dir)) pids.push(Number(entry));
    } catch {
      /* exited */
    }
  }
  return pids;
}

describeDocker('private dockerd harness (real Docker Engine)', () => {
  let d: TestDockerd;

  beforeAll(async () => {
    d = await startDockerd();
    await buildBusyboxImage(d, IMAGE);
    await buildBusyboxImage(d, IMAGE_NONROOT, { user: '1000' });
  }, 120_000);

  afterAll(async () => {
    await d?.stop();
  }, 120_000);

  it('talks to its own daemon, never the system socket', async () => {
    expect(d.env.DOCKER_HOST).toBe(`unix://${d.socket}`);
    expect(d.socket).not.toBe('/var/run/docker.sock');
    expect(Buffer.byteLength(d.socket)).toBeLessThan(108);
    const root = (await d.dockerOk(['info', '--format', '{{.DockerRootDir}}'])).trim();
    expect(root).toBe(d.dataRoot);
  });

  it('runs the busybox image with --network none, as root and as USER 1000', async () => {
    const asRoot = await d.dockerOk(['run', '--rm', '--network', 'none', IMAGE, 'sh', '-c', 'id; echo ok']);
    expect(asRoot).toMatch(/^uid=0\(root\)/);
    expect(asRoot.trim().endsWith('ok')).toBe(true);
    const nonRoot = await d.dockerOk(['run', '--rm', '--network', 'none', IMAGE_NONROOT, 'id', '-u']);
    expect(nonRoot.trim()).toBe('1000');
    const user = await d.dockerOk(['image', 'inspect', '--format', '{{.Config.User}}', IMAGE_NONROOT]);
    expect(user.trim()).toBe('1000');
    for (const applet of ['sh', 'cat', 'ls', 'id', 'stat', 'sleep', 'echo', 'test']) {
      const r = await d.docker(['run', '--rm', '--network', 'none', IMAGE, 'test', '-x', `/bin/${applet}`]);
      expect(r.code, applet).toBe(0);
    }
    // a failing command must surface as a failure, or the assertions above prove nothing
    const fails = await d.docker(['run', '--rm', '--network', 'none', IMAGE, 'sh', '-c', 'exit 3']);
    expect(fails.code).toBe(3);
  });

  it('runs a swarm service that reads a swarm secret, and refuses --network none for services', async () => {
    const swarm = await d.swarmInit();
    expect(swarm.listenAddr).toMatch(/^127\.0\.0\.1:\d+$/);
    const logs = await serviceWithSecret(d, 'app_db', 's3cret-value');
    // swarm mounts secrets read-only, mode 0444, owned by root, unless --secret says otherwise
    expect(logs).toContain('s3cret-value 444 0');
    const none = await d.docker([
      'service', 'create', '--detach', '--name', 'svc-none', '--network', 'none', '--restart-condition', 'none', IMAGE, 'true',
    ]);
    expect(none.code).not.toBe(0);
    // CLI 28 passes the name to the daemon ("network none not found"); CLI 20.10 resolves it itself
    expect(none.stderr).toMatch(/network none not found|No such network: none/);
  }, 120_000);

  it('pushes the image to a local docker-registry and pulls it back', async (ctx) => {
    if (!registryAvailable().ok) ctx.skip();
    const registry: TestRegistry = await startRegistry();
    try {
      const ref = `${registry.hostPort}/kw/busybox:1`;
      await d.dockerOk(['tag', IMAGE, ref]);
      const push = await d.dockerOk(['push', ref]);
      const pushed = /digest: (sha256:[0-9a-f]{64})/.exec(push)?.[1];
      expect(pushed, push).toBeDefined();
      const head = await fetch(`${registry.url}/v2/kw/busybox/manifests/1`, {
        method: 'HEAD',
        headers: { Accept: 'application/vnd.docker.distribution.manifest.v2+json' },
      });
      expect(head.status).toBe(200);
      expect(head.headers.get('docker-content-digest')).toBe(pushed);
      await d.dockerOk(['rmi', ref]);
      await d.dockerOk(['pull', ref]);
      expect((await d.dockerOk(['run', '--rm', '--network', 'none', ref, 'echo', 'pulled'])).trim()).toBe('pulled');
    } finally {
      await registry.stop();
    }
  }, 120_000);

  it('finds legacy plugins only in the fixed host directories, not under its exec root', async () => {
    const name = uniquePluginName();
    // a socket under the private exec root is not a place dockerd looks
    const underExecRoot = join(d.execRoot, 'plugins', `${name}.sock`);
    mkdirSync(join(d.execRoot, 'plugins'), { recursive: true });
    const stub = await startVolumeDriverStub(underExecRoot);
    try {
      // dockerd keeps retrying the lookup for ~15 s before it gives up
      const missing = await d.docker(['volume', 'create', '--driver', name, 'v1'], { timeoutMs: 60_000 });
      expect(missing.code).not.toBe(0);
      expect(missing.stderr).toMatch(/not found/i);
      expect(stub.calls).toEqual([]);
      // a spec file in /etc/docker/plugins pointing at that same socket is found
      const unregister = registerLegacyPlugin(name, `unix://${underExecRoot}`);
      try {
        await d.dockerOk(['volume', 'create', '--driver', name, 'v1']);
        expect(stub.calls).toContain('/Plugin.Activate');
        expect(stub.calls, stub.calls.join(' ')).toContain('/VolumeDriver.Create');
        await d.dockerOk(['volume', 'rm', 'v1']);
        expect(stub.calls).toContain('/VolumeDriver.Remove');
      } finally {
        unregister();
      }
    } finally {
      await stub.close();
    }

    // the plugin's default place, /run/docker/plugins/<name>.sock, is found without a spec file
    const other = uniquePluginName();
    const atRun = join(LEGACY_PLUGIN_SOCKET_DIR, `${other}.sock`);
    mkdirSync(LEGACY_PLUGIN_SOCKET_DIR, { recursive: true });
    const stub2 = await startVolumeDriverStub(atRun);
    try {
      await d.dockerOk(['volume', 'create', '--driver', other, 'v2']);
      expect(stub2.calls).toContain('/VolumeDriver.Create');
      await d.dockerOk(['volume', 'rm', 'v2']);
    } finally {
      await stub2.close();
    }
    expect(existsSync(atRun)).toBe(false);
  }, 120_000);

  it('restarts with --authorization-plugin, and docker run prints the plugin\'s refusal', async () => {
    const name = uniquePluginName('kwauthz');
    const socket = join(d.dir, 'authz.sock');
    const seen: string[] = [];
    const stub = await startPluginStub(socket, ['authz'], (url, body) => {
      if (url === '/AuthZPlugin.AuthZReq') {
        seen.push(`${String(body.RequestMethod)} ${String(body.RequestUri)}`);
        if (/\/containers\/create/.test(String(body.RequestUri))) return { Allow: false, Msg: 'refused by the test gate' };
      }
      return { Allow: true };
    });
    const unregister = registerLegacyPlugin(name, `unix://${socket}`);
    try {
      await d.restart({ extraArgs: [`--authorization-plugin=${name}`] });
      expect((await d.dockerOk(['image', 'ls', '-q', IMAGE])).trim()).not.toBe('');
      const run = await d.docker(['run', '--rm', '--network', 'none', IMAGE, 'true']);
      expect(run.code).not.toBe(0);
      expect(run.stderr).toContain('refused by the test gate');
      expect(seen.some((c) => /^POST \/v[\d.]+\/containers\/create/.test(c))).toBe(true);
    } finally {
      // back to a daemon without the plugin, so that stop() does not depend on it
      await d.restart();
      unregister();
      await stub.close();
    }
    expect((await d.dockerOk(['run', '--rm', '--network', 'none', IMAGE, 'echo', 'again'])).trim()).toBe('again');
  }, 120_000);
});

type PluginHandler = (url: string, body: Record<string, unknown>) => Record<string, unknown>;

/** A legacy plugin that answers Activate and hands the rest to `handle`; records every call. */
async function startPluginStub(
  socketPath: string,
  implementsList: string[],
  handle: PluginHandler,
): Promise<{ calls: string[]; close(): Promise<void> }> {
  const calls: string[] = [];
  const server = http.createServer((req, res) => {
    calls.push(req.url ?? '');
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      res.setHeader('Content-Type', 'application/vnd.docker.plugins.v1.2+json');
      const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as Record<string, unknown>;
      res.end(JSON.stringify(req.url === '/Plugin.Activate' ? { Implements: implementsList } : handle(req.url ?? '', body)));
    });
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  // node unlinks the unix socket file on close
  return { calls, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** Just enough of a volume driver to see which calls arrive; the real plugin is issue #13's work. */
function startVolumeDriverStub(socketPath: string) {
  const volumes = new Set<string>();
  return startPluginStub(socketPath, ['VolumeDriver'], (url, body) => {
    const volume = typeof body.Name === 'string' ? body.Name : undefined;
    if (url === '/VolumeDriver.Capabilities') return { Capabilities: { Scope: 'local' } };
    if (url === '/VolumeDriver.Create' && volume) volumes.add(volume);
    if (url === '/VolumeDriver.Remove' && volume) volumes.delete(volume);
    // Create is skipped when Get already finds the volume
    if (url === '/VolumeDriver.Get') return volume && volumes.has(volume) ? { Volume: { Name: volume } } : { Err: 'no such volume' };
    return { Err: '' };
  });
}

describeDocker('two private daemons at once', () => {
  it('each runs a swarm service, and stop() leaves no process, mount, dir or host interface behind', async () => {
    const [a, b] = await Promise.all([startDockerd(), startDockerd()]);
    let stopped = false;
    try {
      expect(a.socket).not.toBe(b.socket);
      await Promise.all([buildBusyboxImage(a, IMAGE), buildBusyboxImage(b, IMAGE)]);
      const [sa, sb] = await Promise.all([a.swarmInit(), b.swarmInit()]);
      expect(sa.listenAddr).not.toBe(sb.listenAddr);
      // the gossip port 7946 is fixed in dockerd: at most one swarm per host gets a network agent
      expect([sa.networkAgent, sb.networkAgent].filter(Boolean).length).toBeLessThanOrEqual(1);
      const [la, lb] = await Promise.all([serviceWithSecret(a, 'sa', 'value-a'), serviceWithSecret(b, 'sb', 'value-b')]);
      expect(la).toContain('value-a');
      expect(lb).toContain('value-b');
      const bridges = (await a.dockerOk(['network', 'inspect', '--format', '{{index .Options "com.docker.network.bridge.name"}}', 'docker_gwbridge'])).trim();
      expect(bridges).toMatch(/^kwgw[0-9a-f]{8}$/);

      await Promise.all([a.stop(), b.stop()]);
      stopped = true;
      for (const x of [a, b]) {
        expect(existsSync(x.dir)).toBe(false);
        expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(x.dir);
        expect(processesMentioning(x.dir)).toEqual([]);
      }
      expect(existsSync(`/sys/class/net/${bridges}`)).toBe(false);
    } finally {
      if (!stopped) await Promise.all([a.stop(), b.stop()]);
    }
  }, 180_000);
});
