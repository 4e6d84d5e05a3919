import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SHUTDOWN_DEADLINE_MS } from '../../src/cli/serve.js';
import { baseEnv, REPO_ROOT } from '../cli/cli-support.js';
import { freePort } from '../support/registry.js';
import { pgClusterAvailable, startPgCluster, type PgCluster } from './support/pg-cluster.js';

/**
 * SIGTERM while the database is frozen (SIGSTOP: its sockets stay open, nothing answers): closing
 * the pool and flushing the audit queue cannot reach it. The broker must still exit within its
 * shutdown deadline, not hang until a supervisor's SIGKILL. (The database timeouts bound each
 * step, so it ends before the deadline; the deadline is the net under whatever is not bounded.)
 */
const available = pgClusterAvailable().ok;

describe.skipIf(!available)('SIGTERM with a frozen database', () => {
  let cluster: PgCluster;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-shutdown-deadline-'));
  beforeAll(async () => {
    cluster = await startPgCluster();
  }, 120_000);
  afterAll(async () => {
    await cluster?.destroy();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('exits within the shutdown deadline, and says so if it had to give up', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, 'src/cli/main.ts'), 'serve'], {
      cwd: REPO_ROOT,
      env: baseEnv({ KEYWARDEN_DATA_DIR: dataDir, KEYWARDEN_DATABASE_URL: cluster.url(), KEYWARDEN_LISTEN: `127.0.0.1:${port}`, KEYWARDEN_LOG_LEVEL: 'info' }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.resume();
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, at: Date.now() })));
    try {
      const until = Date.now() + 120_000;
      for (;;) {
        if (child.exitCode !== null) throw new Error(`the broker exited while starting: ${stdout.slice(-2000)}`);
        const res = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
        if (res?.ok) break;
        if (Date.now() > until) throw new Error('broker did not become ready');
        await new Promise((r) => setTimeout(r, 200));
      }
      await cluster.freeze();
      const sent = Date.now();
      child.kill('SIGTERM');
      const outcome = await Promise.race([exited, new Promise<'still running'>((r) => setTimeout(() => r('still running'), SHUTDOWN_DEADLINE_MS + 10_000).unref())]);
      expect(outcome, 'the broker outlived its shutdown deadline').not.toBe('still running');
      const { code, signal, at } = outcome as { code: number | null; signal: NodeJS.Signals | null; at: number };
      expect(signal).toBeNull();
      expect(at - sent).toBeLessThan(SHUTDOWN_DEADLINE_MS + 2_000);
      // a clean stop, or the deadline's exit 1 with its log line: never anything else
      if (code === 0) expect(stdout).toContain('"msg":"stopped"');
      else {
        expect(code).toBe(1);
        expect(stdout).toContain('shutdown did not finish in time');
      }
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await cluster.thaw();
    }
  }, 240_000);
});
