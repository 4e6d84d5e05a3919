/**
 * docker-compose.yml for a user outside the compose network: the broker's token issuer is the
 * published URL (or KEYWARDEN_PUBLIC_URL), containers inside the network may dial another address,
 * and the example app runs the broker's image instead of building it a second time.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import YAML from 'yaml';
import { baseEnv, printEnvCmd, REPO_ROOT, runCli, startCliBroker, type CliBroker } from '../cli/cli-support.js';

vi.setConfig({ testTimeout: 120_000, hookTimeout: 120_000 });

const composeFile = path.join(REPO_ROOT, 'docker-compose.yml');
const compose = YAML.parse(fs.readFileSync(composeFile, 'utf8'));
const hasComposeCli = spawnSync('docker-compose', ['version'], { encoding: 'utf8' }).status === 0;
if (!hasComposeCli && process.env.KEYWARDEN_REQUIRE_TOOLS === '1') throw new Error('docker-compose is required (KEYWARDEN_REQUIRE_TOOLS=1)');

/** `docker-compose config` with the given environment: the file as Compose resolves it. */
function resolved(env: Record<string, string>) {
  const run = spawnSync('docker-compose', ['-f', composeFile, '--profile', 'example', 'config'], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', ...env },
    encoding: 'utf8',
  });
  expect(run.status, run.stderr).toBe(0);
  return YAML.parse(run.stdout);
}

describe('docker-compose.yml', () => {
  it('runs the example app from the broker image instead of building it twice', () => {
    const { keywarden, app } = compose.services;
    expect(keywarden.build).toBeDefined();
    expect(app.build).toBeUndefined();
    expect(app.image).toBe(keywarden.image);
    expect(app.pull_policy).toBe('never');
    expect(app.depends_on.keywarden).toBeDefined();
  });

  it.skipIf(!hasComposeCli)('issues tokens under the published URL, or KEYWARDEN_PUBLIC_URL when set', () => {
    const plain = resolved({});
    const published = plain.services.keywarden.ports.map((p: any) => (typeof p === 'string' ? p : `${p.host_ip}:${p.published}:${p.target}`));
    expect(published.join(' ')).toMatch(/127\.0\.0\.1:8750:8750/);
    expect(plain.services.keywarden.environment.KEYWARDEN_ISSUER).toBe('http://127.0.0.1:8750');
    // the app inside the compose network dials the service name, not the issuer
    expect(plain.services.app.environment.KEYWARDEN_ADDR).toBe('http://keywarden:8750');
    const proxied = resolved({ KEYWARDEN_PUBLIC_URL: 'https://keywarden.example.com' });
    expect(proxied.services.keywarden.environment.KEYWARDEN_ISSUER).toBe('https://keywarden.example.com');
  });
});

describe('a client that dials another address than the issuer', () => {
  let b: CliBroker;
  beforeAll(async () => {
    // as in the compose file: the issuer is one URL, the client reaches the broker by another
    b = await startCliBroker({ env: { KEYWARDEN_ISSUER: 'http://127.0.0.1:8750' } });
  });
  afterAll(async () => {
    await b?.close();
  });

  it('gets its secrets, with tokens and discovery naming the issuer', async () => {
    expect((await b.api('POST', '/v1/groups', { name: 'app' })).status).toBe(201);
    expect((await b.api('POST', '/v1/secrets', { name: 'db-password', value: 'compose-pass-5e6f7a8b', groups: ['app'] })).status).toBe(201);
    const c = await b.tb.client('payments-api', ['app']);
    const viaServiceName = b.url.replace('127.0.0.1', 'localhost');
    // the compose app's command line: keywarden exec --secret db-password=DB_PASSWORD -- <app>
    const r = await runCli(['exec', '--secret', 'db-password=DB_PASSWORD', '--', ...printEnvCmd(['DB_PASSWORD'])], baseEnv({ KEYWARDEN_ADDR: viaServiceName, KEYWARDEN_CLIENT_ID: c.clientId, KEYWARDEN_CLIENT_SECRET: c.clientSecret }));
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).env.DB_PASSWORD).toBe('compose-pass-5e6f7a8b');
    const discovery = (await fetch(`${b.url}/.well-known/openid-configuration`).then((res) => res.json())) as { issuer: string };
    expect(discovery.issuer).toBe('http://127.0.0.1:8750');
  });
});
