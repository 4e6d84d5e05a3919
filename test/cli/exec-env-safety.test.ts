/**
 * `keywarden exec` must not let a secret's name take over the workload: a writer who grants a
 * secret named `node-options` must not get code run by every `exec --all` workload.
 * Real CLI child processes against a real broker on a loopback port.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { assignEnvNames, isProtectedEnvName, refuseOverrides } from '../../src/cli/client/env-names.js';
import { baseEnv, printEnvCmd, runCli, startCliBroker, type CliBroker, type CliResult } from './cli-support.js';

vi.setConfig({ testTimeout: 120_000, hookTimeout: 120_000 });

describe('keywarden exec: secret names cannot set loader, shell or runtime variables', () => {
  let b: CliBroker;
  let env: Record<string, string>;
  let tmp: string;
  let marker: string;
  let evilValue: string;
  const DB_PASSWORD = 'pg-pass-1b2c3d4e';

  const expectNoValue = (r: CliResult) => {
    expect(r.stderr).not.toContain(evilValue);
    expect(r.stdout).not.toContain(evilValue);
    expect(r.stderr).not.toContain(DB_PASSWORD);
  };

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-exec-env-'));
    marker = path.join(tmp, 'pwned');
    const evil = path.join(tmp, 'evil.js');
    fs.writeFileSync(evil, `require('node:fs').writeFileSync(${JSON.stringify(marker)}, 'ran');\n`);
    evilValue = `--require ${evil}`;

    b = await startCliBroker();
    expect((await b.api('POST', '/v1/groups', { name: 'app' })).status).toBe(201);
    for (const [name, value] of [
      ['node-options', evilValue],
      ['db-password', DB_PASSWORD],
    ]) {
      const res = await b.api('POST', '/v1/secrets', { name, value, groups: ['app'] });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    }
    const creds = await b.tb.client('web', ['app']);
    env = baseEnv({ KEYWARDEN_ADDR: b.url, KEYWARDEN_CLIENT_ID: creds.clientId, KEYWARDEN_CLIENT_SECRET: creds.clientSecret });
    // the runner's own settings must not decide the outcome
    delete env.NODE_OPTIONS;
    delete env.DB_PASSWORD;
  });

  afterAll(async () => {
    await b?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('--all refuses a secret named node-options before running the program (fail closed)', async () => {
    const r = await runCli(['exec', '--all', '--', ...printEnvCmd(['NODE_OPTIONS', 'DB_PASSWORD'])], env);
    expect(r.code, r.stderr).toBe(64);
    expect(r.stderr).toMatch(/secret node-options would set NODE_OPTIONS/);
    expect(r.stderr).toMatch(/--secret node-options=NODE_OPTIONS/);
    expect(r.stdout).toBe(''); // the program never ran
    expect(fs.existsSync(marker)).toBe(false);
    expectNoValue(r);
  });

  it('a bare --secret node-options is refused the same way: the variable has to be spelled out', async () => {
    const r = await runCli(['exec', '--secret', 'node-options', '--', ...printEnvCmd(['NODE_OPTIONS'])], env);
    expect(r.code, r.stderr).toBe(64);
    expect(r.stderr).toMatch(/secret node-options would set NODE_OPTIONS/);
    expect(fs.existsSync(marker)).toBe(false);
    expectNoValue(r);
  });

  it('an explicit --secret node-options=NODE_OPTIONS is allowed, alone or with --all', async () => {
    try {
      const r = await runCli(['exec', '--secret', 'node-options=NODE_OPTIONS', '--', ...printEnvCmd(['NODE_OPTIONS'])], env);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).env).toEqual({ NODE_OPTIONS: evilValue });
      expect(fs.readFileSync(marker, 'utf8')).toBe('ran'); // the operator asked for it
      fs.rmSync(marker);

      const all = await runCli(['exec', '--all', '--secret', 'node-options=NODE_OPTIONS', '--', ...printEnvCmd(['NODE_OPTIONS', 'DB_PASSWORD'])], env);
      expect(all.code, all.stderr).toBe(0);
      expect(JSON.parse(all.stdout).env).toEqual({ NODE_OPTIONS: evilValue, DB_PASSWORD });
    } finally {
      fs.rmSync(marker, { force: true });
    }
  });

  it('does not replace a variable already in the environment without --override', async () => {
    const withVar = { ...env, DB_PASSWORD: 'from-the-environment' };
    for (const args of [
      ['--secret', 'db-password'],
      ['--secret', 'db-password=DB_PASSWORD'],
      ['--all', '--secret', 'node-options=NODE_OPTIONS'],
    ]) {
      const r = await runCli(['exec', ...args, '--', ...printEnvCmd(['DB_PASSWORD'])], withVar);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(64);
      expect(r.stderr).toMatch(/secret db-password would replace DB_PASSWORD, which is already set in the environment; pass --override/);
      expect(r.stdout).toBe('');
      expectNoValue(r);
    }
    expect(fs.existsSync(marker)).toBe(false);

    const ok = await runCli(['exec', '--override', '--secret', 'db-password', '--', ...printEnvCmd(['DB_PASSWORD'])], withVar);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout).env).toEqual({ DB_PASSWORD });
    expect(ok.stderr).toMatch(/DB_PASSWORD \(secret db-password\) overrides a variable already in the environment/);
  });

  it('--override does not open protected names to derived names', async () => {
    const r = await runCli(['exec', '--all', '--override', '--', ...printEnvCmd(['NODE_OPTIONS'])], env);
    expect(r.code, r.stderr).toBe(64);
    expect(r.stderr).toMatch(/secret node-options would set NODE_OPTIONS/);
    expect(fs.existsSync(marker)).toBe(false);
  });
});

describe('protected environment variable names', () => {
  const protectedNames = [
    'LD_PRELOAD', 'LD_LIBRARY_PATH', 'LD_AUDIT', 'DYLD_INSERT_LIBRARIES', 'NODE_OPTIONS', 'NODE_PATH', 'NODE_EXTRA_CA_CERTS',
    'NODE_TLS_REJECT_UNAUTHORIZED', 'PATH', 'BASH_ENV', 'BASH_FUNC_X', 'ENV', 'IFS', 'PS4', 'SHELLOPTS', 'BASHOPTS', 'PROMPT_COMMAND',
    'PYTHONPATH', 'PYTHONSTARTUP', 'PYTHONWARNINGS', 'PERL5OPT', 'PERL5LIB', 'PERLLIB', 'RUBYOPT', 'RUBYLIB', 'JAVA_TOOL_OPTIONS',
    '_JAVA_OPTIONS', 'JDK_JAVA_OPTIONS', 'CLASSPATH', 'GCONV_PATH', 'GLIBC_TUNABLES', 'MALLOC_CHECK_', 'HOME', 'TMPDIR', 'GIT_SSH_COMMAND',
    'LUA_INIT', 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'OPENSSL_CONF', 'HOSTALIASES', 'LOCALDOMAIN', 'RES_OPTIONS', 'HTTP_PROXY', 'HTTPS_PROXY',
    'NO_PROXY', 'ALL_PROXY', 'DOTNET_STARTUP_HOOKS', 'CORECLR_PROFILER_PATH', 'KEYWARDEN_ADDR', 'XDG_CONFIG_HOME',
  ];
  const ordinary = ['DB_PASSWORD', 'DATABASE_URL', 'AWS_SECRET_ACCESS_KEY', 'API_KEY', '_1ST_TOKEN', 'PGPASSWORD', 'REDIS_URL', 'LDAP_PASSWORD'];

  it.each(protectedNames)('%s: refused when derived from a secret name, allowed when mapped explicitly', (variable) => {
    const secret = variable.toLowerCase().replace(/_/g, '-');
    expect(isProtectedEnvName(variable)).toBe(true);
    expect(() => assignEnvNames([secret], [])).toThrow(new RegExp(`secret ${secret} would set ${variable}`));
    expect(Object.fromEntries(assignEnvNames([secret], [{ name: secret, env: variable }]))).toEqual({ [secret]: variable });
  });

  it('compares case-insensitively (proxies are read in lower case, Windows ignores case)', () => {
    for (const v of ['http_proxy', 'https_proxy', 'no_proxy', 'Path', 'ld_preload', 'node_options']) expect(isProtectedEnvName(v), v).toBe(true);
  });

  it.each(ordinary)('%s: an ordinary credential variable is still derived', (variable) => {
    expect(isProtectedEnvName(variable)).toBe(false);
    const secret = variable.toLowerCase().replace(/_/g, '-');
    expect(Object.fromEntries(assignEnvNames([secret], []))).toEqual({ [secret]: variable });
  });

  it('refuseOverrides names the secret and the variable, and --override lets it through', () => {
    const base = new Map([['DB_PASSWORD', 'x']]);
    const names = new Map([['db-password', 'DB_PASSWORD']]);
    expect(() => refuseOverrides(base, names, false)).toThrow(/secret db-password would replace DB_PASSWORD/);
    expect(() => refuseOverrides(base, names, true)).not.toThrow();
    expect(() => refuseOverrides(new Map(), names, false)).not.toThrow();
  });
});
