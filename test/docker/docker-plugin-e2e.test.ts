/**
 * `keywarden docker-plugin` end to end: a private dockerd started by the test, the plugin as a
 * real `keywarden docker-plugin` process registered under a unique legacy-plugin name, and a real
 * broker on a loopback port (in-process, so the test reads its audit log directly).
 *
 * 1. secretprovider: a swarm service gets a Keywarden secret through the plugin's secret driver;
 *    an ungranted one is refused and the task never gets it.
 * 2. VolumeDriver: `docker run` with the volume driver sees exactly its granted files with their
 *    modes and owners; nothing is left on disk after `docker volume rm`.
 * 3. authz: with `--authorization-plugin`, a cosign-signed non-root image runs; unsigned, root
 *    and `--user 0` runs are refused with the gate's reason, and so is a percent-encoded
 *    `containers%2Fcreate` sent as raw HTTP; the broker down fails closed.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEvent } from '../../src/audit/audit-types.js';
import { attachCosignSignature } from '../../src/trust/cosign/cosign-signatures.js';
import { buildSimpleSigningPayload } from '../../src/trust/cosign/simple-signing.js';
import { RegistryClient } from '../../src/trust/registry/registry-client.js';
import { eventsAfter, headSeq } from '../support/audit-events.js';
import { BUSYBOX_BINARY, buildBusyboxImage, registerLegacyPlugin, requireDocker, startDockerd, uniquePluginName, type TestDockerd } from '../support/dockerd.js';
import { upsertPolicy } from '../support/policies.js';
import { registryAvailable, startRegistry, type TestRegistry } from '../support/registry.js';
import { baseEnv, startCli, startCliBroker, waitFor, type CliBroker, type RunningCli } from '../cli/cli-support.js';

const execFileAsync = promisify(execFile);
const dockerGate = requireDocker();
const registryGate = registryAvailable();
const describeDocker = dockerGate.ok ? describe : describe.skip;

const BASE = 'kw/busybox:1';
const NONROOT = 'kw/busybox:nonroot';
const VALUES = { db: 'pay-db-value-e2e', token: 'pay-token-value-e2e', other: 'other-value-e2e' };

let b: CliBroker;
let brokerListening = true;
let d: TestDockerd;
let registry: TestRegistry | undefined;
let tmp: string;
let pluginName: string;
let unregister: (() => void) | undefined;
let plugin: RunningCli | undefined;
let stateDir: string;

async function waitForAudit(seq: number, pred: (e: AuditEvent) => boolean, timeoutMs = 20_000): Promise<AuditEvent[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const events = await eventsAfter(b.tb, seq);
    if (events.some(pred) || Date.now() > deadline) return events;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Polls `docker service ps` until the service's (only) task reaches a final state. */
async function finalTaskState(service: string, timeoutMs = 60_000): Promise<{ state: string; error: string }> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    last = await d.dockerOk(['service', 'ps', '--no-trunc', '--format', '{{.CurrentState}}|{{.Error}}', service]);
    const first = last.trim().split('\n')[0] ?? '';
    const [state = '', error = ''] = first.split('|');
    if (/^(Complete|Failed|Rejected|Shutdown)/.test(state)) return { state, error };
    await new Promise((r) => setTimeout(r, 300));
  }
  throw new Error(`service ${service} did not finish: ${last}\n${plugin?.stderr() ?? ''}`);
}

/** One Docker API call over the daemon's socket, with the path sent exactly as given. */
function dockerApi(socket: string, method: string, uri: string, body: unknown): Promise<{ status: number; body: string }> {
  const text = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method, path: uri, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } }, (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: data }));
    });
    req.on('error', reject);
    req.end(text);
  });
}

/** Mount points under `dir` in the host's mount table. */
function mountsUnder(dir: string): string[] {
  return fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

beforeAll(async () => {
  if (!dockerGate.ok) return;
  if (registryGate.ok) registry = await startRegistry();
  b = await startCliBroker({ env: registry ? { KEYWARDEN_INSECURE_REGISTRIES: registry.hostPort } : {} });
  const writer = { Authorization: `Bearer ${await b.tb.apiKey('writer')}` };
  const asWriter = async (p: string, body: object) => {
    const res = await b.tb.request.post(p).set(writer).send(body);
    expect([200, 201], res.text).toContain(res.status);
  };
  for (const g of ['payments', 'other']) await asWriter('/v1/groups', { name: g });
  await asWriter('/v1/secrets', { name: 'db-password', value: VALUES.db, groups: ['payments'], metadata: { mode: '0400', owner: '1000', group: '1000' } });
  await asWriter('/v1/secrets', { name: 'api-token', value: VALUES.token, groups: ['payments'], metadata: { mode: '0440', owner: '0', group: '1000' } });
  await asWriter('/v1/secrets', { name: 'other-secret', value: VALUES.other, groups: ['other'], metadata: { mode: '0444' } });
  for (const [name, groups] of [['payments-api', ['payments']], ['other-api', ['other']]] as const) expect((await b.api('POST', '/v1/clients', { name, groups })).status).toBe(201);
  const created = await b.api('POST', '/v1/clients', { name: 'dockerhost-e2e', actsFor: ['payments-api'], releaseGate: true });
  expect(created.status, JSON.stringify(created.body)).toBe(201);

  d = await startDockerd();
  await buildBusyboxImage(d, BASE);
  await buildBusyboxImage(d, NONROOT, { user: '1000' });

  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-dpe2e-'));
  stateDir = path.join(tmp, 'state');
  pluginName = uniquePluginName('keywarden');
  const socket = path.join(tmp, `${pluginName}.sock`);
  // registered before the plugin listens: dockerd finds the spec, and the socket once the plugin serves it
  unregister = registerLegacyPlugin(pluginName, `unix://${socket}`);
  const env = baseEnv({ KEYWARDEN_ADDR: b.url, KEYWARDEN_CLIENT_ID: created.body.clientId, KEYWARDEN_CLIENT_SECRET: created.body.clientSecret });
  plugin = startCli(['docker-plugin', '--socket', socket, '--state-dir', stateDir, '--refresh-interval', '5'], env, 30 * 60_000);
  await waitFor(() => fs.existsSync(socket), 30_000);
}, 180_000);

afterAll(async () => {
  await d?.stop();
  plugin?.kill('SIGTERM');
  const done = await plugin?.done;
  if (done && (done.code !== 0 || process.env.KW_E2E_PLUGIN_LOG)) console.error(`docker-plugin exited ${done.code}:\n${done.stderr}`);
  unregister?.();
  // whatever a failed test left mounted under the plugin's state dir
  if (stateDir) for (const m of mountsUnder(stateDir).reverse()) await import('node:child_process').then((cp) => cp.execFileSync('umount', ['-l', m]));
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (b) {
    if (brokerListening) await b.server.close();
    await b.tb.close();
  }
  await registry?.stop();
}, 120_000);

describeDocker(`keywarden docker-plugin against a real dockerd${dockerGate.ok ? '' : ` (skipped: ${dockerGate.reason})`}`, () => {
  describe('secretprovider (swarm)', () => {
    beforeAll(async () => {
      await d.swarmInit();
    }, 60_000);

    it('a service labelled with its client gets the granted secret through the plugin driver; the read is audited with service, task and image', async () => {
      // with a driver the value comes from the plugin: the CLI refuses data, even "-" (the form issue 13 quotes)
      const withData = await d.docker(['secret', 'create', '--driver', pluginName, '--label', 'keywarden.secret=db-password', 'app_db', '-'], { input: 'ignored' });
      expect(withData.stderr).toMatch(/When using secret driver secret data must be empty/);
      await d.dockerOk(['secret', 'create', '--driver', pluginName, '--label', 'keywarden.secret=db-password', 'app_db']);
      const inspect = JSON.parse(await d.dockerOk(['secret', 'inspect', 'app_db']))[0];
      expect(inspect.Spec.Driver.Name).toBe(pluginName);
      const seq = await headSeq(b.tb);
      await d.dockerOk([
        'service', 'create', '--detach', '--quiet', '--name', 'pay', '--label', 'keywarden.client=payments-api',
        '--secret', 'app_db', '--restart-condition', 'none', BASE, 'sh', '-c', 'cat /run/secrets/app_db',
      ]);
      const final = await finalTaskState('pay');
      expect(final.state, final.error).toMatch(/^Complete/);
      const logs = await d.dockerOk(['service', 'logs', '--raw', 'pay']);
      expect(logs.trim()).toBe(VALUES.db);
      const events = await waitForAudit(seq, (e) => e.action === 'secret.read');
      const reads = events.filter((e) => e.action === 'secret.read');
      expect(reads).toHaveLength(1);
      const taskId = (await d.dockerOk(['service', 'ps', '-q', '--no-trunc', 'pay'])).trim();
      expect(reads[0]).toMatchObject({ actorName: 'dockerhost-e2e', outcome: 'allow', resourceName: 'db-password' });
      expect(reads[0]!.details).toMatchObject({ via: 'delegated', onBehalfOf: 'payments-api', source: 'secretprovider', secretName: 'app_db', service: 'pay', taskId, image: expect.stringContaining(BASE) });
      expect(String(reads[0]!.details.task)).toContain('pay.1');
    }, 120_000);

    it('a secret not granted to the service’s client is refused: the task fails without it (service ps), the broker audits the deny with service, task and image', async () => {
      await d.dockerOk(['secret', 'create', '--driver', pluginName, '--label', 'keywarden.secret=other-secret', 'app_other']);
      const seq = await headSeq(b.tb);
      await d.dockerOk([
        'service', 'create', '--detach', '--quiet', '--name', 'pay-other', '--label', 'keywarden.client=payments-api',
        '--secret', 'app_other', '--restart-condition', 'none', BASE, 'sh', '-c', 'cat /run/secrets/app_other',
      ]);
      const final = await finalTaskState('pay-other');
      expect(final.state).toMatch(/^(Rejected|Failed)/);
      // swarmkit's dispatcher leaves a secret whose driver answered Err out of the task's
      // assignment and logs the Err at debug level only (moby 20.10, swarmkit
      // manager/dispatcher/assignments.go), so the task fails for the missing secret and the
      // plugin's refusal is seen in the broker's audit log, not in docker's output
      expect(final.error).toMatch(/unable to get secret from secret store: secret \w+ not found/);
      const secretId = (await d.dockerOk(['secret', 'inspect', '--format', '{{.ID}}', 'app_other'])).trim();
      expect(final.error).toContain(secretId);
      expect(await d.dockerOk(['service', 'logs', '--raw', 'pay-other'])).not.toContain(VALUES.other);
      const events = await waitForAudit(seq, (e) => e.action === 'secret.read');
      const denied = events.filter((e) => e.action === 'secret.read');
      expect(denied.length).toBeGreaterThan(0);
      expect(denied.every((e) => e.outcome === 'deny')).toBe(true);
      expect(denied[0]).toMatchObject({ actorName: 'dockerhost-e2e', resourceName: 'other-secret' });
      const taskId = (await d.dockerOk(['service', 'ps', '-q', '--no-trunc', 'pay-other'])).trim();
      expect(denied[0]!.details).toMatchObject({ via: 'delegated', onBehalfOf: 'payments-api', source: 'secretprovider', secretName: 'app_other', service: 'pay-other', taskId, image: BASE });
    }, 120_000);
  });

  describe('VolumeDriver', () => {
    const volumeDir = () => path.join(stateDir, 'volumes', 'payments-vol');

    it('docker run sees exactly the granted files with their modes and owners; after volume rm nothing is left', async () => {
      const seq = await headSeq(b.tb);
      const script = 'ls -1 /run/secrets; echo ---; stat -c "%a %u %g %n" /run/secrets/*; echo ---; cat /run/secrets/db-password; echo; cat /run/secrets/api-token';
      const out = await d.dockerOk([
        'run', '--rm', '--network', 'none',
        '--mount', `type=volume,volume-driver=${pluginName},src=payments-vol,dst=/run/secrets,volume-opt=client=payments-api`,
        BASE, 'sh', '-c', script,
      ]);
      const [ls, stat, cat] = out.split('---\n');
      expect(ls!.trim().split('\n').sort()).toEqual(['api-token', 'db-password']);
      expect(stat!.trim().split('\n').sort()).toEqual(['400 1000 1000 /run/secrets/db-password', '440 0 1000 /run/secrets/api-token'].sort());
      expect(cat!.trim().split('\n')).toEqual([VALUES.db, VALUES.token]);
      expect(out).not.toContain(VALUES.other);

      const reads = (await waitForAudit(seq, (e) => e.action === 'secret.read')).filter((e) => e.action === 'secret.read');
      expect(reads.map((e) => [e.resourceName, e.outcome]).sort()).toEqual([['api-token', 'allow'], ['db-password', 'allow']]);
      expect(reads[0]!.details).toMatchObject({ via: 'delegated', onBehalfOf: 'payments-api', source: 'volume', volume: 'payments-vol' });

      // the container is gone: its Unmount was the last one, so the tmpfs is gone too
      expect(mountsUnder(stateDir)).toEqual([]);
      expect(fs.existsSync(volumeDir())).toBe(false);
      const state = fs.readFileSync(path.join(stateDir, 'volumes.json'), 'utf8');
      expect(JSON.parse(state).volumes['payments-vol']).toMatchObject({ client: 'payments-api', mounts: [] });
      for (const v of Object.values(VALUES)) {
        expect(state).not.toContain(v);
        expect(state).not.toContain(Buffer.from(v).toString('base64'));
      }

      expect(JSON.parse(await d.dockerOk(['volume', 'inspect', 'payments-vol']))[0]).toMatchObject({ Driver: pluginName, Name: 'payments-vol' });
      await d.dockerOk(['volume', 'rm', 'payments-vol']);
      expect((await d.docker(['volume', 'inspect', 'payments-vol'])).code).not.toBe(0);
      expect(mountsUnder(stateDir)).toEqual([]);
      expect(fs.existsSync(volumeDir())).toBe(false);
      expect(JSON.parse(fs.readFileSync(path.join(stateDir, 'volumes.json'), 'utf8')).volumes).toEqual({});
      // calls that never reach another broker route are reported by the plugin (batched every 2 s)
      const reported = await waitForAudit(seq, (e) => e.action === 'docker.volume.remove');
      const plugin = reported.filter((e) => e.action.startsWith('docker.volume.') && e.resourceName === 'payments-vol');
      expect(plugin.map((e) => e.action)).toEqual(expect.arrayContaining(['docker.volume.unmount', 'docker.volume.remove']));
      expect(plugin.every((e) => e.actorName === 'dockerhost-e2e' && e.details.reportedBy === 'docker-plugin')).toBe(true);
      // nothing under the state dir holds a value
      const leftover = fs.readdirSync(stateDir, { recursive: true }).map(String);
      for (const f of leftover) {
        const p = path.join(stateDir, f);
        if (fs.statSync(p).isFile()) for (const v of Object.values(VALUES)) expect(fs.readFileSync(p, 'utf8'), p).not.toContain(v);
      }
    }, 120_000);

    it('a volume for a client the plugin may not act for fails with the plugin’s Err, at create and at run', async () => {
      const created = await d.docker(['volume', 'create', '-d', pluginName, '-o', 'client=other-api', 'other-vol']);
      expect(created.code).not.toBe(0);
      expect(created.stderr).toMatch(/keywarden: .*not_delegated/);
      const run = await d.docker([
        'run', '--rm', '--network', 'none',
        '--mount', `type=volume,volume-driver=${pluginName},src=other-vol2,dst=/run/secrets,volume-opt=client=other-api`,
        BASE, 'cat', '/run/secrets/other-secret',
      ]);
      expect(run.code).not.toBe(0);
      expect(run.stderr).toMatch(/keywarden: .*not_delegated/);
      expect(run.stdout + run.stderr).not.toContain(VALUES.other);
      expect(mountsUnder(stateDir)).toEqual([]);
      expect((await d.docker(['volume', 'inspect', 'other-vol'])).code).not.toBe(0);
    }, 120_000);
  });

  describe('managed plugin: docker plugin create from packaging/docker-plugin/config.json', () => {
    // The project's Dockerfile needs node:20-bookworm-slim, which cannot be pulled here. The rootfs
    // is therefore put together from this host: its node binary and shared libraries, the plugin
    // compiled by tsc, node_modules (hard links) and static busybox for mount/umount. The config
    // under test is the packaged one, unchanged.
    const managed = `${uniquePluginName('kwmanaged')}:latest`;
    let created = false;

    beforeAll(async () => {
      const dir = path.join(tmp, 'managed');
      const rootfs = path.join(dir, 'rootfs');
      for (const sub of ['app', 'bin', 'usr/local/bin', 'lib64', 'etc/keywarden', 'tmp', 'proc', 'sys', 'dev', 'run/docker/plugins', 'run/keywarden-docker']) fs.mkdirSync(path.join(rootfs, sub), { recursive: true });
      const repo = path.resolve(import.meta.dirname, '../..');
      await execFileAsync(path.join(repo, 'node_modules/.bin/tsc'), ['-p', path.join(repo, 'tsconfig.build.json'), '--outDir', path.join(rootfs, 'app/dist')], { cwd: repo });
      fs.copyFileSync(path.join(repo, 'package.json'), path.join(rootfs, 'app/package.json'));
      // hard links when the repository and /tmp share a file system; a copy otherwise
      await execFileAsync('cp', ['-al', path.join(repo, 'node_modules'), path.join(rootfs, 'app/node_modules')]).catch(() =>
        execFileAsync('cp', ['-a', path.join(repo, 'node_modules'), path.join(rootfs, 'app/node_modules')]),
      );
      fs.copyFileSync(process.execPath, path.join(rootfs, 'usr/local/bin/node'));
      fs.chmodSync(path.join(rootfs, 'usr/local/bin/node'), 0o755);
      const { stdout: ldd } = await execFileAsync('ldd', [process.execPath]);
      for (const lib of ldd.matchAll(/(\/\S+\.so[.\d]*)/g)) {
        const target = path.join(rootfs, lib[1]!);
        fs.mkdirSync(path.dirname(target), { recursive: true });
        fs.copyFileSync(fs.realpathSync(lib[1]!), target);
      }
      fs.copyFileSync(BUSYBOX_BINARY, path.join(rootfs, 'bin/busybox'));
      fs.chmodSync(path.join(rootfs, 'bin/busybox'), 0o755);
      for (const applet of ['sh', 'mount', 'umount']) fs.symlinkSync('busybox', path.join(rootfs, 'bin', applet));
      fs.copyFileSync(path.join(repo, 'packaging/docker-plugin/config.json'), path.join(dir, 'config.json'));
      await d.dockerOk(['plugin', 'create', managed, dir], { timeoutMs: 180_000 });
      created = true;
      fs.rmSync(dir, { recursive: true, force: true });
      const credentials = fs.mkdtempSync(path.join(tmp, 'creds-'));
      const client = await b.api('POST', '/v1/clients', { name: 'dockerhost-managed', actsFor: ['payments-api'] });
      expect(client.status).toBe(201);
      await d.dockerOk(['plugin', 'set', managed, `credentials.source=${credentials}`, `KEYWARDEN_ADDR=${b.url}`, `KEYWARDEN_CLIENT_ID=${client.body.clientId}`, `KEYWARDEN_CLIENT_SECRET=${client.body.clientSecret}`]);
      await d.dockerOk(['plugin', 'enable', managed], { timeoutMs: 60_000 });
    }, 300_000);

    afterAll(async () => {
      if (!created) return;
      await d.docker(['volume', 'rm', '-f', 'managed-vol']);
      await d.docker(['plugin', 'disable', '-f', managed], { timeoutMs: 30_000 });
      await d.docker(['plugin', 'rm', '-f', managed], { timeoutMs: 30_000 });
    }, 90_000);

    it('is enabled and serves the volume driver: docker run sees the granted files on its propagated tmpfs mount', async () => {
      expect(await d.dockerOk(['plugin', 'ls', '--format', '{{.Name}} {{.Enabled}}'])).toContain(`${managed} true`);
      await d.dockerOk(['volume', 'create', '-d', managed, '-o', 'client=payments-api', 'managed-vol']);
      const out = await d.dockerOk([
        'run', '--rm', '--network', 'none', '--mount', `type=volume,volume-driver=${managed},src=managed-vol,dst=/run/secrets`,
        BASE, 'sh', '-c', 'stat -c "%a %u %g %n" /run/secrets/*; cat /run/secrets/db-password',
      ]);
      expect(out.trim().split('\n')).toEqual(['440 0 1000 /run/secrets/api-token', '400 1000 1000 /run/secrets/db-password', VALUES.db]);
      // the plugin's tmpfs reached dockerd through the propagated mount and left with the container
      expect(mountsUnder(d.dataRoot).filter((m) => m.includes('propagated-mount/volumes/'))).toEqual([]);
      await d.dockerOk(['volume', 'rm', 'managed-vol']);
      const denied = await d.docker(['volume', 'create', '-d', managed, '-o', 'client=other-api', 'managed-other']);
      expect(denied.stderr).toMatch(/keywarden: .*not_delegated/);
    }, 120_000);
  });

  const describeAuthz = registryGate.ok ? describe : describe.skip;
  describeAuthz(`authz (the release gate at the daemon)${registryGate.ok ? '' : ` (skipped: ${registryGate.reason})`}`, () => {
    let R: string;
    let authzOn = false;

    beforeAll(async () => {
      R = registry!.hostPort;
      // cosign signatures made with the broker's own signing key, attached in the registry
      const key = await b.tb.request.post('/v1/signing-keys').set(b.admin).send({ name: 'release' });
      expect(key.status, key.text).toBe(201);
      const regClient = new RegistryClient({ insecureRegistries: [R] });
      const signer = await b.tb.broker.services.signingKeys.signer('release');
      const push = async (local: string, repo: string, sign: boolean) => {
        await d.dockerOk(['tag', local, `${R}/${repo}:1`]);
        const out = await d.dockerOk(['push', `${R}/${repo}:1`]);
        const digest = /digest: (sha256:[0-9a-f]{64})/.exec(out)?.[1];
        expect(digest, out).toBeDefined();
        if (!sign) return;
        const payload = buildSimpleSigningPayload(`${R}/${repo}`, digest!);
        const signature = await signer.sign(payload);
        await attachCosignSignature(regClient, { registry: R, repository: repo, digest: digest!, payload, signatureB64: signature.toString('base64') });
      };
      await push(NONROOT, 'kw/signed-nonroot', true);
      await push(BASE, 'kw/signed-root', true);
      await push(NONROOT, 'kw/unsigned-nonroot', false);
      await upsertPolicy(b.tb, b.admin, { name: 'docker-e2e', images: [`${R}/kw/*`], cosign: { keys: ['release'] }, rules: { nonRootUser: true } });
      await d.restart({ extraArgs: [`--authorization-plugin=${pluginName}`] });
      authzOn = true;
    }, 120_000);

    afterAll(async () => {
      // every API call needs the authz plugin while the flag is on: turn it off before the plugin stops
      if (authzOn) await d.restart();
    }, 60_000);

    it('a cosign-signed non-root image runs; the decision is audited by the broker with the plugin and context', async () => {
      const seq = await headSeq(b.tb);
      const out = await d.dockerOk(['run', '--rm', '--network', 'none', `${R}/kw/signed-nonroot:1`, 'id', '-u']);
      expect(out.trim()).toBe('1000');
      const decide = (await eventsAfter(b.tb, seq)).filter((e) => e.action === 'release.decide');
      expect(decide).toHaveLength(1);
      expect(decide[0]).toMatchObject({ actorName: 'dockerhost-e2e' });
      expect(decide[0]!.details).toMatchObject({ decision: 'allow', context: { source: 'authz', image: `${R}/kw/signed-nonroot:1` } });
    }, 60_000);

    it('an unsigned image and a root image are refused with the gate’s reason in docker’s stderr', async () => {
      const unsigned = await d.docker(['run', '--rm', '--network', 'none', `${R}/kw/unsigned-nonroot:1`, 'true']);
      expect(unsigned.code).not.toBe(0);
      expect(unsigned.stderr).toMatch(new RegExp(`keywarden release gate denied ${R}/kw/unsigned-nonroot:1: cosign: `));
      const root = await d.docker(['run', '--rm', '--network', 'none', `${R}/kw/signed-root:1`, 'true']);
      expect(root.code).not.toBe(0);
      expect(root.stderr).toMatch(new RegExp(`keywarden release gate denied ${R}/kw/signed-root:1: nonRootUser: `));
      expect(root.stderr).not.toMatch(/cosign: /);
    }, 60_000);

    it('an encoded spelling of containers/create (containers%2Fcreate, which dockerd routes to create) is refused for the unsigned image', async () => {
      // raw HTTP: the docker CLI never sends this spelling; dockerd decodes it and would create the container
      const res = await dockerApi(d.socket, 'POST', '/v1.41/containers%2Fcreate?name=kw-encoded', { Image: `${R}/kw/unsigned-nonroot:1`, Cmd: ['true'] });
      expect(res.status, res.body).toBe(403);
      expect(JSON.parse(res.body).message).toMatch(new RegExp(`authorization denied by plugin ${pluginName}: keywarden release gate denied ${R}/kw/unsigned-nonroot:1: cosign: `));
      expect((await d.docker(['inspect', 'kw-encoded'])).code).not.toBe(0);
    }, 60_000);

    it('--user 0 on the signed non-root image is refused by nonRootUser', async () => {
      const res = await d.docker(['run', '--rm', '--network', 'none', '--user', '0', `${R}/kw/signed-nonroot:1`, 'true']);
      expect(res.code).not.toBe(0);
      expect(res.stderr).toMatch(/keywarden release gate denied .*nonRootUser: container runs as root/);
    }, 60_000);

    it('reads keep working: docker ps and docker images', async () => {
      expect(await d.dockerOk(['ps', '-a', '--format', '{{.Image}}'])).not.toContain('unsigned');
      expect(await d.dockerOk(['images', '--format', '{{.Repository}}'])).toContain(`${R}/kw/signed-nonroot`);
    }, 60_000);

    it('the broker down: docker run is refused with the fail-closed message; reads still work', async () => {
      await b.server.close();
      brokerListening = false;
      // a user the cache has not seen, so the plugin must ask the broker
      const res = await d.docker(['run', '--rm', '--network', 'none', '--user', '1000:1000', `${R}/kw/signed-nonroot:1`, 'true']);
      expect(res.code).not.toBe(0);
      expect(res.stderr).toMatch(/keywarden: the release gate could not be asked about .*signed-nonroot:1, so the call is denied \(fail closed\)/);
      expect((await d.docker(['ps'])).code).toBe(0);
    }, 60_000);
  });
});
