/** `keywarden fetch` as a real child process against a real broker on a loopback port. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { MANIFEST_NAME } from '../../src/cli/client/secret-files.js';
import { baseEnv, closedPort, runCli, startCli, startCliBroker, waitFor, type CliBroker, type CliResult } from './cli-support.js';

// Each case spawns real CLI processes (node + tsx), which take seconds each on a loaded machine.
vi.setConfig({ testTimeout: 120_000, hookTimeout: 120_000 });

const mode = (file: string) => fs.statSync(file).mode & 0o7777;
const read = (file: string) => fs.readFileSync(file, 'utf8');
const tempFiles = (dir: string) => fs.readdirSync(dir).filter((f) => f.startsWith('.keywarden-tmp-'));

describe('keywarden fetch', () => {
  let b: CliBroker;
  let env: Record<string, string>;
  let clientSecret: string;
  let root: string;
  let dir: string;
  let n = 0;
  const values: string[] = [];

  async function secret(name: string, value: string, groups: string[], metadata?: Record<string, string>) {
    values.push(value);
    const res = await b.api('POST', '/v1/secrets', { name, value, groups, ...(metadata ? { metadata } : {}) });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
  }
  async function newVersion(name: string, value: string) {
    values.push(value);
    const res = await b.api('POST', `/v1/secrets/${name}/versions`, { value });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
  }
  const fetchOk = async (args: string[], e = env) => {
    const r = await runCli(['fetch', '--dir', dir, ...args], e);
    expect(r.code, r.stderr).toBe(0);
    return r;
  };
  const expectNoLeaks = (r: CliResult) => {
    for (const v of [...values, clientSecret]) {
      expect(r.stderr).not.toContain(v);
      expect(r.stdout).not.toContain(v);
    }
  };

  beforeAll(async () => {
    b = await startCliBroker();
    for (const g of ['app', 'extra']) expect((await b.api('POST', '/v1/groups', { name: g })).status).toBe(201);
    await secret('db-password', 'pg-pass-0c1d2e3f', ['app']);
    await secret('tls.key', 'tls-key-material-aa11', ['app'], { mode: '0440' });
    await secret('extra-token', 'extra-token-bb22cc33', ['extra']);
    const c = await b.tb.client('fetcher', ['app', 'extra']);
    clientSecret = c.clientSecret;
    env = baseEnv({ KEYWARDEN_ADDR: b.url, KEYWARDEN_CLIENT_ID: c.clientId, KEYWARDEN_CLIENT_SECRET: c.clientSecret });
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-fetch-'));
  });

  afterAll(async () => {
    await b?.close();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  beforeEach(() => {
    dir = path.join(root, `d${++n}`);
  });

  it('writes each secret with its content and mode (0400 default, metadata mode honoured), plus a 0600 manifest', async () => {
    await fetchOk(['--secret', 'db-password', '--secret', 'tls.key']);
    expect(read(path.join(dir, 'db-password'))).toBe('pg-pass-0c1d2e3f');
    expect(mode(path.join(dir, 'db-password'))).toBe(0o400);
    expect(read(path.join(dir, 'tls.key'))).toBe('tls-key-material-aa11');
    expect(mode(path.join(dir, 'tls.key'))).toBe(0o440);
    expect(mode(path.join(dir, MANIFEST_NAME))).toBe(0o600);
    expect(Object.keys(JSON.parse(read(path.join(dir, MANIFEST_NAME))).files).sort()).toEqual(['db-password', 'tls.key']);
    expect(fs.readdirSync(dir).sort()).toEqual([MANIFEST_NAME, 'db-password', 'tls.key']);
  });

  it('replaces changed files atomically (new inode, no temp files) and leaves unchanged ones alone', async () => {
    await secret('rotating', 'rotating-v1-1234abcd', ['app']);
    await fetchOk(['--secret', 'rotating', '--secret', 'db-password']);
    const before = { rotating: fs.statSync(path.join(dir, 'rotating')).ino, db: fs.statSync(path.join(dir, 'db-password')).ino };
    await newVersion('rotating', 'rotating-v2-5678efgh');
    await fetchOk(['--secret', 'rotating', '--secret', 'db-password']);
    expect(read(path.join(dir, 'rotating'))).toBe('rotating-v2-5678efgh');
    expect(fs.statSync(path.join(dir, 'rotating')).ino).not.toBe(before.rotating);
    expect(fs.statSync(path.join(dir, 'db-password')).ino).toBe(before.db);
    expect(tempFiles(dir)).toEqual([]);
  });

  it('removes files it wrote for secrets no longer granted or requested, and never touches other files', async () => {
    await secret('short-lived', 'short-lived-77889900', ['extra']);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'operator-notes.txt'), 'hands off');
    await fetchOk(['--all']);
    expect(fs.readdirSync(dir)).toEqual(expect.arrayContaining([MANIFEST_NAME, 'db-password', 'extra-token', 'operator-notes.txt', 'short-lived', 'tls.key']));
    // revoke the grant: take the secret out of the client's group
    expect((await b.api('PUT', '/v1/groups/extra/secrets', { remove: ['short-lived'] })).status).toBe(200);
    await fetchOk(['--all']);
    expect(fs.existsSync(path.join(dir, 'short-lived'))).toBe(false);
    expect(read(path.join(dir, 'operator-notes.txt'))).toBe('hands off');
    // no longer requested
    await fetchOk(['--secret', 'db-password']);
    expect(fs.readdirSync(dir).sort()).toEqual([MANIFEST_NAME, 'db-password', 'operator-notes.txt']);
  });

  it('applies owner/group from metadata when root, and otherwise warns without failing', async () => {
    await secret('owned', 'owned-value-31415926', ['app'], { owner: 'nobody', group: '65534', mode: '0400' });
    const r = await fetchOk(['--secret', 'owned']);
    const st = fs.statSync(path.join(dir, 'owned'));
    if (process.getuid!() === 0) {
      const nobody = /^nobody:[^:]*:(\d+):/m.exec(fs.readFileSync('/etc/passwd', 'utf8'));
      if (nobody) expect(st.uid).toBe(Number(nobody[1]));
      expect(st.gid).toBe(65534);
    } else {
      expect(r.stderr).toMatch(/owned: cannot set owner\/group/);
    }
    expect(read(path.join(dir, 'owned'))).toBe('owned-value-31415926');
  });

  it('--watch re-fetches a secret when a new version is added, and stops on SIGTERM', async () => {
    await secret('watched', 'watched-v1-aaaa0001', ['app']);
    const run = startCli(['fetch', '--dir', dir, '--secret', 'watched', '--secret', 'db-password', '--watch', '1'], env);
    const file = path.join(dir, 'watched');
    // the first round writes each file as its secret arrives: wait for both before comparing inodes
    await waitFor(() => fs.existsSync(file) && read(file) === 'watched-v1-aaaa0001' && fs.existsSync(path.join(dir, 'db-password')), 20_000);
    const dbIno = fs.statSync(path.join(dir, 'db-password')).ino;
    await newVersion('watched', 'watched-v2-bbbb0002');
    await waitFor(() => read(file) === 'watched-v2-bbbb0002', 15_000);
    expect(mode(file)).toBe(0o400);
    expect(fs.statSync(path.join(dir, 'db-password')).ino).toBe(dbIno);
    run.kill('SIGTERM');
    const r = await run.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/updated watched \(version 2\)/);
    expect(tempFiles(dir)).toEqual([]);
    expectNoLeaks(r);
  });

  it('--watch keeps working past the access token lifetime (re-authenticates)', async () => {
    const short = await startCliBroker({ env: { KEYWARDEN_ACCESS_TOKEN_TTL: '3' } });
    try {
      expect((await short.api('POST', '/v1/groups', { name: 'g' })).status).toBe(201);
      expect((await short.api('POST', '/v1/secrets', { name: 'k', value: 'short-ttl-v1', groups: ['g'] })).status).toBe(201);
      const c = await short.tb.client('short', ['g']);
      const run = startCli(['fetch', '--dir', dir, '--all', '--watch', '1'], baseEnv({ KEYWARDEN_ADDR: short.url, KEYWARDEN_CLIENT_ID: c.clientId, KEYWARDEN_CLIENT_SECRET: c.clientSecret }));
      const file = path.join(dir, 'k');
      await waitFor(() => fs.existsSync(file), 20_000);
      await new Promise((r) => setTimeout(r, 4_500)); // the first token has expired by now
      expect((await short.api('POST', '/v1/secrets/k/versions', { value: 'short-ttl-v2' })).status).toBe(201);
      await waitFor(() => read(file) === 'short-ttl-v2', 15_000);
      run.kill('SIGINT');
      const r = await run.done;
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).not.toMatch(/denied|sync failed/);
    } finally {
      await short.close();
    }
  });

  describe('exit codes', () => {
    it('64 for usage errors: no --dir, nothing selected, unsafe names, no KEYWARDEN_ADDR', async () => {
      const { KEYWARDEN_ADDR: _a, ...noAddr } = env;
      const results = await Promise.all([
        runCli(['fetch', '--all'], env),
        runCli(['fetch', '--dir', dir], env),
        runCli(['fetch', '--dir', dir, '--secret', '.hidden'], env),
        runCli(['fetch', '--dir', dir, '--secret', '../x'], env),
        runCli(['fetch', '--dir', dir, '--all', '--watch', '0'], env),
        runCli(['fetch', '--dir', dir, '--all'], noAddr),
      ]);
      for (const r of results) expect(r.code, r.stderr).toBe(64);
      expect(fs.existsSync(dir)).toBe(false);
    });

    it('66 for a missing secret, writing nothing', async () => {
      const r = await runCli(['fetch', '--dir', dir, '--secret', 'db-password', '--secret', 'nope'], env);
      expect(r.code).toBe(66);
      expect(r.stderr).toMatch(/nope/);
      expect(fs.existsSync(path.join(dir, 'db-password'))).toBe(false);
      expectNoLeaks(r);
    });

    it('77 for a wrong client secret', async () => {
      const r = await runCli(['fetch', '--dir', dir, '--all'], { ...env, KEYWARDEN_CLIENT_SECRET: 'kws_definitely-wrong-000' });
      expect(r.code).toBe(77);
      expect(r.stderr).not.toContain('kws_definitely-wrong-000');
      expectNoLeaks(r);
    });

    it('69 when the broker is unreachable until --timeout', async () => {
      const port = await closedPort();
      const r = await runCli(['fetch', '--dir', dir, '--all', '--timeout', '2'], { ...env, KEYWARDEN_ADDR: `http://127.0.0.1:${port}` });
      expect(r.code).toBe(69);
      expect(r.stderr).toMatch(/broker unreachable at http:\/\/127\.0\.0\.1:\d+, retrying in/);
      expectNoLeaks(r);
    });
  });
});
