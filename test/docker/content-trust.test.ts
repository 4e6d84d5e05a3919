/**
 * Docker Content Trust made by Docker itself, judged by the release gate and by Docker side by side.
 *
 * A private dockerd, a local docker-registry and a notary-server served with TLS from a test CA.
 * `DOCKER_CONTENT_TRUST=1 docker push` creates the trust data, `docker trust signer add` creates the
 * `targets/releases` delegation and `docker trust sign` signs the tag with the signer's key. A trust
 * policy pins the repository's root key (as `docker trust inspect` shows it) and requires
 * `targets/releases`. For every image, `POST /v1/releases` and `DOCKER_CONTENT_TRUST=1 docker pull`
 * must reach the same decision.
 *
 * The broker runs as a `keywarden serve` process: Docker refuses a plain-http trust server, so the
 * broker must reach notary-server over https too, and Node reads the extra CA it should trust
 * (NODE_EXTRA_CA_CERTS) only when a process starts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertFetchMatchesContract } from '../support/contract.js';
import { buildBusyboxImage, requireDocker, startDockerd, type DockerCallOptions, type TestDockerd } from '../support/dockerd.js';
import { notaryToolsAvailable, startNotaryServer, type NotaryServerHandle } from '../support/notary-server.js';
import { createCa, issue, type Issued } from '../support/pki.js';
import { freePort, registryAvailable, startRegistry, type TestRegistry } from '../support/registry.js';

const dockerGate = requireDocker();
const notaryGate = notaryToolsAvailable();
const registryGate = registryAvailable();
const describeDct = dockerGate.ok && notaryGate.ok && registryGate.ok ? describe : describe.skip;

/**
 * Content trust is a CLI feature (the daemon never talks to notary), and its behaviour may differ
 * between CLI versions: pin Debian's 20.10 CLI, the one a clean CI machine has.
 */
const DCT_CLI = process.env.KEYWARDEN_DCT_DOCKER_CLI ?? '/usr/bin/docker';

const REPO_ROOT = resolve(import.meta.dirname, '../..');
const ROOT_PASSPHRASE = 'kw-dct-root-passphrase';
const REPOSITORY_PASSPHRASE = 'kw-dct-repository-passphrase';

type Decision = 'allow' | 'deny';

interface ReleaseDecision {
  decision: Decision;
  digest: string | null;
  policy: string | null;
  checks: Array<{ type: string; ok: boolean; detail: string; code?: string }>;
}

/** `keywarden serve` as a real process, trusting the test CA through NODE_EXTRA_CA_CERTS. */
async function startBrokerProcess(env: Record<string, string>): Promise<{ url: string; adminKey: string; logs: () => string; stop: () => Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'kw-dct-broker-'));
  const adminKey = `kw_${randomBytes(24).toString('base64url')}`;
  const port = await freePort();
  const clean: Record<string, string> = {};
  // the broker's settings come from this test only, never from the environment vitest runs in
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('KEYWARDEN_') && !k.startsWith('DOCKER_')) clean[k] = v;
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src/cli/main.ts'), 'serve'], {
    cwd: REPO_ROOT,
    env: {
      ...clean,
      KEYWARDEN_DATA_DIR: dataDir,
      KEYWARDEN_LISTEN: `127.0.0.1:${port}`,
      KEYWARDEN_LOG_LEVEL: 'warn',
      KEYWARDEN_BOOTSTRAP_ADMIN_KEY: adminKey,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const onData = (d: Buffer) => (output = (output + d.toString()).slice(-20_000));
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) break;
    try {
      if ((await fetch(`${url}/readyz`)).ok) return { url, adminKey, logs: () => output, stop };
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  await stop();
  throw new Error(`keywarden serve did not become ready:\n${output}`);
}

/** GET over https trusting only the test CA; the body as text. */
function httpsGet(url: string, caPem: string): Promise<{ status: number; body: string }> {
  return new Promise((ok, fail) => {
    httpsRequest(url, { ca: caPem, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => ok({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
    })
      .on('error', fail)
      .end();
  });
}

describeDct('Docker Content Trust made by Docker itself, and the release gate', () => {
  let ca: Issued;
  let notary: NotaryServerHandle;
  let registry: TestRegistry;
  let d: TestDockerd;
  let broker: Awaited<ReturnType<typeof startBrokerProcess>>;
  let workDir: string;
  let R: string;
  let trustEnv: Record<string, string>;
  let signerKey: string;
  let writerKey: string;

  // trusted: DCT push, then a targets/releases delegation signs it; the others never saw DCT
  const TRUSTED_REPO = 'kw/dct';
  const trusted = () => `${R}/${TRUSTED_REPO}:signed`;
  const unsignedTag = () => `${R}/${TRUSTED_REPO}:unsigned`;
  const noTrustRepo = () => `${R}/kw/plain:1`;
  // DCT push before the delegation existed: signed by the repository (targets) key only
  const repoKeyOnly = () => `${R}/${TRUSTED_REPO}:repo-key`;
  const gun = () => `${R}/${TRUSTED_REPO}`;

  /** The pinned 20.10 CLI against the private daemon. */
  const cli = (args: string[], o: DockerCallOptions = {}) => d.docker(args, { ...o, cli: DCT_CLI });
  const cliOk = (args: string[], o: DockerCallOptions = {}) => d.dockerOk(args, { ...o, cli: DCT_CLI });

  async function api(method: string, path: string, key: string, body?: unknown) {
    const res = await fetch(`${broker.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    await assertFetchMatchesContract(method, res.url, res.clone());
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  async function putPolicy(doc: Record<string, unknown>) {
    const existing = await api('GET', `/v1/policies/${doc.name}`, broker.adminKey);
    const res =
      existing.status === 200 ? await api('PUT', `/v1/policies/${doc.name}`, broker.adminKey, doc) : await api('POST', '/v1/policies', broker.adminKey, doc);
    expect([200, 201], JSON.stringify(res.body)).toContain(res.status);
  }

  async function decide(image: string): Promise<ReleaseDecision> {
    const res = await api('POST', '/v1/releases', writerKey, { image });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body as unknown as ReleaseDecision;
  }

  /** Docker's own verdict: `DOCKER_CONTENT_TRUST=1 docker pull` of a reference that is not local. */
  async function dockerPullDecision(ref: string): Promise<{ decision: Decision; output: string }> {
    await cli(['rmi', ref]); // may not exist locally; then this is a no-op
    const r = await cli(['pull', ref], { env: trustEnv });
    return { decision: r.code === 0 ? 'allow' : 'deny', output: `${r.stdout}\n${r.stderr}` };
  }

  beforeAll(async () => {
    workDir = mkdtempSync(join(tmpdir(), 'kw-dct-'));
    ca = await createCa('keywarden test notary CA');
    const serverCert = await issue(ca, { ips: ['127.0.0.1'], usage: 'server' });
    notary = await startNotaryServer({ tls: { certPem: serverCert.certPem, keyPem: serverCert.keyPem, caPem: ca.certPem } });
    registry = await startRegistry();
    R = registry.hostPort;
    d = await startDockerd();

    // the docker CLI trusts a notary server's CA from $DOCKER_CONFIG/tls/<host:port>/ca.crt
    const cliTls = join(d.env.DOCKER_CONFIG!, 'tls', `127.0.0.1:${notary.port}`);
    mkdirSync(cliTls, { recursive: true });
    writeFileSync(join(cliTls, 'ca.crt'), ca.certPem);
    trustEnv = {
      DOCKER_CONTENT_TRUST: '1',
      DOCKER_CONTENT_TRUST_SERVER: notary.url,
      DOCKER_CONTENT_TRUST_ROOT_PASSPHRASE: ROOT_PASSPHRASE,
      DOCKER_CONTENT_TRUST_REPOSITORY_PASSPHRASE: REPOSITORY_PASSPHRASE,
    };

    const caFile = join(workDir, 'notary-ca.pem');
    writeFileSync(caFile, ca.certPem);
    broker = await startBrokerProcess({
      NODE_EXTRA_CA_CERTS: caFile,
      // the registry speaks plain http; notary is https, private, so it must be allowed explicitly
      KEYWARDEN_INSECURE_REGISTRIES: R,
      KEYWARDEN_EGRESS_ALLOW: `127.0.0.1:${notary.port}`,
      KEYWARDEN_GATE_CACHE_TTL: '0',
    });
    const key = await api('POST', '/v1/api-keys', broker.adminKey, { name: 'ci-writer', role: 'writer' });
    expect(key.status, JSON.stringify(key.body)).toBe(201);
    writerKey = key.body.key as string;

    // three images with different digests: signed by the delegation, by the repository key only, never signed
    await buildBusyboxImage(d, 'kw/busybox:signed', { labels: { 'org.example.build': 'signed' } });
    await buildBusyboxImage(d, 'kw/busybox:unsigned', { labels: { 'org.example.build': 'unsigned' } });
    await buildBusyboxImage(d, 'kw/busybox:repo-key', { labels: { 'org.example.build': 'repo-key' } });

    // 1. DCT push: creates the root and repository (targets) keys and publishes the tags in `targets`
    await cliOk(['tag', 'kw/busybox:signed', trusted()]);
    await cliOk(['push', trusted()], { env: trustEnv });
    await cliOk(['tag', 'kw/busybox:repo-key', repoKeyOnly()]);
    await cliOk(['push', repoKeyOnly()], { env: trustEnv });
    // 2. a signer key, a targets/releases delegation for it, and a signature by that delegation
    await cliOk(['trust', 'key', 'generate', 'releases-signer', '--dir', workDir], { env: trustEnv });
    signerKey = join(workDir, 'releases-signer.pub');
    await cliOk(['trust', 'signer', 'add', '--key', signerKey, 'releases-signer', gun()], { env: trustEnv });
    await cliOk(['trust', 'sign', trusted()], { env: trustEnv });
    // 3. pushed without content trust: a tag of the signed repository, and a repository with no trust data
    await cliOk(['tag', 'kw/busybox:unsigned', unsignedTag()]);
    await cliOk(['push', unsignedTag()]);
    await cliOk(['tag', 'kw/busybox:unsigned', noTrustRepo()]);
    await cliOk(['push', noTrustRepo()]);
  }, 240_000);

  afterAll(async () => {
    await broker?.stop();
    await d?.stop();
    await registry?.stop();
    await notary?.stop();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  /** The root key id as `docker trust inspect` shows it (what an operator copies into the policy). */
  async function inspectedRootKeyId(): Promise<string> {
    const [info] = JSON.parse(await cliOk(['trust', 'inspect', gun()], { env: trustEnv })) as Array<{
      AdministrativeKeys: Array<{ Name: string; Keys: Array<{ ID: string }> }>;
      Signers: Array<{ Name: string }>;
      SignedTags: Array<{ SignedTag: string; Digest: string; Signers: string[] }>;
    }>;
    const root = info!.AdministrativeKeys.find((k) => k.Name === 'Root');
    expect(root?.Keys).toHaveLength(1);
    return root!.Keys[0]!.ID;
  }

  it('Docker made a targets/releases delegation that signs the tag', async () => {
    const [info] = JSON.parse(await cliOk(['trust', 'inspect', trusted()], { env: trustEnv })) as Array<{
      Signers: Array<{ Name: string }>;
      SignedTags: Array<{ SignedTag: string; Digest: string; Signers: string[] }>;
    }>;
    expect(info!.Signers.map((s) => s.Name)).toContain('releases-signer');
    expect(info!.SignedTags).toEqual([expect.objectContaining({ SignedTag: 'signed', Signers: ['releases-signer'] })]);
    // the delegation role really is targets/releases on the server (what the policy requires)
    const releases = await httpsGet(`${notary.url}/v2/${gun()}/_trust/tuf/targets/releases.json`, ca.certPem);
    expect(releases.status).toBe(200);
    expect(Object.keys(JSON.parse(releases.body).signed.targets)).toContain('signed');
    // Docker's root key is an ecdsa-x509 certificate key, and `docker trust inspect` shows the key id root.json uses
    const root = JSON.parse((await httpsGet(`${notary.url}/v2/${gun()}/_trust/tuf/root.json`, ca.certPem)).body).signed;
    expect(root.roles.root.keyids).toEqual([await inspectedRootKeyId()]);
    expect(root.keys[root.roles.root.keyids[0]].keytype).toBe('ecdsa-x509');
  });

  it('the gate and `DOCKER_CONTENT_TRUST=1 docker pull` reach the same decision for every image', async () => {
    const rootKeyId = await inspectedRootKeyId();
    await putPolicy({
      name: 'dct',
      images: [`${R}/kw/*`],
      notary: { server: notary.url, rootKeys: [rootKeyId], delegations: ['targets/releases'] },
    });
    const cases: Array<{ ref: string; expected: Decision; gateCode?: string; dockerSays?: RegExp }> = [
      { ref: trusted(), expected: 'allow' },
      { ref: unsignedTag(), expected: 'deny', gateCode: 'tag_missing', dockerSays: /No valid trust data for unsigned/ },
      { ref: noTrustRepo(), expected: 'deny', gateCode: 'bad_metadata', dockerSays: /does not have trust data for/ },
    ];
    const rows: Array<{ ref: string; gate: Decision; docker: Decision }> = [];
    for (const c of cases) {
      const gate = await decide(c.ref);
      const docker = await dockerPullDecision(c.ref);
      rows.push({ ref: c.ref, gate: gate.decision, docker: docker.decision });
      const why = `${c.ref}\ngate: ${JSON.stringify(gate.checks)}\ndocker: ${docker.output}`;
      if (c.expected === 'allow') {
        expect(gate.checks, why).toEqual([expect.objectContaining({ type: 'notary', ok: true })]);
        expect(gate.checks[0]!.detail, why).toContain('targets/releases');
      } else {
        // a deny for the right reason: trust data, not a broken connection
        expect(gate.checks.find((x) => !x.ok)?.code, why).toMatch(new RegExp(`^(${c.gateCode})$`));
        expect(docker.output, why).toMatch(c.dockerSays!);
      }
    }
    console.table(rows);
    expect(rows).toEqual(cases.map((c) => ({ ref: c.ref, gate: c.expected, docker: c.expected })));
    // Docker pulled exactly the digest the gate approved
    const approved = await decide(trusted());
    const pulledDigests = await cliOk(['image', 'inspect', '--format', '{{json .RepoDigests}}', trusted()]);
    expect(JSON.parse(pulledDigests)).toContain(`${gun()}@${approved.digest}`);
  }, 120_000);

  it('agrees with Docker on a tag signed only with the repository key, unless the policy requires the delegation', async () => {
    const rootKeyId = await inspectedRootKeyId();
    // Docker looks in targets/releases first and then falls back to targets, so it pulls this tag
    const docker = await dockerPullDecision(repoKeyOnly());
    expect(docker.decision, docker.output).toBe('allow');
    // without `delegations` the gate looks the tag up the same way, and allows the same digest
    await putPolicy({ name: 'dct', images: [`${R}/kw/*`], notary: { server: notary.url, rootKeys: [rootKeyId] } });
    const byDefault = await decide(repoKeyOnly());
    expect(byDefault.decision, JSON.stringify(byDefault.checks)).toBe('allow');
    const pulled = await cliOk(['image', 'inspect', '--format', '{{json .RepoDigests}}', repoKeyOnly()]);
    expect(JSON.parse(pulled)).toContain(`${gun()}@${byDefault.digest}`);
    expect((await decide(trusted())).decision).toBe('allow');
    // a policy that names targets/releases is stricter than Docker on purpose: the repository key
    // alone does not make a release
    await putPolicy({ name: 'dct', images: [`${R}/kw/*`], notary: { server: notary.url, rootKeys: [rootKeyId], delegations: ['targets/releases'] } });
    const required = await decide(repoKeyOnly());
    expect(required.decision).toBe('deny');
    expect(required.checks.find((x) => !x.ok)).toMatchObject({ type: 'notary', code: 'tag_missing', detail: 'tag repo-key not found in targets/releases' });
  });

  it('denies the Docker-signed image when the policy pins another root key', async () => {
    const other = await createCa('not the repository root');
    await putPolicy({
      name: 'dct',
      images: [`${R}/kw/*`],
      notary: { server: notary.url, rootKeys: [other.certPem], delegations: ['targets/releases'] },
    });
    const d1 = await decide(trusted());
    expect(d1.decision).toBe('deny');
    expect(d1.checks.find((x) => !x.ok)).toMatchObject({ type: 'notary', code: 'root_untrusted' });
  });
});
