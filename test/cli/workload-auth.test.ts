/**
 * `keywarden exec` / `fetch` with a single-use bootstrap token and with mTLS client certificates.
 * Each block probes the broker first and is skipped until the server side supports that mode.
 */
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { baseEnv, printEnvCmd, runCli, startCli, startCliBroker, type CliBroker, type CliResult } from './cli-support.js';
import { createCa, issue, writePems } from '../support/pki.js';

// Each case spawns real CLI processes (node + tsx), which take seconds each on a loaded machine.
vi.setConfig({ testTimeout: 120_000, hookTimeout: 120_000 });

const BOOT_VALUE = 'bootstrap-delivered-9a8b7c6d';
const MTLS_VALUE = 'mtls-delivered-1f2e3d4c';

const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

// ---- bootstrap tokens: supported when POST /v1/clients/{name}/bootstrap-tokens answers 201
const boot: CliBroker = await startCliBroker();
cleanups.push(() => boot.close());
await boot.api('POST', '/v1/groups', { name: 'app' });
await boot.api('POST', '/v1/secrets', { name: 'db-password', value: BOOT_VALUE, groups: ['app'] });
await boot.api('POST', '/v1/clients', { name: 'booted', groups: ['app'] });
const bootProbe = await boot.api('POST', '/v1/clients/booted/bootstrap-tokens', {});
const bootstrapSupported = bootProbe.status === 201 && typeof bootProbe.body?.token === 'string';

async function bootstrapToken(): Promise<string> {
  const res = await boot.api('POST', '/v1/clients/booted/bootstrap-tokens', {});
  expect(res.status).toBe(201);
  return res.body.token as string;
}

describe('bootstrap token', () => {
  it.skipIf(!bootstrapSupported)('exec exchanges it, runs CMD with the secret and without the token; a reused token is 77', async () => {
    const token = await bootstrapToken();
    const env = baseEnv({ KEYWARDEN_ADDR: boot.url, KEYWARDEN_BOOTSTRAP_TOKEN: token });
    const run = startCli(['exec', '--secret', 'db-password', '--', ...printEnvCmd(['DB_PASSWORD', 'KEYWARDEN_BOOTSTRAP_TOKEN'])], env);
    const r = await run.done;
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.pid).toBe(run.pid);
    expect(out.env).toEqual({ DB_PASSWORD: BOOT_VALUE, KEYWARDEN_BOOTSTRAP_TOKEN: null });

    const again = await runCli(['exec', '--secret', 'db-password', '--', 'true'], env);
    expect(again.code).toBe(77);
    expect(again.stderr).toMatch(/already been used/);
    expect(again.stderr).not.toContain(token);
    expect(again.stderr).not.toContain(BOOT_VALUE);
  });

  it.skipIf(!bootstrapSupported)('fetch writes files with a bootstrap token', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-boot-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const r = await runCli(['fetch', '--dir', dir, '--all'], baseEnv({ KEYWARDEN_ADDR: boot.url, KEYWARDEN_BOOTSTRAP_TOKEN: await bootstrapToken() }));
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'db-password'), 'utf8')).toBe(BOOT_VALUE);
  });
});

// ---- mTLS: supported when a certificate mapped to a client (certIdentity CN=...) can list its secrets
const ca = await createCa('Keywarden CLI Test CA');
const otherCa = await createCa('Unrelated CA');
const serverCert = await issue(ca, { cn: '127.0.0.1', ips: ['127.0.0.1'], usage: 'server' });
const clientCert = await issue(ca, { cn: 'cli-worker', usage: 'client' });
const strangerCert = await issue(ca, { cn: 'stranger', usage: 'client' });
const pems = writePems({
  'ca.pem': ca.certPem,
  'other-ca.pem': otherCa.certPem,
  'server.pem': serverCert.certPem,
  'server-key.pem': serverCert.keyPem,
  'client.pem': clientCert.certPem,
  'client-key.pem': clientCert.keyPem,
  'stranger.pem': strangerCert.certPem,
  'stranger-key.pem': strangerCert.keyPem,
});
cleanups.push(() => fs.rmSync(pems.dir, { recursive: true, force: true }));
const p = pems.paths;

let mtls: CliBroker | undefined;
let mtlsSupported = false;
try {
  mtls = await startCliBroker({ tls: { certFile: p['server.pem'], keyFile: p['server-key.pem'], clientCaFile: p['ca.pem'] } });
  cleanups.push(() => mtls!.close());
  await mtls.api('POST', '/v1/groups', { name: 'app' });
  await mtls.api('POST', '/v1/secrets', { name: 'db-password', value: MTLS_VALUE, groups: ['app'] });
  const created = await mtls.api('POST', '/v1/clients', { name: 'cli-worker', groups: ['app'], certIdentity: 'CN=cli-worker' });
  if (created.status === 201) {
    const status = await new Promise<number>((resolve) => {
      const req = https.request(
        `${mtls!.url}/v1/client/secrets`,
        { ca: ca.certPem, cert: clientCert.certPem, key: clientCert.keyPem, agent: false },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', () => resolve(0));
      req.end();
    });
    mtlsSupported = status === 200;
  }
} catch {
  mtlsSupported = false;
}

describe('mTLS client certificate', () => {
  const env = (extra: Record<string, string> = {}) =>
    baseEnv({ KEYWARDEN_ADDR: mtls!.url, KEYWARDEN_TLS_CERT: p['client.pem'], KEYWARDEN_TLS_KEY: p['client-key.pem'], KEYWARDEN_CA: p['ca.pem'], ...extra });
  const noLeak = (r: CliResult) => expect(r.stderr + r.stdout).not.toContain(MTLS_VALUE);

  it.skipIf(!mtlsSupported)('exec authenticates with the certificate (no token) and strips the TLS variables from CMD', async () => {
    const r = await runCli(['exec', '--all', '--', ...printEnvCmd(['DB_PASSWORD', 'KEYWARDEN_TLS_KEY', 'KEYWARDEN_TLS_CERT'])], env());
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).env).toEqual({ DB_PASSWORD: MTLS_VALUE, KEYWARDEN_TLS_KEY: null, KEYWARDEN_TLS_CERT: null });
  });

  it.skipIf(!mtlsSupported)('fetch writes files over mTLS', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-mtls-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const r = await runCli(['fetch', '--dir', dir, '--secret', 'db-password'], env());
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'db-password'), 'utf8')).toBe(MTLS_VALUE);
  });

  it.skipIf(!mtlsSupported)('an unmapped certificate is 77; an untrusted broker certificate fails fast with 70', async () => {
    const [unmapped, wrongCa] = await Promise.all([
      runCli(['exec', '--all', '--', 'true'], env({ KEYWARDEN_TLS_CERT: p['stranger.pem'], KEYWARDEN_TLS_KEY: p['stranger-key.pem'] })),
      runCli(['exec', '--all', '--timeout', '30', '--', 'true'], env({ KEYWARDEN_CA: p['other-ca.pem'] })),
    ]);
    expect(unmapped.code, unmapped.stderr).toBe(77);
    expect(wrongCa.code, wrongCa.stderr).toBe(70);
    expect(wrongCa.stderr).toMatch(/TLS verification of the broker/);
    expect(wrongCa.stderr).not.toMatch(/retrying/);
    noLeak(unmapped);
    noLeak(wrongCa);
  });

  it.skipIf(!mtlsSupported)('mTLS needs an https:// address and both files (64)', async () => {
    const r1 = await runCli(['exec', '--all', '--', 'true'], env({ KEYWARDEN_ADDR: 'http://127.0.0.1:1' }));
    expect(r1.code).toBe(64);
    const { KEYWARDEN_TLS_KEY: _k, ...half } = env();
    expect((await runCli(['exec', '--all', '--', 'true'], half)).code).toBe(64);
  });
});
