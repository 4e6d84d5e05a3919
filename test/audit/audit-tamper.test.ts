import crypto from 'node:crypto';
import client from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowToEvent, type AuditEventRow } from '../../src/audit/audit-dal.js';
import { eventLeafHash } from '../../src/audit/audit-leaf.js';
import { timestampLine } from '../../src/audit/audit-log-key.js';
import { AuditSequencer } from '../../src/audit/audit-sequencer.js';
import { AuditChainState, AuditChainWatch } from '../../src/audit/audit-watch.js';
import type { KeptCheckpoints } from '../../src/audit/kept-checkpoint.js';
import { perfectSubtrees, TreeFrontier } from '../../src/audit/merkle.js';
import { ed25519KeyFromSeed, formatCheckpoint, noteKeyId, signNote } from '../../src/audit/signed-note.js';
import { silentLogger, startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblemCode } from './audit-helpers.js';

/**
 * Direct edits of the Merkle tree's tables (what someone with database access but without the
 * log's signing key could do) are found by POST /v1/audit/verify and by the background watch:
 * a fresh watch (what an instance does at startup: a full pass) for edits anywhere, and a watch
 * that verified the longer tree before for a consistent truncation. Each case restores the three
 * tables afterwards, so the log is intact again between cases.
 */

type Row = Record<string, unknown>;
interface Snapshot {
  events: Row[];
  nodes: Row[];
  heads: Row[];
}
const ORIGIN = '127.0.0.1:8750/audit-log';

describe('audit tree tamper detection', () => {
  let tb: TestBroker;
  let AU: Record<string, string>;
  let W: Record<string, string>;
  const knex = () => tb.handle.knex;
  const services = () => tb.broker.services;
  const flush = () => services().auditSequencer.flush();

  async function snapshot(): Promise<Snapshot> {
    return {
      events: await knex()('audit_events').whereNotNull('leaf_index').orderBy('seq'),
      nodes: await knex()('audit_tree_nodes').orderBy(['level', 'idx']),
      heads: await knex()('audit_tree_heads').orderBy('id'),
    };
  }
  /** Puts the three tables back as they were; events queued since (audit.verify) stay. */
  async function restore(snap: Snapshot): Promise<void> {
    await knex().transaction(async (trx) => {
      await trx('audit_events').whereNotNull('leaf_index').delete();
      const seqs = snap.events.map((e) => e.seq as number);
      for (let i = 0; i < seqs.length; i += 200) await trx('audit_events').whereIn('seq', seqs.slice(i, i + 200)).delete();
      await trx('audit_tree_nodes').delete();
      await trx('audit_tree_heads').delete();
      for (let i = 0; i < snap.events.length; i += 20) await trx('audit_events').insert(snap.events.slice(i, i + 20));
      for (let i = 0; i < snap.nodes.length; i += 100) await trx('audit_tree_nodes').insert(snap.nodes.slice(i, i + 100));
      for (let i = 0; i < snap.heads.length; i += 20) await trx('audit_tree_heads').insert(snap.heads.slice(i, i + 20));
    });
  }
  const verify = async (body: Record<string, unknown> = {}) => {
    const res = await tb.request.post('/v1/audit/verify').set(AU).send(body);
    expect(res.status, res.text).toBe(200);
    return res.body;
  };
  /** A watch of its own (state, metrics), run once: what a starting instance does. */
  async function watch() {
    const state = new AuditChainState();
    const registry = new client.Registry();
    const s = services();
    const w = new AuditChainWatch({ state, verifier: s.auditVerifier, audit: s.audit, rowIntegrity: s.rowIntegrityScanner, registry, logger: silentLogger, clock: Date.now, intervalMs: 0 });
    await w.check();
    const chainOk = async () => (await registry.getSingleMetric('keywarden_audit_chain_ok')!.get()).values[0]?.value;
    return { w, state, chainOk };
  }
  /** The sequencer of another instance on this database, with the checkpoints it kept (none: a new instance). */
  const otherSequencer = (kept?: KeptCheckpoints) => {
    const s = services();
    return new AuditSequencer({ db: s.database, tree: s.auditTree, signer: async () => s.auditLogSigner, clock: Date.now, logger: silentLogger, registry: new client.Registry(), intervalMs: 0, resignAfterMs: 0, kept });
  };
  const treeSize = async () => Number((await knex()('audit_tree_heads').max('tree_size as n').first())!.n);
  const eventAt = async (leaf: number): Promise<AuditEventRow> => {
    const r = await knex()('audit_events').where({ leaf_index: leaf }).first();
    expect(r, `event of leaf ${leaf}`).toBeTruthy();
    return r;
  };
  const expectIntact = async () => {
    const n = await treeSize();
    expect(await verify()).toMatchObject({ ok: true, treeSize: n, leavesChecked: n, leavesWithoutEvent: 0 });
    const { state, chainOk } = await watch();
    expect(state.status).toBe('ok');
    expect(await chainOk()).toBe(1);
  };
  /**
   * Applies `tamper`, expects verification and a fresh watch to fail with `reason` (and
   * `firstBadLeaf` when given), then restores the tables.
   */
  async function expectDetected(tamper: () => Promise<void>, reason: RegExp, firstBadLeaf?: number | 'none') {
    const snap = await snapshot();
    await tamper();
    try {
      const r = await verify();
      expect(r.ok, JSON.stringify(r)).toBe(false);
      expect(r.reason).toMatch(reason);
      if (firstBadLeaf === 'none') expect(r.firstBadLeaf).toBeUndefined();
      else if (firstBadLeaf !== undefined) expect(r.firstBadLeaf).toBe(firstBadLeaf);
      const { state, chainOk } = await watch();
      expect(state.status).toBe('broken');
      expect(state.failure?.reason).toMatch(reason);
      if (typeof firstBadLeaf === 'number') expect(state.failure?.firstBadLeaf).toBe(firstBadLeaf);
      expect(await chainOk()).toBe(0);
    } finally {
      await restore(snap);
    }
    await expectIntact();
  }
  /** Every stored node recomputed from the events (as they are now), and the root at each size. */
  async function recomputeTree(): Promise<{ nodes: Map<string, string>; roots: Map<number, string> }> {
    const rows: AuditEventRow[] = await knex()('audit_events').whereNotNull('leaf_index').orderBy('leaf_index');
    const frontier = TreeFrontier.empty();
    const nodes = new Map<string, string>();
    const roots = new Map<number, string>();
    for (const row of rows) {
      expect(Number(row.leaf_index)).toBe(frontier.size);
      frontier.appendLeafHash(Buffer.from(eventLeafHash(rowToEvent(row)), 'hex'), (n, h) => nodes.set(`${n.level}/${n.index}`, h.toString('hex')));
      roots.set(frontier.size, frontier.root().toString('hex'));
    }
    return { nodes, roots };
  }
  async function writeNodes(nodes: Map<string, string>): Promise<number> {
    let changed = 0;
    for (const [key, hash] of nodes) {
      const [level, idx] = key.split('/').map(Number);
      changed += await knex()('audit_tree_nodes').where({ level, idx }).whereNot({ hash }).update({ hash });
    }
    return changed;
  }
  /** A signed note made with a key the attacker owns, under the log's origin. */
  function forgedNote(size: number, rootHex: string): { note: string; keyId: string } {
    const { privateKey, publicRaw } = ed25519KeyFromSeed(crypto.randomBytes(32));
    const text = formatCheckpoint({ origin: ORIGIN, size, rootHash: Buffer.from(rootHex, 'hex'), extensions: [timestampLine(Date.now())] });
    return { note: signNote(text, ORIGIN, privateKey), keyId: noteKeyId(ORIGIN, publicRaw).toString('hex') };
  }

  beforeAll(async () => {
    // the sequencer runs only when told (flush), verification only when asked, and an unchanged
    // head is signed again after 1 s (so there are re-signed heads)
    tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0', KEYWARDEN_AUDIT_VERIFY_INTERVAL: '0', KEYWARDEN_AUDIT_CHECKPOINT_INTERVAL: '1' } });
    AU = auth(await tb.apiKey('auditor'));
    W = auth(await tb.apiKey('writer'));
    await flush();
    for (const g of ['g1', 'g2', 'g3']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    await flush();
    for (const s of ['s1', 's2', 's3', 's4']) {
      expect((await tb.request.post('/v1/secrets').set(W).send({ name: s, value: `value-of-${s}`, groups: ['g1'] })).status).toBe(201);
    }
    await flush();
    const c = await tb.client('c1', ['g1']);
    for (const s of ['s1', 's2', 's3', 's4']) expect((await tb.request.get(`/v1/client/secrets/${s}`).set(auth(c.token))).status).toBe(200);
    await flush();
    await new Promise((r) => setTimeout(r, 1100));
    expect((await flush()).status).toBe('resigned');
    expect(await treeSize()).toBeGreaterThanOrEqual(20);
    expect(Number((await knex()('audit_tree_heads').count('* as n').first())!.n)).toBeGreaterThanOrEqual(5);
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('an untouched tree verifies: every leaf, node and signed head', async () => {
    const n = await treeSize();
    const heads = Number((await knex()('audit_tree_heads').count('* as n').first())!.n);
    const r = await verify();
    expect(r).toMatchObject({ ok: true, treeSize: n, leavesChecked: n, leavesWithoutEvent: 0, headsChecked: heads });
    expect(r.firstBadLeaf).toBeUndefined();
    expect(r.reason).toBeUndefined();
    await expectIntact();
  });

  it.each([
    ['actor_name', 'mallory'],
    ['action', 'group.delete'],
    ['resource_name', 'someone-else'],
    ['outcome', 'deny'],
    ['details', JSON.stringify({ version: 99, groups: ['g1'] })],
    ['source_ip', '10.6.6.6'],
    ['request_id', 'forged-request'],
    ['ts', 1],
  ])('(1) editing %s of one event is detected at its leaf', async (column, value) => {
    const leaf = 5;
    const { seq } = await eventAt(leaf);
    await expectDetected(() => knex()('audit_events').where({ leaf_index: leaf }).update({ [column]: value }), new RegExp(`event ${seq} \\(leaf ${leaf}\\) does not match its leaf hash: it was edited`), leaf);
  });

  it('(2) editing a stored leaf hash (level 0) is detected at that leaf', async () => {
    await expectDetected(() => knex()('audit_tree_nodes').where({ level: 0, idx: 6 }).update({ hash: 'ab'.repeat(32) }), /\(leaf 6\) does not match its leaf hash/, 6);
  });

  it.each([
    [1, 2],
    [2, 1],
    [3, 0],
  ])('(2) editing a stored subtree (level %i, index %i) is detected at its first leaf', async (level, idx) => {
    expect(await treeSize()).toBeGreaterThanOrEqual(2 ** level * (idx + 1));
    await expectDetected(() => knex()('audit_tree_nodes').where({ level, idx }).update({ hash: 'cd'.repeat(32) }), new RegExp(`stored subtree ${level}/${idx} does not match its leaves`), idx * 2 ** level);
  });

  it('(3) deleting an event in the middle is detected at its leaf', async () => {
    await expectDetected(() => knex()('audit_events').where({ leaf_index: 7 }).delete(), /the event of leaf 7 was deleted/, 7);
  });

  it('(3) deleting the oldest events (what retention does) stays valid; a gap after them does not', async () => {
    const snap = await snapshot();
    const n = await treeSize();
    await knex()('audit_events').where('leaf_index', '<', 3).delete();
    try {
      expect(await verify()).toMatchObject({ ok: true, treeSize: n, leavesChecked: n - 3, leavesWithoutEvent: 3 });
      const { state } = await watch();
      expect(state.status).toBe('ok');
      // only the stored hashes vouch for the pruned leaves now, and they are still checked
      const original = (await knex()('audit_tree_nodes').where({ level: 0, idx: 1 }).first()).hash;
      await knex()('audit_tree_nodes').where({ level: 0, idx: 1 }).update({ hash: 'ef'.repeat(32) });
      // (the first signed head above it notices before the batch's inner nodes are compared)
      const firstHead = Number((await knex()('audit_tree_heads').where('tree_size', '>', 1).min('tree_size as n').first())!.n);
      const r = await verify();
      expect(r).toMatchObject({ ok: false, firstBadLeaf: firstHead - 1 });
      expect(r.reason).toMatch(new RegExp(`do not hash to the root signed in tree head \\d+ \\(size ${firstHead}\\)`));
      expect((await watch()).state.status).toBe('broken');
      await knex()('audit_tree_nodes').where({ level: 0, idx: 1 }).update({ hash: original });
      // an event missing above the lowest one still stored is not retention
      await knex()('audit_events').where({ leaf_index: 9 }).delete();
      const gap = await verify();
      expect(gap).toMatchObject({ ok: false, firstBadLeaf: 9 });
      expect(gap.reason).toMatch(/the event of leaf 9 was deleted/);
      expect((await watch()).state.status).toBe('broken');
    } finally {
      await restore(snap);
    }
    await expectIntact();
  });

  it('(4) deleting a leaf node, an inner node or the newest leaf node is detected', async () => {
    await expectDetected(() => knex()('audit_tree_nodes').where({ level: 0, idx: 8 }).delete(), /leaf 8 is missing from the tree/, 8);
    await expectDetected(() => knex()('audit_tree_nodes').where({ level: 1, idx: 2 }).delete(), /stored subtree 1\/2 is missing/, 4);
    const n = await treeSize();
    await expectDetected(() => knex()('audit_tree_nodes').where({ level: 0, idx: n - 1 }).delete(), new RegExp(`leaves ${n - 1} to ${n - 1} are missing`), n - 1);
  });

  it('(5) reordering: swapping the leaf indexes of two events is detected at the first', async () => {
    const swap = async (i: number, j: number) => {
      await knex()('audit_events').where({ leaf_index: i }).update({ leaf_index: -1 });
      await knex()('audit_events').where({ leaf_index: j }).update({ leaf_index: i });
      await knex()('audit_events').where({ leaf_index: -1 }).update({ leaf_index: j });
    };
    await expectDetected(() => swap(3, 9), /\(leaf 3\) does not match its leaf hash/, 3);
    // swapping the leaf hashes too keeps every leaf consistent; the tree above them is not
    const swapNodes = async (i: number, j: number) => {
      const a = (await knex()('audit_tree_nodes').where({ level: 0, idx: i }).first()).hash;
      const b = (await knex()('audit_tree_nodes').where({ level: 0, idx: j }).first()).hash;
      await knex()('audit_tree_nodes').where({ level: 0, idx: i }).update({ hash: b });
      await knex()('audit_tree_nodes').where({ level: 0, idx: j }).update({ hash: a });
    };
    await expectDetected(async () => {
      await swap(10, 11);
      await swapNodes(10, 11);
    }, /do not hash to the root signed in tree head|stored subtree 1\/5 does not match its leaves/);
    const r = await (async () => {
      const snap = await snapshot();
      await swap(10, 11);
      await swapNodes(10, 11);
      try {
        return await verify();
      } finally {
        await restore(snap);
      }
    })();
    expect(r.firstBadLeaf).toBeGreaterThanOrEqual(10);
  });

  it('(6) truncation: cutting events, nodes and heads back together passes alone, but not against an earlier state or checkpoint', async () => {
    const n = await treeSize();
    const sizes = (await knex()('audit_tree_heads').distinct('tree_size').orderBy('tree_size')).map((r: Row) => Number(r.tree_size));
    const k = sizes.filter((s) => s > 0 && s < n - 2).at(-1)!;
    expect(k).toBeGreaterThan(0);
    const kept = await tb.request.get('/v1/audit/checkpoint').set(AU).set('Accept', 'text/plain');
    expect(kept.status).toBe(200);
    expect(kept.text).toContain(`\n${n}\n`);
    const before = await watch();
    expect(before.state.status).toBe('ok');
    const beforeRegrow = await watch();

    const snap = await snapshot();
    const cut = async () => {
      await knex().transaction(async (trx) => {
        await trx('audit_events').where('leaf_index', '>=', k).delete();
        await trx('audit_tree_heads').where('tree_size', '>', k).delete();
        // every node whose leaves reach past k
        const nodes: Row[] = await trx('audit_tree_nodes').select('level', 'idx');
        for (const { level, idx } of nodes) if ((Number(idx) + 1) * 2 ** Number(level) > k) await trx('audit_tree_nodes').where({ level, idx }).delete();
      });
    };
    await cut();
    try {
      // the database alone is consistent again
      expect(await verify()).toMatchObject({ ok: true, treeSize: k, leavesChecked: k });
      expect((await watch()).state.status).toBe('ok');

      // the instance that verified n leaves before
      await before.w.check();
      expect(before.state.status).toBe('broken');
      expect(before.state.failure).toMatchObject({ firstBadLeaf: k });
      expect(before.state.failure!.reason).toMatch(new RegExp(`newest signed head has ${k} leaves, but ${n} were verified before: the log was cut back`));
      expect(await before.chainOk()).toBe(0);

      // an auditor who kept the checkpoint of size n
      const r = await verify({ checkpoint: kept.text });
      expect(r).toMatchObject({ ok: false, firstBadLeaf: k });
      expect(r.reason).toMatch(new RegExp(`checkpoint given has ${n} leaves, but the newest signed head has ${k}: the log was cut back`));

      // the log then grows past n again on top of the cut: still not an extension of what was seen.
      // This broker kept the checkpoint of size n outside the database (kept-checkpoint.ts), so
      // its sequencer refuses to sign over the cut; an instance that kept none does sign
      for (const g of ['regrow-1', 'regrow-2', 'regrow-3', 'regrow-4', 'regrow-5']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
      expect(services().auditCheckpoints.newest()?.treeSize).toBeGreaterThanOrEqual(n);
      await expect(otherSequencer(services().auditCheckpoints).flush()).rejects.toThrow(/the log was cut back/);
      await otherSequencer().flush();
      expect(await treeSize()).toBeGreaterThan(n);
      expect(await verify()).toMatchObject({ ok: true });
      await beforeRegrow.w.check();
      expect(beforeRegrow.state.status).toBe('broken');
      expect(beforeRegrow.state.failure!.reason).toMatch(/do not hash to the root signed in tree head/);
      const regrown = await verify({ checkpoint: kept.text });
      expect(regrown).toMatchObject({ ok: false, firstBadLeaf: n - 1 });
      expect(regrown.reason).toMatch(new RegExp(`first ${n} leaves do not hash to the root of the checkpoint given: the log was rewritten`));
    } finally {
      await restore(snap);
      await knex()('groups').where('name', 'like', 'regrow-%').delete();
    }
    await expectIntact();
    const ok = await verify({ checkpoint: kept.text });
    expect(ok).toMatchObject({ ok: true, consistentWith: { treeSize: n } });
  });

  it('(7) rehashing: an edited event with every node recomputed fails at the first signed head after it', async () => {
    const leaf = 5;
    const heads: Row[] = await knex()('audit_tree_heads').orderBy([{ column: 'tree_size' }, { column: 'id' }]);
    const firstHead = heads.find((h) => Number(h.tree_size) > leaf)!;
    const rehash = async () => {
      await knex()('audit_events').where({ leaf_index: leaf }).update({ actor_name: 'mallory' });
      const { nodes } = await recomputeTree();
      expect(await writeNodes(nodes)).toBeGreaterThanOrEqual(2);
    };
    // the heads as they were: their signed roots no longer match
    await expectDetected(rehash, new RegExp(`do not hash to the root signed in tree head ${firstHead.id} \\(size ${firstHead.tree_size}\\)`), Number(firstHead.tree_size) - 1);
    // the root columns rewritten too: they no longer match the signed notes
    await expectDetected(async () => {
      await rehash();
      const { roots } = await recomputeTree();
      for (const h of heads) await knex()('audit_tree_heads').where({ id: h.id }).update({ root_hash: roots.get(Number(h.tree_size)) ?? h.root_hash });
    }, /its columns differ from what its signed checkpoint says/);
    // and notes signed with another key under the log's origin are not the log's signature
    await expectDetected(async () => {
      await rehash();
      const { roots } = await recomputeTree();
      for (const h of heads) {
        const root = roots.get(Number(h.tree_size)) ?? String(h.root_hash);
        const forged = forgedNote(Number(h.tree_size), root);
        await knex()('audit_tree_heads').where({ id: h.id }).update({ root_hash: root, note: forged.note, key_id: forged.keyId });
      }
    }, /note has no verifiable signatures/);
  });

  it('(7) a rehashed tree with its newest root column rewritten is never signed over by the sequencer', async () => {
    // the attack: rehash, make the newest head's column match, and let the broker sign a genuine
    // head on top, then drop the older heads. The sequencer reads the newest head's signed note,
    // not its column, so it refuses, and nothing genuine is signed over the forged tree.
    const snap = await snapshot();
    try {
      await knex()('audit_events').where({ leaf_index: 2 }).update({ actor_name: 'mallory' });
      const { nodes, roots } = await recomputeTree();
      await writeNodes(nodes);
      const newest: Row = await knex()('audit_tree_heads').orderBy([{ column: 'tree_size', order: 'desc' }, { column: 'id', order: 'desc' }]).first();
      await knex()('audit_tree_heads').where({ id: newest.id }).update({ root_hash: roots.get(Number(newest.tree_size)) });
      expect((await tb.request.post('/v1/groups').set(W).send({ name: 'launder' })).status).toBe(201);
      await expect(flush()).rejects.toThrow(/columns differ from what its signed checkpoint says/);
      expect(services().auditChain.status).toBe('broken');
      const after: Row = await knex()('audit_tree_heads').orderBy('id', 'desc').first();
      expect(after.id).toBe(newest.id);
    } finally {
      // this instance stays broken (by design, until restart): the tables go back, the state too
      await restore(snap);
      await knex()('audit_events').whereNull('leaf_index').delete();
      await knex()('groups').where({ name: 'launder' }).delete();
      services().auditChain.status = 'ok';
      services().auditChain.failure = undefined;
    }
    await expectIntact();
  });

  it('(7) a forged head with a bad signature on top of the tree is rejected, as is a forged checkpoint', async () => {
    const latest = await services().auditTree.latestHead();
    await expectDetected(async () => {
      const forged = forgedNote(latest!.treeSize, latest!.rootHash);
      await knex()('audit_tree_heads').insert({ tree_size: latest!.treeSize, root_hash: latest!.rootHash, created_at: Date.now(), note: forged.note, key_id: forged.keyId });
    }, /note has no verifiable signatures/, 'none');
    const r = await verify({ checkpoint: forgedNote(latest!.treeSize, latest!.rootHash).note });
    expect(r).toMatchObject({ ok: false });
    expect(r.reason).toMatch(/the checkpoint given does not verify: note has no verifiable signatures/);
  });

  it('(8) an edited head row (root column or signed note), re-signed or older, is detected', async () => {
    const heads: Row[] = await knex()('audit_tree_heads').orderBy('id');
    const latest = heads.at(-1)!;
    const resignedOf = heads.filter((h) => h.tree_size === latest.tree_size);
    expect(resignedOf.length, 'the newest head is a re-signed one').toBeGreaterThanOrEqual(2);
    const older = heads.find((h) => Number(h.tree_size) > 3 && Number(h.tree_size) < Number(latest.tree_size))!;
    const flipRoot = (note: string, size: number) => {
      const lines = note.split('\n');
      expect(lines[1]).toBe(String(size));
      const root = Buffer.from(lines[2], 'base64');
      root[0] ^= 1;
      lines[2] = root.toString('base64');
      return lines.join('\n');
    };
    await expectDetected(() => knex()('audit_tree_heads').where({ id: latest.id }).update({ root_hash: 'aa'.repeat(32) }), new RegExp(`tree head ${latest.id}: its columns differ`), 'none');
    await expectDetected(
      () => knex()('audit_tree_heads').where({ id: latest.id }).update({ note: flipRoot(String(latest.note), Number(latest.tree_size)) }),
      new RegExp(`tree head ${latest.id} \\(size ${latest.tree_size}\\): invalid signature`),
      'none',
    );
    await expectDetected(() => knex()('audit_tree_heads').where({ id: older.id }).update({ root_hash: 'aa'.repeat(32) }), new RegExp(`tree head ${older.id}: its columns differ`), Number(older.tree_size) - 1);
    // a genuine note of another size moved onto an older head row
    await expectDetected(() => knex()('audit_tree_heads').where({ id: older.id }).update({ note: latest.note }), new RegExp(`tree head ${older.id}: its columns differ`), Number(older.tree_size) - 1);
  });

  it('(watch) an incremental pass detects deleted events at the start of the new leaves (not retention: older events exist)', async () => {
    const { w, state } = await watch();
    expect(state.status).toBe('ok');
    const n = await treeSize();
    const snap = await snapshot();
    for (const g of ['incr-1', 'incr-2', 'incr-3']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    await flush();
    expect(await treeSize()).toBeGreaterThan(n + 2);
    await knex()('audit_events').where({ leaf_index: n }).delete();
    try {
      await w.check();
      expect(state.status).toBe('broken');
      expect(state.failure).toMatchObject({ firstBadLeaf: n });
      expect(state.failure!.reason).toMatch(new RegExp(`the event of leaf ${n} was deleted`));
    } finally {
      await restore(snap);
      await knex()('groups').where('name', 'like', 'incr-%').delete();
    }
    await expectIntact();
  });
});

describe('audit tree tamper detection: the running instance', () => {
  let tb: TestBroker;
  afterAll(async () => {
    await tb?.close();
  });

  it('(9) the sequencer refuses to extend a tree whose nodes were edited: audited writes then get 503 audit_chain_broken', async () => {
    tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0', KEYWARDEN_AUDIT_VERIFY_INTERVAL: '0' } });
    const W = auth(await tb.apiKey('writer'));
    for (const g of ['a', 'b', 'c']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    await tb.broker.services.auditSequencer.flush();
    const metric = async () => Number((await tb.request.get('/metrics')).text.match(/^keywarden_audit_chain_ok (\d+)$/m)?.[1]);
    expect(await metric()).toBe(1);
    expect((await tb.request.get('/readyz')).body.checks.auditChain).toBe('ok');

    const latest = (await tb.broker.services.auditTree.latestHead())!;
    // the rightmost perfect subtree of the signed tree: one of the nodes the sequencer extends
    const edge = perfectSubtrees(0, latest.treeSize).at(-1)!;
    await tb.handle.knex('audit_tree_nodes').where({ level: edge.level, idx: edge.index }).update({ hash: '00'.repeat(32) });
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 'queued-before' })).status).toBe(201);
    await expect(tb.broker.services.auditSequencer.flush()).rejects.toThrow(/do not hash to the signed root/);
    expect(tb.broker.services.auditChain.status).toBe('broken');
    expect(tb.broker.services.auditChain.failure?.reason).toMatch(/stored nodes do not hash to the signed root of tree size/);
    // nothing was appended to the tampered tree
    expect((await tb.broker.services.auditTree.latestHead())!.id).toBe(latest.id);
    expect(await tb.handle.knex('audit_events').where({ leaf_index: latest.treeSize }).first()).toBeUndefined();

    expectProblemCode(await tb.request.post('/v1/groups').set(W).send({ name: 'after-mismatch' }), 503, 'audit_chain_broken');
    expect(await tb.handle.knex('groups').where({ name: 'after-mismatch' }).first()).toBeUndefined();
    const ready = await tb.request.get('/readyz');
    expect(ready.status).toBe(503);
    expect(ready.body.checks.auditChain).toBe('broken');
    expect(await metric()).toBe(0);
  });
});
