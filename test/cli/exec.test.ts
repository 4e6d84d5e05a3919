/** `keywarden exec` as a real child process against a real broker on a loopback port. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { listen } from '../../src/http/server.js';
import { baseEnv, closedPort, waitFor, printEnvCmd, runCli, startCli, startCliBroker, type CliBroker, type CliResult } from './cli-support.js';

// Each case spawns real CLI processes (node + tsx), which take seconds each on a loaded machine.
vi.setConfig({ testTimeout: 120_000, hookTimeout: 120_000 });

const VALUES = {
  'db-password': 'pg-pass-7f3a9c1e',
  'api.key': 'api-key-44b0d2e8',
  '1st-token': 'first-token-9e8d7c6b',
  'other-secret': 'not-granted-5a5a5a5a',
};

describe('keywarden exec', () => {
  let b: CliBroker;
  let creds: { clientId: string; clientSecret: string };
  let env: Record<string, string>;
  let tmp: string;

  const json = (r: CliResult) => {
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as { pid: number; argv: string[]; env: Record<string, string | null> };
  };
  /** No secret value or credential shows up in a failing run's output. */
  const expectNoLeaks = (r: CliResult) => {
    for (const v of [...Object.values(VALUES), creds.clientSecret]) {
      expect(r.stderr).not.toContain(v);
      expect(r.stdout).not.toContain(v);
    }
  };

  beforeAll(async () => {
    b = await startCliBroker();
    for (const g of ['app', 'elsewhere']) expect((await b.api('POST', '/v1/groups', { name: g })).status).toBe(201);
    for (const [name, value] of Object.entries(VALUES)) {
      const groups = name === 'other-secret' ? ['elsewhere'] : ['app'];
      const res = await b.api('POST', '/v1/secrets', { name, value, groups });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    }
    expect((await b.api('POST', '/v1/secrets', { name: 'nul-bytes', content: Buffer.from('a\0b').toString('base64'), groups: ['elsewhere'] })).status).toBe(201);
    creds = await b.tb.client('web', ['app']);
    env = baseEnv({ KEYWARDEN_ADDR: b.url, KEYWARDEN_CLIENT_ID: creds.clientId, KEYWARDEN_CLIENT_SECRET: creds.clientSecret, KW_PASSTHROUGH: 'kept' });
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-exec-'));
  });

  afterAll(async () => {
    await b?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('puts named secrets in the environment under derived and explicit names', async () => {
    const out = json(
      await runCli(['exec', '--secret', 'db-password', '--secret', 'api.key=MY_API_KEY', '--', ...printEnvCmd(['DB_PASSWORD', 'MY_API_KEY', 'API_KEY', '_1ST_TOKEN'])], env),
    );
    expect(out.env).toEqual({ DB_PASSWORD: VALUES['db-password'], MY_API_KEY: VALUES['api.key'], API_KEY: null, _1ST_TOKEN: null });
  });

  it('--all puts every granted secret in the environment, and nothing else', async () => {
    const out = json(await runCli(['exec', '--all', '--', ...printEnvCmd(['DB_PASSWORD', 'API_KEY', '_1ST_TOKEN', 'OTHER_SECRET'])], env));
    expect(out.env).toEqual({ DB_PASSWORD: VALUES['db-password'], API_KEY: VALUES['api.key'], _1ST_TOKEN: VALUES['1st-token'], OTHER_SECRET: null });
  });

  it('removes broker credentials from the child environment and keeps the rest', async () => {
    const out = json(
      await runCli(
        ['exec', '--secret', 'db-password', '--', ...printEnvCmd(['KEYWARDEN_CLIENT_ID', 'KEYWARDEN_CLIENT_SECRET', 'KEYWARDEN_BOOTSTRAP_TOKEN', 'KEYWARDEN_ADDR', 'KW_PASSTHROUGH'])],
        { ...env, KEYWARDEN_BOOTSTRAP_TOKEN: 'kwb_unused-but-sensitive' },
      ),
    );
    expect(out.env).toEqual({
      KEYWARDEN_CLIENT_ID: null,
      KEYWARDEN_CLIENT_SECRET: null,
      KEYWARDEN_BOOTSTRAP_TOKEN: null,
      KEYWARDEN_ADDR: b.url,
      KW_PASSTHROUGH: 'kept',
    });
  });

  it('replaces itself with CMD (same pid: execve, no parent left) and passes args literally with no shell', async () => {
    const weird = ['$HOME;echo hi', '*', 'a b', "'quoted'", '`id`'];
    const run = startCli(['exec', '--secret', 'db-password', '--', ...printEnvCmd([]), ...weird], env);
    const r = await run.done;
    const out = json(r);
    expect(out.pid).toBe(run.pid);
    expect(out.argv).toEqual(weird);
  });

  it('/usr/bin/env sees the value, and it is on no command line', async () => {
    const r = await runCli(['exec', '--secret', 'db-password', '--', 'env'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')).toContain(`DB_PASSWORD=${VALUES['db-password']}`);
    expect(r.stdout).not.toMatch(/^KEYWARDEN_CLIENT_SECRET=/m);
  });

  it('exits 127 when CMD is not found and 126 when it is not executable', async () => {
    const notFound = await runCli(['exec', '--secret', 'db-password', '--', 'kw-no-such-command-xyz'], env);
    expect(notFound.code).toBe(127);
    expect(notFound.stderr).toMatch(/kw-no-such-command-xyz: command not found/);
    const file = path.join(tmp, 'not-executable.sh');
    fs.writeFileSync(file, '#!/bin/sh\necho hi\n', { mode: 0o644 });
    const notExec = await runCli(['exec', '--secret', 'db-password', '--', file], env);
    expect(notExec.code).toBe(126);
    expectNoLeaks(notFound);
    expectNoLeaks(notExec);
  });

  it('refuses a value with a NUL byte, naming the secret', async () => {
    const c = await b.tb.client('nul-reader', ['elsewhere']);
    const r = await runCli(['exec', '--secret', 'nul-bytes', '--', 'true'], { ...env, KEYWARDEN_CLIENT_ID: c.clientId, KEYWARDEN_CLIENT_SECRET: c.clientSecret });
    expect(r.code).toBe(70);
    expect(r.stderr).toMatch(/secret nul-bytes contains a NUL byte/);
    expect(r.stderr).not.toContain(c.clientSecret);
  });

  describe('exit codes', () => {
    it('64 without KEYWARDEN_ADDR, without credentials, without secrets, or with bad flags', async () => {
      const { KEYWARDEN_ADDR: _a, ...noAddr } = env;
      const [r1, r2, ...rest] = await Promise.all([
        runCli(['exec', '--all', '--', 'true'], noAddr),
        runCli(['exec', '--all', '--', 'true'], baseEnv({ KEYWARDEN_ADDR: b.url })),
        runCli(['exec', '--', 'true'], env),
        runCli(['exec', '--bogus', '--', 'true'], env),
        runCli(['exec', '--secret', '../x', '--', 'true'], env),
        runCli(['exec', '--secret', 'a=lower-case', '--', 'true'], env),
        runCli(['exec', '--all', '--timeout', 'soon', '--', 'true'], env),
      ]);
      expect(r1.code).toBe(64);
      expect(r1.stderr).toMatch(/KEYWARDEN_ADDR is not set/);
      expect(r2.code).toBe(64);
      expect(r2.stderr).toMatch(/no broker credentials/);
      for (const r of rest) expect(r.code, r.stderr).toBe(64);
    });

    it('77 at once for a wrong client secret, without echoing it', async () => {
      const wrong = 'kws_wrong-secret-value-123456';
      const started = Date.now();
      const r = await runCli(['exec', '--all', '--', 'true'], { ...env, KEYWARDEN_CLIENT_SECRET: wrong });
      expect(r.code).toBe(77);
      expect(r.stderr).toMatch(/authentication denied/);
      expect(r.stderr).not.toMatch(/retrying/);
      expect(r.stderr).not.toContain(wrong);
      expect(Date.now() - started).toBeLessThan(15_000);
      expectNoLeaks(r);
    });

    it('66 for a missing or not-granted secret, naming it and leaking nothing', async () => {
      const r = await runCli(['exec', '--secret', 'db-password', '--secret', 'other-secret', '--secret', 'no-such', '--', 'true'], env);
      expect(r.code).toBe(66);
      expect(r.stderr).toMatch(/not found or not granted.*other-secret, no-such/);
      expectNoLeaks(r);
      const all = await runCli(['exec', '--all', '--secret', 'no-such', '--', 'true'], env);
      expect(all.code).toBe(66);
    });

    it('69 when the broker stays unreachable until --timeout, saying it is retrying', async () => {
      const port = await closedPort();
      const started = Date.now();
      const r = await runCli(['exec', '--all', '--timeout', '2', '--', 'true'], { ...env, KEYWARDEN_ADDR: `http://127.0.0.1:${port}` });
      const elapsed = Date.now() - started;
      expect(r.code).toBe(69);
      expect(r.stderr).toMatch(new RegExp(`keywarden: broker unreachable at http://127\\.0\\.0\\.1:${port}, retrying in \\d+(\\.\\d+)?s`));
      expect(r.stderr.match(/retrying in/g)!.length).toBeGreaterThan(2);
      expect(elapsed).toBeGreaterThanOrEqual(1_900);
      expect(elapsed).toBeLessThan(20_000);
      expectNoLeaks(r);
    });
  });

  it('keeps retrying while the broker is down, then succeeds once it comes up', async () => {
    const port = await closedPort();
    const run = startCli(['exec', '--secret', 'db-password', '--timeout', '30', '--', ...printEnvCmd(['DB_PASSWORD'])], {
      ...env,
      KEYWARDEN_ADDR: `http://127.0.0.1:${port}`,
    });
    await waitFor(() => /retrying in/.test(run.stderr()), 20_000);
    const late = await listen(b.tb.broker.app, { listen: { host: '127.0.0.1', port } });
    try {
      const r = await run.done;
      expect(json(r).env.DB_PASSWORD).toBe(VALUES['db-password']);
      expect(r.stderr).toMatch(/broker unreachable at .* retrying in/);
    } finally {
      await late.close();
    }
  });

  it('documents the exit codes in --help', async () => {
    const r = await runCli(['exec', '--help'], env);
    expect(r.code).toBe(0);
    for (const code of ['64', '66', '69', '70', '77', '126', '127']) expect(r.stdout).toMatch(new RegExp(`^\\s+${code}\\s`, 'm'));
  });
});
