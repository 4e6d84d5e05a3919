/**
 * `keywarden docker-plugin` driven over its unix socket the way dockerd drives it (no dockerd):
 * Plugin.Activate, SecretProvider.GetSecret, every VolumeDriver call (real tmpfs mounts: root
 * needed) and AuthZPlugin, against a real broker over HTTP, with the broker's audit log checked.
 * The release-gate allow/user cases need a real docker-registry (skipped without one).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BrokerClient, clientConfigFromEnv } from '../../src/cli/client/broker-client.js';
import { startDockerPlugin, type RunningDockerPlugin } from '../../src/docker-plugin/docker-plugin.js';
import { isMountPoint } from '../../src/docker-plugin/tmpfs.js';
import { capture, eventsAfter, headSeq } from '../support/audit-events.js';
import { upsertPolicy } from '../support/policies.js';
import { pushTestImage, registryAvailable, startRegistry, type TestRegistry } from '../support/registry.js';
import { baseEnv, closedPort, startCli, startCliBroker, waitFor, type CliBroker } from '../cli/cli-support.js';

const isRoot = process.getuid?.() === 0;
const reg = registryAvailable();

interface PluginAnswer {
  status: number;
  contentType: string;
  body: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** One plugin call over the unix socket, as dockerd makes it (POST, JSON body). */
function call(socket: string, route: string, body?: unknown, raw?: string): Promise<PluginAnswer> {
  const text = raw ?? (body === undefined ? '' : JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath: socket, path: route, method: 'POST', headers: { accept: 'application/vnd.docker.plugins.v1.2+json', 'content-length': Buffer.byteLength(text) } },
      (res) => {
        let data = '';
        res.on('data', (c) => (data += c));
        res.on('end', () => resolve({ status: res.statusCode!, contentType: String(res.headers['content-type']), body: data ? JSON.parse(data) : undefined }));
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

const b64 = (s: string) => Buffer.from(s).toString('base64');
const containerCreate = (image: string, user?: string) => ({
  RequestMethod: 'POST',
  RequestUri: '/v1.41/containers/create?name=c1',
  RequestBody: b64(JSON.stringify({ Image: image, ...(user === undefined ? {} : { User: user }), Cmd: ['true'] })),
  User: '',
});

let b: CliBroker;
let tmp: string;
let plugin: RunningDockerPlugin;
let socket: string;
let pluginEnv: Record<string, string>;
let registry: TestRegistry | undefined;

async function startPlugin(dir: string, env: Record<string, string>, extra: Partial<Parameters<typeof startDockerPlugin>[1]> = {}) {
  const client = new BrokerClient(clientConfigFromEnv(env));
  const p = await startDockerPlugin(client, {
    socket: path.join(dir, 'kw.sock'),
    stateDir: path.join(dir, 'state'),
    refreshIntervalMs: 3_600_000,
    cacheTtlMs: 30_000,
    gatePulls: true,
    failOpen: false,
    volumeSize: '1m',
    log: () => undefined,
    ...extra,
  });
  return { p, client };
}

/** Flushes the plugin's queued event reports, then returns the broker's newest event number. */
async function mark(): Promise<number> {
  await plugin.events.flush();
  return headSeq(b.tb);
}

/** The plugin's own event reports (docker.*) recorded by the broker since `seq`. */
async function reported(seq: number) {
  await plugin.events.flush();
  return (await eventsAfter(b.tb, seq)).filter((e) => e.action.startsWith('docker.'));
}

beforeAll(async () => {
  if (reg.ok) registry = await startRegistry();
  b = await startCliBroker({ env: registry ? { KEYWARDEN_INSECURE_REGISTRIES: registry.hostPort } : {} });
  const writer = (await b.api('POST', '/v1/api-keys', { name: 'w', role: 'writer' })).body.key as string;
  const asWriter = async (method: 'post' | 'put', p: string, body: object) => {
    const supertest = (await import('supertest')).default;
    const res = await supertest(b.tb.broker.app)[method](p).set({ Authorization: `Bearer ${writer}` }).send(body);
    expect([200, 201], res.text).toContain(res.status);
  };
  for (const g of ['payments', 'other']) await asWriter('post', '/v1/groups', { name: g });
  await asWriter('post', '/v1/secrets', { name: 'payments.db', value: 'pay-db-value-1', groups: ['payments'], metadata: { mode: '0400', owner: '1000', group: '1000' } });
  await asWriter('post', '/v1/secrets', { name: 'payments.tls', value: 'pay-tls-value', groups: ['payments'], metadata: { mode: '0440' } });
  await asWriter('post', '/v1/secrets', { name: 'other.key', value: 'other-key-value', groups: ['other'] });
  (globalThis as Record<string, unknown>).kwWriter = asWriter;
  for (const [name, groups] of [['payments', ['payments']], ['other', ['other']]] as const) expect((await b.api('POST', '/v1/clients', { name, groups })).status).toBe(201);
  const created = await b.api('POST', '/v1/clients', { name: 'dockerhost', actsFor: ['payments'], releaseGate: true });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  pluginEnv = baseEnv({ KEYWARDEN_ADDR: b.url, KEYWARDEN_CLIENT_ID: created.body.clientId, KEYWARDEN_CLIENT_SECRET: created.body.clientSecret });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-dplug-'));
  plugin = (await startPlugin(tmp, pluginEnv)).p;
  socket = plugin.socket;
}, 60_000);

afterAll(async () => {
  await plugin?.close();
  // nothing may stay mounted under the temp dir, whatever a failed test left
  if (tmp) for (const d of fs.existsSync(path.join(tmp, 'state/volumes')) ? fs.readdirSync(path.join(tmp, 'state/volumes')) : []) {
    const dir = path.join(tmp, 'state/volumes', d);
    if (isMountPoint(dir)) execFileSync('umount', ['-l', dir]);
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  await b?.close();
  await registry?.stop();
});

describe('Plugin.Activate and the socket', () => {
  it('answers the three interfaces with the plugin content type; the socket is 0660', async () => {
    const res = await call(socket, '/Plugin.Activate');
    expect(res.status).toBe(200);
    expect(res.contentType).toBe('application/vnd.docker.plugins.v1.2+json');
    expect(res.body).toEqual({ Implements: ['secretprovider', 'VolumeDriver', 'authz'] });
    expect(fs.statSync(socket).mode & 0o777).toBe(0o660);
  });

  it('unknown calls and bodies that are not JSON get Err, and the plugin keeps serving', async () => {
    expect((await call(socket, '/VolumeDriver.Nope', {})).body.Err).toMatch(/unknown plugin call/);
    for (const route of ['/SecretProvider.GetSecret', '/VolumeDriver.Create', '/VolumeDriver.Mount', '/AuthZPlugin.AuthZReq']) {
      const res = await call(socket, route, undefined, '{"Name": ');
      expect(res.status, route).toBe(500);
      expect(res.body.Err, route).toMatch(/not valid JSON/);
    }
    const tooBig = await call(socket, '/VolumeDriver.Get', undefined, JSON.stringify({ Name: 'x'.repeat(300 * 1024) }));
    expect(tooBig.body.Err).toMatch(/larger than/);
    expect((await call(socket, '/Plugin.Activate')).status).toBe(200);
  });

  it('refuses to take over a socket another live plugin serves, replaces a stale one', async () => {
    await expect(startPlugin(tmp, pluginEnv)).rejects.toThrow(/another process is serving/);
    const dir = fs.mkdtempSync(path.join(tmp, 'stale-'));
    // a crashed process leaves its socket file behind with nobody listening
    const crash = `require('net').createServer().listen(${JSON.stringify(path.join(dir, 'kw.sock'))}, () => process.kill(process.pid, 'SIGKILL'))`;
    spawnSync(process.execPath, ['-e', crash]);
    expect(fs.existsSync(path.join(dir, 'kw.sock'))).toBe(true);
    const { p, client } = await startPlugin(dir, pluginEnv);
    expect((await call(p.socket, '/Plugin.Activate')).status).toBe(200);
    await p.close();
    client.close();
    expect(fs.existsSync(p.socket)).toBe(false);
  });
});

describe('secretprovider', () => {
  const request = (extra: Record<string, unknown> = {}) => ({
    SecretName: 'app_db',
    SecretLabels: { 'keywarden.secret': 'payments.db' },
    ServiceName: 'payments-api',
    ServiceID: 'svc123',
    ServiceLabels: { 'keywarden.client': 'payments' },
    TaskID: 'task456',
    TaskName: 'payments-api.1.task456',
    TaskImage: 'registry.local/payments:1',
    ...extra,
  });

  it('delivers a granted secret, fresh per task (DoNotReuse), as an audited delegated read naming service, task and image', async () => {
    const { result, events } = await capture(b.tb, () => call(socket, '/SecretProvider.GetSecret', request()));
    expect(result.status).toBe(200);
    expect(Object.keys(result.body).sort()).toEqual(['DoNotReuse', 'Value']);
    expect(Buffer.from(result.body.Value, 'base64').toString()).toBe('pay-db-value-1');
    expect(result.body.DoNotReuse).toBe(true);
    const read = events.filter((e) => e.action === 'secret.read');
    expect(read).toHaveLength(1);
    expect(read[0]).toMatchObject({ actorName: 'dockerhost', outcome: 'allow', resourceName: 'payments.db' });
    expect(read[0]!.details).toMatchObject({ via: 'delegated', onBehalfOf: 'payments', source: 'secretprovider', secretName: 'app_db', service: 'payments-api', serviceId: 'svc123', task: 'payments-api.1.task456', taskId: 'task456', image: 'registry.local/payments:1' });
  });

  it('without a keywarden.secret label the swarm secret name is the Keywarden name', async () => {
    const res = await call(socket, '/SecretProvider.GetSecret', request({ SecretName: 'payments.tls', SecretLabels: {} }));
    expect(Buffer.from(res.body.Value, 'base64').toString()).toBe('pay-tls-value');
  });

  it('an ungranted secret and a client the plugin may not act for get Err, never a value', async () => {
    const ungranted = await call(socket, '/SecretProvider.GetSecret', request({ SecretLabels: { 'keywarden.secret': 'other.key' } }));
    expect(ungranted.status).toBe(500);
    expect(ungranted.body.Value).toBeUndefined();
    expect(ungranted.body.Err).toMatch(/secret other\.key is not granted to client payments \(or does not exist\)/);
    const notDelegated = await call(socket, '/SecretProvider.GetSecret', request({ SecretLabels: { 'keywarden.secret': 'other.key' }, ServiceLabels: { 'keywarden.client': 'other' } }));
    expect(notDelegated.body.Value).toBeUndefined();
    expect(notDelegated.body.Err).toMatch(/the plugin may not act for client other.*not_delegated/);
    expect(JSON.stringify([ungranted.body, notDelegated.body])).not.toContain(b64('other-key-value'));
  });

  it('a service without keywarden.client gets Err naming the label; bad bodies get Err; both reported to the audit log', async () => {
    const seq = await mark();
    const missing = await call(socket, '/SecretProvider.GetSecret', request({ ServiceLabels: {} }));
    expect(missing.body).toEqual({ Err: expect.stringMatching(/no keywarden\.client label/) });
    const badType = await call(socket, '/SecretProvider.GetSecret', request({ ServiceLabels: { 'keywarden.client': 7 } }));
    expect(badType.body.Err).toMatch(/invalid request: ServiceLabels/);
    const events = await reported(seq);
    expect(events.map((e) => [e.action, e.outcome, e.actorName])).toEqual([
      ['docker.secretprovider.get', 'deny', 'dockerhost'],
      ['docker.secretprovider.get', 'error', 'dockerhost'],
    ]);
    expect(events[0]!.details).toMatchObject({ reportedBy: 'docker-plugin' });
  });
});

describe.runIf(isRoot)('VolumeDriver (tmpfs mounts; root)', () => {
  const vol = (route: string, body: object) => call(socket, `/VolumeDriver.${route}`, body);
  const dir = () => path.join(tmp, 'state/volumes/payvol');

  it('Capabilities is local; Get, Path, Mount, Remove of an unknown volume are Err (dockerd then calls Create)', async () => {
    expect((await vol('Capabilities', {})).body).toEqual({ Capabilities: { Scope: 'local' } });
    for (const route of ['Get', 'Path', 'Remove']) expect((await vol(route, { Name: 'ghost' })).body.Err, route).toMatch(/no such volume: ghost/);
    expect((await vol('Mount', { Name: 'ghost', ID: 'c0' })).body.Err).toMatch(/no such volume/);
    expect((await vol('Get', { Name: '../etc' })).body.Err).toMatch(/invalid request: Name/);
  });

  it('Create needs client, refuses unknown options and clients the plugin may not act for', async () => {
    expect((await vol('Create', { Name: 'payvol', Opts: {} })).body.Err).toMatch(/client is required/);
    expect((await vol('Create', { Name: 'payvol', Opts: { client: 'payments', mode: '777' } })).body.Err).toMatch(/unknown volume option\(s\): mode/);
    expect((await vol('Create', { Name: 'payvol', Opts: { client: 'payments', size: '5t' } })).body.Err).toMatch(/size must be/);
    const { result, events } = await capture(b.tb, () => vol('Create', { Name: 'othervol', Opts: { client: 'other' } }));
    expect(result.body.Err).toMatch(/not_delegated/);
    expect(events.some((e) => e.outcome === 'deny' && e.reason === 'not_delegated')).toBe(true);
    expect((await vol('Get', { Name: 'othervol' })).body.Err).toMatch(/no such volume/);
  });

  it('Create, Get, List; Mount fills a tmpfs with exactly the granted secrets, with their modes and owners', async () => {
    expect((await vol('Create', { Name: 'payvol', Opts: { client: 'payments' } })).body).toEqual({});
    expect((await vol('Get', { Name: 'payvol' })).body.Volume).toEqual({ Name: 'payvol', Mountpoint: '', Status: { client: 'payments', mounted: false, mounts: 0 } });
    expect((await vol('List', {})).body.Volumes.map((v: { Name: string }) => v.Name)).toEqual(['payvol']);
    const { result, events } = await capture(b.tb, () => vol('Mount', { Name: 'payvol', ID: 'c1' }));
    expect(result.body).toEqual({ Mountpoint: dir() });
    expect(isMountPoint(dir())).toBe(true);
    expect(execFileSync('findmnt', ['-n', '-o', 'FSTYPE,OPTIONS', dir()]).toString()).toMatch(/^tmpfs\s+\S*nosuid,nodev,noexec/);
    expect(fs.readdirSync(dir()).sort()).toEqual(['payments.db', 'payments.tls']);
    const db = fs.statSync(path.join(dir(), 'payments.db'));
    expect([db.mode & 0o777, db.uid, db.gid]).toEqual([0o400, 1000, 1000]);
    expect(fs.statSync(path.join(dir(), 'payments.tls')).mode & 0o777).toBe(0o440);
    expect(fs.readFileSync(path.join(dir(), 'payments.db'), 'utf8')).toBe('pay-db-value-1');
    const reads = events.filter((e) => e.action === 'secret.read' && e.outcome === 'allow');
    expect(reads.map((e) => e.resourceName).sort()).toEqual(['payments.db', 'payments.tls']);
    expect(reads[0]!.details).toMatchObject({ via: 'delegated', onBehalfOf: 'payments', source: 'volume', volume: 'payvol', container: 'c1' });
    expect((await vol('Path', { Name: 'payvol' })).body).toEqual({ Mountpoint: dir() });
    // the state file names volumes and mounts, never a value
    const state = fs.readFileSync(path.join(tmp, 'state/volumes.json'), 'utf8');
    expect(JSON.parse(state).volumes.payvol).toMatchObject({ client: 'payments', mounts: ['c1'] });
    for (const v of ['pay-db-value-1', 'pay-tls-value', b64('pay-db-value-1')]) expect(state).not.toContain(v);
  });

  it('a refresh writes a changed value, adds a new grant and removes a revoked one', async () => {
    const asWriter = (globalThis as Record<string, any>).kwWriter; // eslint-disable-line @typescript-eslint/no-explicit-any
    await asWriter('post', '/v1/secrets/payments.db/versions', { value: 'pay-db-value-2' });
    await asWriter('post', '/v1/secrets', { name: 'payments.new', value: 'pay-new-value', groups: ['payments'], metadata: { mode: '0444' } });
    await asWriter('put', '/v1/groups/payments/secrets', { remove: ['payments.tls'] });
    await plugin.volumes.refreshAll();
    expect(fs.readdirSync(dir()).sort()).toEqual(['payments.db', 'payments.new']);
    expect(fs.readFileSync(path.join(dir(), 'payments.db'), 'utf8')).toBe('pay-db-value-2');
    expect(fs.statSync(path.join(dir(), 'payments.new')).mode & 0o777).toBe(0o444);
  });

  it('survives a plugin restart: Get/List/Path still answer from the state file, the mount stays', async () => {
    await plugin.close();
    plugin = (await startPlugin(tmp, pluginEnv)).p;
    expect((await vol('Get', { Name: 'payvol' })).body.Volume).toMatchObject({ Name: 'payvol', Mountpoint: dir(), Status: { mounted: true, mounts: 1 } });
    expect((await vol('Path', { Name: 'payvol' })).body).toEqual({ Mountpoint: dir() });
  });

  it('a second Mount shares the tmpfs; the last Unmount unmounts it and removes the directory; Remove forgets the volume', async () => {
    expect((await vol('Mount', { Name: 'payvol', ID: 'c2' })).body).toEqual({ Mountpoint: dir() });
    const seq = await mark();
    expect((await vol('Unmount', { Name: 'payvol', ID: 'c1' })).body).toEqual({});
    expect(isMountPoint(dir())).toBe(true);
    expect((await vol('Unmount', { Name: 'payvol', ID: 'c2' })).body).toEqual({});
    expect(isMountPoint(dir())).toBe(false);
    expect(fs.existsSync(dir())).toBe(false);
    expect((await vol('Remove', { Name: 'payvol' })).body).toEqual({});
    expect((await vol('Get', { Name: 'payvol' })).body.Err).toMatch(/no such volume/);
    expect(JSON.parse(fs.readFileSync(path.join(tmp, 'state/volumes.json'), 'utf8')).volumes).toEqual({});
    const events = await reported(seq);
    expect(events.filter((e) => e.action !== 'docker.volume.get').map((e) => [e.action, e.outcome, e.resourceName])).toEqual([
      ['docker.volume.unmount', 'allow', 'payvol'],
      ['docker.volume.unmount', 'allow', 'payvol'],
      ['docker.volume.remove', 'allow', 'payvol'],
    ]);
  });
});

describe('authz', () => {
  const authz = (body: object) => call(socket, '/AuthZPlugin.AuthZReq', body);

  it('allows reads and calls it does not judge; AuthZRes always allows', async () => {
    expect((await authz({ RequestMethod: 'GET', RequestUri: '/v1.41/containers/json', User: '' })).body).toEqual({ Allow: true });
    expect((await authz({ RequestMethod: 'HEAD', RequestUri: '/_ping' })).body).toEqual({ Allow: true });
    expect((await authz({ RequestMethod: 'POST', RequestUri: '/v1.41/containers/abc/start' })).body).toEqual({ Allow: true });
    expect((await call(socket, '/AuthZPlugin.AuthZRes', { RequestMethod: 'GET', RequestUri: '/x', ResponseBody: b64('x'.repeat(5000)) })).body).toEqual({ Allow: true });
  });

  it('container create of an image no policy allows is denied with the gate’s reason (audited by the broker)', async () => {
    const { result, events } = await capture(b.tb, () => authz(containerCreate('r.example.com/none/app:1', '')));
    expect(result.status).toBe(200);
    expect(result.body.Allow).toBe(false);
    expect(result.body.Msg).toMatch(/keywarden release gate denied r\.example\.com\/none\/app:1: policy: .*\(decision rd_/);
    const decide = events.filter((e) => e.action === 'release.decide');
    expect(decide).toHaveLength(1);
    expect(decide[0]!.details).toMatchObject({ decision: 'deny', context: { source: 'authz', image: 'r.example.com/none/app:1' } });
  });

  it('service create/update and pulls are judged by image; unreadable bodies are denied; a malformed request is Err', async () => {
    const svc = { TaskTemplate: { ContainerSpec: { Image: 'r.example.com/none/svc:2', User: '1000' } } };
    const created = await authz({ RequestMethod: 'POST', RequestUri: '/v1.41/services/create', RequestBody: b64(JSON.stringify(svc)) });
    expect(created.body.Msg).toMatch(/denied r\.example\.com\/none\/svc:2/);
    const updated = await authz({ RequestMethod: 'POST', RequestUri: '/services/abc/update?version=3', RequestBody: b64(JSON.stringify(svc)) });
    expect(updated.body.Msg).toMatch(/denied r\.example\.com\/none\/svc:2/);
    // docker pull sends no body and Content-Length: 0 (dockerd passes the headers on)
    const pull = await authz({ RequestMethod: 'POST', RequestUri: '/v1.41/images/create?fromImage=r.example.com%2Fnone%2Fpulled&tag=3', RequestHeaders: { 'Content-Length': '0' } });
    expect(pull.body.Msg).toMatch(/denied r\.example\.com\/none\/pulled:3/);
    const noImage = await authz({ RequestMethod: 'POST', RequestUri: '/containers/create', RequestBody: b64('{"Cmd":["sh"]}') });
    expect(noImage.body).toEqual({ Allow: false, Msg: expect.stringMatching(/cannot judge POST \/containers\/create: the container has no Image/) });
    const notJson = await authz({ RequestMethod: 'POST', RequestUri: '/containers/create', RequestBody: b64('not json') });
    expect(notJson.body).toEqual({ Allow: false, Msg: expect.stringMatching(/not JSON/) });
    expect((await authz({ RequestMethod: 'POST' })).body.Err).toMatch(/invalid request: RequestUri/);
  });

  it('the broker unreachable: deny with a clear message (fail closed), or allow with --fail-open', async () => {
    const down = baseEnv({ ...pluginEnv, KEYWARDEN_ADDR: `http://127.0.0.1:${await closedPort()}` });
    for (const failOpen of [false, true]) {
      const dir = fs.mkdtempSync(path.join(tmp, 'down-'));
      const logs: string[] = [];
      const { p, client } = await startPlugin(dir, down, { failOpen, log: (m) => logs.push(m) });
      try {
        const res = await call(p.socket, '/AuthZPlugin.AuthZReq', containerCreate('r.example.com/none/app:1'));
        if (failOpen) {
          expect(res.body).toEqual({ Allow: true });
          expect(logs.join('\n')).toMatch(/FAIL-OPEN: allowing POST \/containers\/create of r\.example\.com\/none\/app:1/);
        } else {
          expect(res.body.Allow).toBe(false);
          expect(res.body.Msg).toMatch(/could not be asked .* denied \(fail closed\).*unreachable/);
        }
        // reads stay allowed either way
        expect((await call(p.socket, '/AuthZPlugin.AuthZReq', { RequestMethod: 'GET', RequestUri: '/containers/json' })).body).toEqual({ Allow: true });
      } finally {
        await p.close();
        client.close();
      }
    }
  });

  describe.runIf(reg.ok)('with a real registry: the effective user and the decision cache', () => {
    let R: string;
    beforeAll(async () => {
      R = registry!.hostPort;
      await upsertPolicy(b.tb, b.admin, { name: 'plugin-nonroot', images: [`${R}/dp/*`], rules: { nonRootUser: true } });
      await pushTestImage(R, 'dp/app', 'v1', { user: 'app' });
      await pushTestImage(R, 'dp/rootimg', 'v1', {});
    }, 60_000);

    it('a non-root image is allowed, and --user root on it is denied with the nonRootUser reason', async () => {
      expect((await authz(containerCreate(`${R}/dp/app:v1`, ''))).body).toEqual({ Allow: true });
      const root = await authz(containerCreate(`${R}/dp/app:v1`, '0:0'));
      expect(root.body.Allow).toBe(false);
      expect(root.body.Msg).toMatch(/nonRootUser: /);
      const rootImage = await authz(containerCreate(`${R}/dp/rootimg:v1`));
      expect(rootImage.body.Msg).toMatch(/nonRootUser: /);
      expect((await authz(containerCreate(`${R}/dp/rootimg:v1`, '1000'))).body).toEqual({ Allow: true });
    });

    it('a repeated call is answered from the plugin cache (no broker decision), and reported as cached', async () => {
      const seq = await mark();
      expect((await authz(containerCreate(`${R}/dp/app:v1`, ''))).body).toEqual({ Allow: true });
      expect((await authz(containerCreate(`${R}/dp/app:v1`, '0:0'))).body.Allow).toBe(false);
      const events = await reported(seq);
      expect((await eventsAfter(b.tb, seq)).filter((e) => e.action === 'release.decide')).toEqual([]);
      expect(events.map((e) => [e.action, e.outcome, e.details.cached])).toEqual([
        ['docker.authz.request', 'allow', true],
        ['docker.authz.request', 'deny', true],
      ]);
    });
  });
});

describe('keywarden docker-plugin (the CLI process)', () => {
  it('serves the socket and exits 0 on SIGTERM, removing the socket', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'cli-'));
    const sock = path.join(dir, 'kwcli.sock');
    const cli = startCli(['docker-plugin', '--socket', sock, '--state-dir', path.join(dir, 'state'), '--refresh-interval', '5'], pluginEnv, 60_000);
    await waitFor(() => fs.existsSync(sock), 30_000);
    expect((await call(sock, '/Plugin.Activate')).body).toEqual({ Implements: ['secretprovider', 'VolumeDriver', 'authz'] });
    cli.kill('SIGTERM');
    const done = await cli.done;
    expect(done.code, done.stderr).toBe(0);
    expect(fs.existsSync(sock)).toBe(false);
  }, 60_000);

  it('bad flags are a usage error (exit 64)', async () => {
    const done = await startCli(['docker-plugin', '--volume-size', '5t'], pluginEnv).done;
    expect(done.code).toBe(64);
  }, 30_000);
});

describe('packaging/docker-plugin/config.json', () => {
  it('declares the interfaces Plugin.Activate answers, the default socket name, the state dir as propagated mount and CAP_SYS_ADMIN', () => {
    const config = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, '../../packaging/docker-plugin/config.json'), 'utf8'));
    expect(config.interface.types.map((t: string) => /^docker\.(\w+)\/1\.0$/.exec(t)![1]!.toLowerCase()).sort()).toEqual(['authz', 'secretprovider', 'volumedriver']);
    expect(config.interface.socket).toBe('keywarden.sock');
    expect(config.entrypoint).toEqual(expect.arrayContaining(['docker-plugin', '/run/docker/plugins/keywarden.sock', config.propagatedMount]));
    expect(config.propagatedMount).toBe('/run/keywarden-docker');
    expect(config.linux.capabilities).toEqual(['CAP_SYS_ADMIN']);
    expect(config.network.type).toBe('host');
  });
});
