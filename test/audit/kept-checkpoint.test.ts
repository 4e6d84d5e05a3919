import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Knex } from 'knex';
import client from 'prom-client';
import { AuditChainState, AuditChainWatch } from '../../src/audit/audit-watch.js';
import { CHECKPOINT_FILE_NAME, KeptCheckpoints, sinkCheckpointFile } from '../../src/audit/kept-checkpoint.js';
import { freshDatabase, silentLogger, startTestBroker, type TestBroker, type TestDatabase } from '../support/broker.js';
import { auth, expectProblemCode } from './audit-helpers.js';

/**
 * Issue 28, finding 9: someone with write access to the database cuts the audit log back to an
 * older signed head (events, nodes and heads together) while the broker is down. The database
 * alone is consistent again; the checkpoint the broker kept in its data directory (and beside the
 * audit file) is what a restart compares with. Every restart here is a new broker on the same
 * database (a SQLite file, or a PostgreSQL schema) and the same data directory.
 */

type Row = Record<string, unknown>;

describe('the verified checkpoint kept outside the database', () => {
  const cleanup: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  /** One deployment: its database, root key, data directory and audit file, kept across restarts. */
  function deployment() {
    const db: TestDatabase = freshDatabase();
    const rootKey = crypto.randomBytes(32).toString('base64');
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-kept-'));
    const auditFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'kw-kept-sink-')), 'audit.jsonl');
    cleanup.push(() => db.drop());
    cleanup.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
    cleanup.push(() => fs.rmSync(path.dirname(auditFile), { recursive: true, force: true }));
    const files = { dataDir: path.join(dataDir, CHECKPOINT_FILE_NAME), sink: sinkCheckpointFile(auditFile) };
    const start = async (env: Record<string, string> = {}): Promise<TestBroker> => {
      const tb = await startTestBroker({
        db,
        rootKey,
        keepDatabase: true,
        // the sequencer runs when the test flushes it; verification at startup only
        env: { KEYWARDEN_DATA_DIR: dataDir, KEYWARDEN_AUDIT_FILE: auditFile, KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0', KEYWARDEN_AUDIT_VERIFY_INTERVAL: '0', ...env },
      });
      // closed by the test (a restart) or afterwards, once
      const close = tb.close;
      let closed: Promise<void> | undefined;
      tb.close = () => (closed ??= close());
      cleanup.push(() => tb.close());
      return tb;
    };
    /** Opens the database without a broker, runs `edit`, closes it. */
    const offline = async <T>(edit: (knex: Knex) => Promise<T>): Promise<T> => {
      const handle = await db.open();
      try {
        return await edit(handle.knex);
      } finally {
        await handle.close();
      }
    };
    return { db, dataDir, auditFile, files, start, offline };
  }

  /** Writes `count` audited operations, each flushed into a signed head of its own. */
  async function grow(tb: TestBroker, prefix: string, count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      expect((await tb.request.post('/v1/groups').set(auth(tb.adminKey)).send({ name: `${prefix}-${i}` })).status).toBe(201);
      await tb.broker.services.auditSequencer.flush();
    }
  }

  const treeSize = async (tb: TestBroker) => (await tb.broker.services.auditTree.latestHead())!.treeSize;

  /** What someone with database access does: cut events, nodes and heads back to the signed head of size k. */
  async function cutBack(knex: Knex, k: number): Promise<Row[]> {
    return knex.transaction(async (trx) => {
      const removed: Row[] = await trx('audit_events').where('leaf_index', '>=', k).orderBy('seq');
      await trx('audit_events').where('leaf_index', '>=', k).delete();
      await trx('audit_tree_heads').where('tree_size', '>', k).delete();
      // every node whose leaves reach past k
      const nodes: Row[] = await trx('audit_tree_nodes').select('level', 'idx');
      for (const { level, idx } of nodes) if ((Number(idx) + 1) * 2 ** Number(level) > k) await trx('audit_tree_nodes').where({ level, idx }).delete();
      return removed;
    });
  }

  /** A signed head below the newest: the cut goes back to it, so the database alone verifies. */
  async function olderHeadSize(knex: Knex, below: number): Promise<number> {
    const sizes = (await knex('audit_tree_heads').distinct('tree_size').orderBy('tree_size')).map((r: Row) => Number(r.tree_size));
    const k = sizes.filter((s) => s > 0 && s < below - 2).at(-1);
    expect(k).toBeGreaterThan(0);
    return k!;
  }

  const fileSize = (file: string) => Number(fs.readFileSync(file, 'utf8').split('\n')[1]);

  async function expectFailedClosed(tb: TestBroker, reason: RegExp): Promise<void> {
    const ready = await tb.request.get('/readyz');
    expect(ready.status).toBe(503);
    expect(ready.body.checks.auditChain).toBe('broken');
    expect(tb.broker.services.auditChain.failure?.reason).toMatch(reason);
    expectProblemCode(await tb.request.post('/v1/groups').set(auth(tb.adminKey)).send({ name: 'after-the-cut' }), 503, 'audit_chain_broken');
    expect(await tb.broker.services.db('groups').where({ name: 'after-the-cut' }).first()).toBeUndefined();
  }

  it('keeps the newest verified head in the data directory and beside the audit file (0600), and a plain restart stays ready', async () => {
    const d = deployment();
    const first = await d.start();
    await grow(first, 'g', 4);
    const n = await treeSize(first);
    for (const file of [d.files.dataDir, d.files.sink]) {
      expect(fs.statSync(file).mode & 0o777).toBe(0o600);
      expect(fileSize(file)).toBe(n);
      // the signed note the database holds for that size
      expect(fs.readFileSync(file, 'utf8')).toBe((await first.broker.services.auditTree.headAt(n))!.note);
    }
    await first.close();

    const second = await d.start();
    expect((await second.request.get('/readyz')).status).toBe(200);
    expect(second.broker.services.auditChain.status).toBe('ok');
    expect(second.broker.services.auditCheckpoints.newest()?.treeSize).toBeGreaterThanOrEqual(n);
    await grow(second, 'h', 2);
    expect(fileSize(d.files.dataDir)).toBe(await treeSize(second));
    expect(fileSize(d.files.sink)).toBe(await treeSize(second));
  });

  it('a log cut back to an older signed head while the broker was down: not ready, and audited writes are refused', async () => {
    const d = deployment();
    const first = await d.start();
    await grow(first, 'g', 5);
    const n = await treeSize(first);
    await first.close();

    const k = await d.offline((knex) => olderHeadSize(knex, n));
    await d.offline((knex) => cutBack(knex, k));

    const second = await d.start();
    // the database alone is consistent: only the kept checkpoint shows the cut
    expect((await second.broker.services.auditVerifier.verify()).ok).toBe(true);
    await expectFailedClosed(second, new RegExp(`newest signed head has ${k} leaves, but the checkpoint kept in .* has ${n}: the log was cut back`));
    // nothing was signed over the cut, and the kept checkpoint was not moved back
    expect(await treeSize(second)).toBe(k);
    expect(fileSize(d.files.dataDir)).toBe(n);
    // the verification pass sees it on its own too (on PostgreSQL the startup sequencing may find
    // the lock held by another instance): a watch of its own, as a starting instance runs it
    const s = second.broker.services;
    const checkpoints = new KeptCheckpoints({ files: [d.files.dataDir], open: s.auditLogSigner.open, logger: silentLogger, persist: false });
    expect(checkpoints.load()).toBeUndefined();
    const state = new AuditChainState();
    const watch = new AuditChainWatch({ state, verifier: s.auditVerifier, audit: s.audit, rowIntegrity: s.rowIntegrityScanner, registry: new client.Registry(), logger: silentLogger, clock: Date.now, intervalMs: 0, kept: { checkpoints, tree: s.auditTree } });
    await watch.check();
    expect(state.status).toBe('broken');
    expect(state.failure).toMatchObject({ firstBadLeaf: k });
    expect(state.failure!.reason).toMatch(/the log was cut back/);
    await second.close();

    // the copy beside the audit file alone catches it too (the data directory's copy is gone)
    fs.rmSync(d.files.dataDir);
    const third = await d.start();
    await expectFailedClosed(third, new RegExp(`checkpoint kept in ${d.files.sink.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} has ${n}`));
  });

  it('a cut re-extended past the checkpoint by a broker that kept none, with edited events: the root at the checkpoint size differs', async () => {
    const d = deployment();
    const first = await d.start();
    await grow(first, 'g', 5);
    const n = await treeSize(first);
    await first.close();

    const k = await d.offline((knex) => olderHeadSize(knex, n));
    const removed = await d.offline((knex) => cutBack(knex, k));
    // the removed events go back into the queue, edited, for a broker to sign
    await d.offline(async (knex) => {
      for (const row of removed) await knex('audit_events').insert({ ...row, leaf_index: null, actor_name: 'mallory' });
    });
    // an instance with another data directory and no audit file (a new container, another host)
    const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-kept-other-'));
    cleanup.push(() => fs.rmSync(elsewhere, { recursive: true, force: true }));
    const other = await d.start({ KEYWARDEN_DATA_DIR: elsewhere, KEYWARDEN_AUDIT_FILE: '' });
    expect(other.broker.services.auditChain.status).toBe('ok');
    await grow(other, 'regrow', 3);
    expect(await treeSize(other)).toBeGreaterThan(n);
    expect((await other.broker.services.auditVerifier.verify()).ok).toBe(true);
    await other.close();

    const back = await d.start();
    await expectFailedClosed(back, new RegExp(`first ${n} leaves do not hash to the root of the checkpoint kept in .*: the log was cut back and rewritten`));
    expect(fileSize(d.files.dataDir)).toBe(n);
  });

  it('a running broker refuses to sign over a log cut back under it', async () => {
    const d = deployment();
    const tb = await d.start();
    await grow(tb, 'g', 5);
    const n = await treeSize(tb);
    const k = await olderHeadSize(tb.handle.knex, n);
    await cutBack(tb.handle.knex, k);
    expect((await tb.request.post('/v1/groups').set(auth(tb.adminKey)).send({ name: 'queued-over-the-cut' })).status).toBe(201);
    await expect(tb.broker.services.auditSequencer.flush()).rejects.toThrow(/the log was cut back/);
    await expectFailedClosed(tb, /the log was cut back/);
    expect(await treeSize(tb)).toBe(k);
  });

  it('a checkpoint file not signed by the log key (edited, or another database) fails closed with a reason that says what to do', async () => {
    const d = deployment();
    const first = await d.start();
    await grow(first, 'g', 2);
    await first.close();
    const note = fs.readFileSync(d.files.dataDir, 'utf8');
    const lines = note.split('\n');
    lines[1] = String(Number(lines[1]) + 100);
    fs.writeFileSync(d.files.dataDir, lines.join('\n'));
    const second = await d.start();
    await expectFailedClosed(second, /checkpoint kept in .* is not a tree head signed by this log's key .*if the database was replaced on purpose, remove the file/);
  });
});
