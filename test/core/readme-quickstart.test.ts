/**
 * The README's Quickstart, run as written: `keywarden serve` on an empty data directory prints an
 * admin key, and the Quickstart's shell block (curl and node only) is pasted into bash with that
 * key, as a newcomer would. Its documented output is the assertion.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { freePort } from '../support/registry.js';

vi.setConfig({ testTimeout: 120_000 });

const root = path.resolve(import.meta.dirname, '../..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');

/** The first ```sh block under a `## <title>` heading. */
function shellBlock(title: string): string {
  const section = readme.split(/^## /m).find((s) => s.startsWith(`${title}\n`));
  if (!section) throw new Error(`README has no "## ${title}" section`);
  const block = /```sh\n([\s\S]*?)```/.exec(section);
  if (!block) throw new Error(`README "## ${title}" has no sh block`);
  return block[1]!;
}

describe('README Quickstart', () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-quickstart-'));
  let broker: ChildProcess | undefined;
  afterAll(() => {
    if (broker && broker.exitCode === null && broker.signalCode === null) broker.kill('SIGKILL');
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('prints what the README says it prints, against a freshly started broker', async () => {
    const port = await freePort();
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('KEYWARDEN_')) env[k] = v;
    broker = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/main.ts'), 'serve'], {
      cwd: root,
      env: { ...env, KEYWARDEN_DATA_DIR: dataDir, KEYWARDEN_LISTEN: `127.0.0.1:${port}` },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    broker.stderr!.on('data', (d) => (stderr += d));
    const deadline = Date.now() + 60_000;
    let adminKey: string | undefined;
    while (Date.now() < deadline && broker.exitCode === null) {
      adminKey = /kw_[A-Za-z0-9_-]{40,}/.exec(stderr)?.[0];
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false);
      if (adminKey && ready) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(adminKey, stderr).toBeDefined();

    const script = shellBlock('Quickstart')
      .replace(/^export KW=.*$/m, `export KW=http://127.0.0.1:${port}`)
      .replace(/^export ADMIN_KEY=kw_paste-the-printed-admin-key-here$/m, `export ADMIN_KEY=${adminKey}`);
    expect(script).toContain(`export ADMIN_KEY=${adminKey}`);
    const run = spawnSync('bash', ['-e', '-o', 'pipefail', '-c', script], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, timeout: 60_000 });
    expect(run.status, run.stderr).toBe(0);
    // "The last two commands print `correct horse battery staple` and `404`."
    expect(run.stdout.trimEnd().split('\n').slice(-2)).toEqual(['correct horse battery staple', '404']);
    expect(readme).toContain('The last two commands print `correct horse battery staple` and `404`.');
  });
});
