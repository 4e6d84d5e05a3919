import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { assertFetchMatchesContract } from '../support/contract.js';
import { freePort } from '../support/registry.js';

/**
 * The two-command promise, as a real process: `serve` on an empty data dir creates the SQLite
 * database and a 0600 root key, prints an admin key once, serves it, and stops cleanly on
 * SIGTERM; a second start on the same dir prints no key and still accepts the first one.
 */
const root = path.resolve(import.meta.dirname, '../..');


function startServe(dataDir: string, port: number): { child: ChildProcess; stderr: () => string; exited: Promise<number | null> } {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/main.ts'), 'serve'], {
    cwd: root,
    env: { ...process.env, KEYWARDEN_DATA_DIR: dataDir, KEYWARDEN_LISTEN: `127.0.0.1:${port}`, KEYWARDEN_LOG_LEVEL: 'info', KEYWARDEN_DATABASE_URL: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  child.stdout!.resume();
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, stderr: () => err, exited };
}

async function waitHealthy(port: number, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const url = `http://127.0.0.1:${port}/readyz`;
    let res: Response | undefined;
    try {
      res = await fetch(url);
    } catch {
      // not listening yet
    }
    if (res) {
      // outside the try: a response that breaks the contract must fail the test, not look like "not listening"
      await assertFetchMatchesContract('GET', url, res);
      if (res.ok) return;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('broker did not become ready');
}

describe('keywarden serve as a process', () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-serve-'));
  afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

  // a failing assertion must not leave a broker running behind the test
  const children: ChildProcess[] = [];
  afterAll(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  it('first start creates the data dir, prints an admin key once, and stops on SIGTERM', async () => {
    const port = await freePort();
    const first = startServe(dataDir, port);
    children.push(first.child);
    await waitHealthy(port);
    const key = /kw_[A-Za-z0-9_-]{40,}/.exec(first.stderr())?.[0];
    expect(key, first.stderr()).toBeDefined();
    expect((fs.statSync(path.join(dataDir, 'root-key.json')).mode & 0o777).toString(8)).toBe('600');
    expect(fs.existsSync(path.join(dataDir, 'keywarden.db'))).toBe(true);
    const groups = await fetch(`http://127.0.0.1:${port}/v1/groups`, { headers: { authorization: `Bearer ${key}` } });
    await assertFetchMatchesContract('GET', groups.url, groups);
    expect(groups.status).toBe(200);
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    // the key is in the database only as a hash
    const dbBytes = fs.readFileSync(path.join(dataDir, 'keywarden.db'));
    expect(dbBytes.includes(Buffer.from(key!))).toBe(false);

    const port2 = await freePort();
    const second = startServe(dataDir, port2);
    children.push(second.child);
    await waitHealthy(port2);
    expect(second.stderr()).not.toMatch(/kw_[A-Za-z0-9_-]{40,}/);
    const again = await fetch(`http://127.0.0.1:${port2}/v1/groups`, { headers: { authorization: `Bearer ${key}` } });
    await assertFetchMatchesContract('GET', again.url, again);
    expect(again.status).toBe(200);
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  }, 150_000);

  it('refuses to start with invalid configuration, naming the variable (exit 78)', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/main.ts'), 'serve'], {
      cwd: root,
      env: { ...process.env, KEYWARDEN_DATA_DIR: dataDir, KEYWARDEN_LISTEN: 'not-a-listen-address' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(78);
    expect(err).toContain('KEYWARDEN_LISTEN');
  }, 60_000);
});
