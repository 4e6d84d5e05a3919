/**
 * Issue 12: no lost audit event under kill -9 while the sequencer runs.
 *
 * A real `keywarden serve` process on the suite's database (a SQLite file, or a private schema
 * on PostgreSQL with KEYWARDEN_TEST_DATABASE_URL) sequences every 20 ms while concurrent
 * audited writes (group creations) pour in, and is killed with SIGKILL, three times. A killed
 * sequencing transaction must roll back whole (on PostgreSQL the advisory lock dies with the
 * connection), events queued at the kill must survive, and the next start must sequence each of
 * them exactly once. After the last restart: every acknowledged write has its event, the leaf
 * indexes are 0..N-1 with no gap or duplicate, the newest signed head covers them all, and
 * POST /v1/audit/verify is ok.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase, type DbHandle } from '../../src/db/connection.js';
import { TEST_DATABASE_URL, dialectUnderTest } from '../support/broker.js';
import { freePort } from '../support/registry.js';
import { dropSite } from '../support/site.js';

const root = path.resolve(import.meta.dirname, '../..');
const KILLS = 3;
const WORKERS = 12;
const ADMIN_KEY = `kw_${crypto.randomBytes(32).toString('base64url')}`;

interface Site {
  dataDir: string;
  databaseUrl: string;
  rootKey: string;
  schema?: string;
}

function newSite(): Site {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-seq-crash-'));
  const rootKey = crypto.randomBytes(32).toString('base64');
  if (!TEST_DATABASE_URL) return { dataDir, rootKey, databaseUrl: `sqlite:${path.join(dataDir, 'keywarden.db')}` };
  const schema = `kw_test_${crypto.randomBytes(6).toString('hex')}`;
  const url = new URL(TEST_DATABASE_URL);
  url.searchParams.set('schema', schema);
  return { dataDir, rootKey, databaseUrl: url.toString(), schema };
}

async function openSite(site: Site): Promise<DbHandle> {
  return site.schema ? openDatabase(TEST_DATABASE_URL!, { schema: site.schema }) : openDatabase(site.databaseUrl);
}

async function withDb<T>(site: Site, fn: (db: DbHandle['knex']) => Promise<T>): Promise<T> {
  const handle = await openSite(site);
  try {
    return await fn(handle.knex);
  } finally {
    await handle.close();
  }
}

interface Serve {
  child: ChildProcess;
  base: string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function startServe(site: Site): Promise<Serve> {
  const port = await freePort();
  const env: Record<string, string> = {};
  // the parent's KEYWARDEN_* settings must not leak into the process under test
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KEYWARDEN_') && v !== undefined) env[k] = v;
  Object.assign(env, {
    KEYWARDEN_DATA_DIR: site.dataDir,
    KEYWARDEN_DATABASE_URL: site.databaseUrl,
    KEYWARDEN_ROOT_KEY: site.rootKey,
    KEYWARDEN_BOOTSTRAP_ADMIN_KEY: ADMIN_KEY,
    KEYWARDEN_LISTEN: `127.0.0.1:${port}`,
    KEYWARDEN_ISSUER: 'http://127.0.0.1:8750',
    KEYWARDEN_LOG_LEVEL: 'warn',
    KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '20',
  });
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src/cli/main.ts'), 'serve'], { cwd: root, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const base = `http://127.0.0.1:${port}`;
  const until = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`serve exited with ${child.exitCode}: ${stderr}`);
    if (Date.now() > until) {
      child.kill('SIGKILL');
      throw new Error(`serve did not become ready: ${stderr}`);
    }
    const ok = await fetch(`${base}/readyz`).then((r) => r.ok, () => false);
    if (ok) return { child, base, stderr: () => stderr, exited };
    await new Promise((r) => setTimeout(r, 100));
  }
}

const adminHeaders = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' };

interface QueueState {
  events: number;
  queued: number;
  maxSeq: number;
  treeSize: number;
}

async function queueState(site: Site): Promise<QueueState> {
  return withDb(site, async (db) => {
    const ev = (await db('audit_events').count('* as n').max('seq as maxSeq').first()) as { n: number | string; maxSeq: number | string | null };
    const q = (await db('audit_events').whereNull('leaf_index').count('* as n').first()) as { n: number | string };
    const head = (await db('audit_tree_heads').max('tree_size as size').first()) as { size: number | string | null };
    return { events: Number(ev.n), queued: Number(q.n), maxSeq: Number(ev.maxSeq ?? 0), treeSize: Number(head.size ?? 0) };
  });
}

describe(`kill -9 during audit sequencing (${dialectUnderTest})`, () => {
  const site = newSite();
  let serve: Serve | undefined;

  afterAll(async () => {
    if (serve && serve.child.exitCode === null && serve.child.signalCode === null) {
      serve.child.kill('SIGKILL');
      await serve.exited;
    }
    await dropSite(site);
  });

  it(`${KILLS} SIGKILLs under load: every acknowledged event is sequenced exactly once, and the tree verifies`, async () => {
    const acknowledged: string[] = [];
    const atKill: QueueState[] = [];

    for (let round = 0; round < KILLS; round++) {
      serve = await startServe(site);
      const started = await queueState(site);
      // the start's own flush sequenced what the previous kill left queued
      expect(started.queued, `events still queued after restart ${round}`).toBe(0);
      const ackedThisRound: string[] = [];
      let dead = false;
      const worker = async (w: number) => {
        for (let i = 0; !dead; i++) {
          const name = `crash-r${round}-w${w}-${i}`;
          try {
            const res = await fetch(`${serve!.base}/v1/groups`, { method: 'POST', headers: adminHeaders, body: JSON.stringify({ name }) });
            if (res.status === 201) ackedThisRound.push(name);
            else if (!dead) throw new Error(`POST /v1/groups answered ${res.status}: ${await res.text()}`);
          } catch (err) {
            if (!dead) throw err;
          }
        }
      };
      const workers = Array.from({ length: WORKERS }, (_, w) => worker(w));
      // let the load and the sequencer (every 20 ms) run, then kill at a moment nobody chose
      const target = 150 + round * 50;
      while (ackedThisRound.length < target) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, crypto.randomInt(0, 60)));
      dead = true;
      serve.child.kill('SIGKILL');
      expect((await serve.exited).signal).toBe('SIGKILL');
      const results = await Promise.allSettled(workers);
      expect(results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
      acknowledged.push(...ackedThisRound);
      const state = await queueState(site);
      atKill.push(state);
      // the sequencer was running during the load: the tree grew in this round
      expect(state.treeSize, `round ${round}: no leaf was sequenced before the kill`).toBeGreaterThan(started.treeSize);
    }
    // the kills found work in the queue: these are the events that must survive
    expect(atKill.reduce((n, s) => n + s.queued, 0), `queue at each kill: ${JSON.stringify(atKill)}`).toBeGreaterThan(0);

    serve = await startServe(site);
    const last = atKill[atKill.length - 1];
    await withDb(site, async (db) => {
      const leftBehind = await db('audit_events').whereNull('leaf_index').andWhere('seq', '<=', last.maxSeq).count('* as n').first();
      expect(Number((leftBehind as { n: number | string }).n), 'events queued before the last kill still queued after the restart').toBe(0);
    });
    const cp = await fetch(`${serve.base}/v1/audit/checkpoints`, { method: 'POST', headers: adminHeaders, body: '{}' });
    expect(cp.status, await cp.clone().text()).toBe(201);
    const verify = await fetch(`${serve.base}/v1/audit/verify`, { method: 'POST', headers: adminHeaders, body: '{}' });
    const verified = (await verify.json()) as { ok: boolean; treeSize: number; leavesChecked: number; reason?: string };
    expect(verify.status).toBe(200);
    expect(verified, JSON.stringify(verified)).toMatchObject({ ok: true });
    expect(verified.leavesChecked).toBe(verified.treeSize);
    serve.child.kill('SIGTERM');
    expect((await serve.exited).code).toBe(0);

    await withDb(site, async (db) => {
      const events = (await db('audit_events').select('seq', 'leaf_index', 'action', 'resource_name').orderBy('seq')) as Array<{ seq: number | string; leaf_index: number | string | null; action: string; resource_name: string | null }>;
      // only the events recorded by the last two requests (checkpoint, verify) may wait for a sequencer
      const queued = events.filter((e) => e.leaf_index === null);
      expect(queued.every((e) => e.action === 'audit.verify' || e.action === 'audit.checkpoint'), JSON.stringify(queued)).toBe(true);

      const indexes = events.filter((e) => e.leaf_index !== null).map((e) => Number(e.leaf_index)).sort((a, b) => a - b);
      expect(indexes.length).toBeGreaterThan(acknowledged.length);
      const gapsOrDuplicates = indexes.filter((v, i) => v !== i);
      expect(gapsOrDuplicates.slice(0, 10), 'leaf indexes are 0..N-1, each once').toEqual([]);

      const newest = (await db('audit_tree_heads').orderBy([{ column: 'tree_size', order: 'desc' }, { column: 'id', order: 'desc' }]).first()) as { tree_size: number | string };
      expect(Number(newest.tree_size), 'the newest signed head covers every sequenced event').toBe(indexes.length);
      const leaves = (await db('audit_tree_nodes').where('level', 0).count('* as n').first()) as { n: number | string };
      expect(Number(leaves.n)).toBe(indexes.length);

      // every acknowledged write has exactly one event, sequenced; no group exists without its event
      const createEvents = new Map<string, number>();
      for (const e of events) {
        if (e.action !== 'group.create' || !e.resource_name) continue;
        expect(e.leaf_index, `group.create ${e.resource_name} not sequenced`).not.toBeNull();
        createEvents.set(e.resource_name, (createEvents.get(e.resource_name) ?? 0) + 1);
      }
      expect(acknowledged.filter((n) => createEvents.get(n) !== 1), 'acknowledged writes without exactly one event').toEqual([]);
      const groups = ((await db('groups').where('name', 'like', 'crash-%').select('name')) as Array<{ name: string }>).map((g) => g.name);
      expect(groups.filter((n) => !createEvents.has(n)), 'groups created without their event').toEqual([]);
      expect([...createEvents.keys()].filter((n) => n.startsWith('crash-') && !groups.includes(n)), 'events of groups that were rolled back').toEqual([]);
    });
  }, 300_000);
});
