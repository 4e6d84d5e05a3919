import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pruneAuditLog } from '../../src/audit/audit-retention.js';
import { verifyExportFile } from '../../src/audit/offline-verify.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { openCheckpoint as openSignedCheckpoint } from '../support/independent-tlog-verifier.js';
import { baseEnv, runCli } from '../cli/cli-support.js';
import { allEvents, auth, textOf } from './audit-helpers.js';

/*
 * Format-2 exports (GET /v1/audit/export): verifiable offline with nothing but the log's verifier
 * key, for the whole log, for ranges and after pruning; signed tree heads on demand and listed;
 * tree heads mirrored to the JSONL sink. (Replaces the JWS-checkpoint tests of the hash chain.)
 */

/** Opens a signed checkpoint with the independent verifier (no code shared with src/audit/), root as hex. */
function openCheckpoint(note: string, verifierKey: string): { origin: string; size: number; root: string } {
  const cp = openSignedCheckpoint(note, verifierKey);
  return { origin: cp.origin, size: cp.size, root: cp.root.toString('hex') };
}

type Line = Record<string, any>;
const isEvent = (l: Line) => l.type === undefined;

describe('audit exports (format 2), checkpoints and offline verification', () => {
  let tb: TestBroker;
  let now = Date.parse('2031-03-01T08:00:00.000Z');
  let A: Record<string, string>;
  let AU: Record<string, string>;
  let W: Record<string, string>;
  let tmp: string;
  let sinkFile: string;
  let verifierKey: string;

  const flush = () => tb.broker.services.auditSequencer.flush();
  const exportTo = async (file: string, query: Record<string, string | number> = {}): Promise<Line[]> => {
    const { res, text } = await textOf(tb.request.get('/v1/audit/export').query(query).set(AU));
    expect(res.status, text.slice(0, 300)).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/x-ndjson/);
    fs.writeFileSync(file, text);
    return text
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l));
  };
  const writeLines = (lines: Line[]): string => {
    const out = path.join(tmp, `edited-${crypto.randomBytes(4).toString('hex')}.ndjson`);
    fs.writeFileSync(out, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
    return out;
  };
  /** Events renumbered to consecutive leaves, as a forger who adds or drops one would. */
  const renumbered = (lines: Line[]): Line[] => {
    let leaf = lines.find(isEvent)!.leafIndex as number;
    return lines.map((l) => (isEvent(l) ? { ...l, leafIndex: leaf++ } : l));
  };

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-audit-export-'));
    sinkFile = path.join(tmp, 'audit.jsonl');
    // the timer is off: the test decides when events are sequenced
    tb = await startTestBroker({ clock: () => now, env: { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0', KEYWARDEN_AUDIT_FILE: sinkFile } });
    A = auth(tb.adminKey);
    AU = auth(await tb.apiKey('auditor'));
    W = auth(await tb.apiKey('writer'));
    for (const g of ['a', 'b', 'c', 'd']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    for (let i = 0; i < 4; i++) {
      expect((await tb.request.post('/v1/secrets').set(W).send({ name: `k${i}`, value: `export-secret-${i}`, groups: ['a'] })).status).toBe(201);
    }
    await flush();
    verifierKey = (await tb.request.get('/v1/audit/checkpoint').set(AU)).body.verifierKey;
  });
  afterAll(async () => {
    await tb?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('POST /v1/audit/checkpoints (admin) sequences the queue and returns the new signed head; GET lists heads', async () => {
    now += 1000;
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 'queued' })).status).toBe(201);
    const queued = (await allEvents(tb)).filter((e) => e.leafIndex === null);
    expect(queued.length).toBeGreaterThan(0);
    expect((await tb.request.post('/v1/audit/checkpoints').set(AU)).status).toBe(403);
    expect((await tb.request.post('/v1/audit/checkpoints').set(W)).status).toBe(403);
    // the refusals above are recorded (and queued) too
    const total = (await allEvents(tb)).length;
    const res = await tb.request.post('/v1/audit/checkpoints').set(A);
    expect(res.status).toBe(201);
    // everything queued before the call is in the head it returns
    expect(res.body).toMatchObject({ treeSize: total, origin: '127.0.0.1:8750/audit-log', verifierKey });
    const signed = openCheckpoint(res.body.checkpoint, verifierKey);
    expect(signed).toEqual({ origin: '127.0.0.1:8750/audit-log', size: total, root: res.body.rootHash });
    expect(new Date(res.body.time).getTime()).toBe(now);

    // the request itself is recorded, and waits for the next head
    const last = (await allEvents(tb)).at(-1)!;
    expect(last).toMatchObject({ action: 'audit.checkpoint', details: { treeSize: total }, leafIndex: null });

    const list = await tb.request.get('/v1/audit/checkpoints').set(AU);
    expect(list.status).toBe(200);
    expect(list.body.items[0]).toEqual(res.body);
    const ids = list.body.items.map((h: Line) => h.id);
    expect(ids).toEqual([...ids].sort((x, y) => y - x));
    for (const h of list.body.items) expect(openCheckpoint(h.checkpoint, verifierKey).size).toBe(h.treeSize);
    const page = await tb.request.get('/v1/audit/checkpoints').query({ limit: 1 }).set(AU);
    expect(page.body.items).toHaveLength(1);
    expect(page.body.nextCursor).toBeTruthy();
    expect((await tb.request.get('/v1/audit/checkpoints').set(W)).status).toBe(403);
  });

  it('exports the whole log; it verifies offline with the verifier key', async () => {
    await flush();
    const head = (await tb.request.get('/v1/audit/checkpoint').set(AU)).body;
    const file = path.join(tmp, 'whole.ndjson');
    const lines = await exportTo(file);
    expect(lines[0]).toMatchObject({ type: 'export-header', format: 'keywarden-audit-export/2', origin: head.origin, verifierKey, fromLeaf: 0, toLeaf: head.treeSize, treeSize: head.treeSize });
    const events = lines.filter(isEvent);
    expect(events.map((e) => e.leafIndex)).toEqual([...Array(head.treeSize).keys()]);
    expect(lines.map((l) => l.type ?? 'event')).toEqual(['export-header', ...events.map(() => 'event'), 'checkpoint']);
    expect(lines.at(-1)!.checkpoint).toBe(head.checkpoint);
    // the export of the whole log is the log
    const stored = (await allEvents(tb)).filter((e) => e.leafIndex !== null);
    expect(events).toEqual(stored);

    const result = await verifyExportFile(file, { verifierKey });
    expect(result).toMatchObject({ ok: true, format: 2, checked: head.treeSize, treeSize: head.treeSize, rootHash: head.rootHash, checkpointTime: head.time });
    // a format-2 file needs the verifier key, not a JWKS
    expect(await verifyExportFile(file, { jwks: { keys: [] } })).toMatchObject({ ok: false, format: 2 });
  });

  it('exports ranges (from, to): the leaves around them come as subtree hashes, and it verifies', async () => {
    const size = (await tb.request.get('/v1/audit/checkpoint').set(AU)).body.treeSize;
    expect(size).toBeGreaterThan(10);
    const cases: Array<{ query: Record<string, number>; from: number; to: number }> = [
      { query: { from: 3, to: 9 }, from: 3, to: 9 },
      { query: { from: 5 }, from: 5, to: size },
      { query: { to: 7 }, from: 0, to: 7 },
      { query: { from: size - 1 }, from: size - 1, to: size },
      { query: { from: 4, to: 4 }, from: 4, to: 4 },
    ];
    for (const { query, from, to } of cases) {
      const file = path.join(tmp, `range-${from}-${to}.ndjson`);
      const lines = await exportTo(file, query);
      const ctx = JSON.stringify(query);
      expect(lines[0], ctx).toMatchObject({ fromLeaf: from, toLeaf: to, treeSize: size });
      expect(lines.filter(isEvent).map((e) => e.leafIndex), ctx).toEqual([...Array(to - from).keys()].map((i) => i + from));
      expect(lines.some((l) => l.type === 'prefix'), ctx).toBe(from > 0);
      expect(lines.some((l) => l.type === 'suffix'), ctx).toBe(to < size);
      expect(await verifyExportFile(file, { verifierKey }), ctx).toMatchObject({ ok: true, format: 2, checked: to - from, treeSize: size, fromLeaf: from, toLeaf: to });
    }
    // the prefix and suffix hashes are what binds the range to the signed root
    const file = path.join(tmp, 'range.ndjson');
    const lines = await exportTo(file, { from: 3, to: 9 });
    const badPrefix = lines.map((l) => (l.type === 'prefix' ? { ...l, hashes: [...l.hashes.slice(0, -1), 'ab'.repeat(32)] } : l));
    expect(await verifyExportFile(writeLines(badPrefix), { verifierKey })).toMatchObject({ ok: false, reason: expect.stringMatching(/signed root/) });
    const badSuffix = lines.map((l) => (l.type === 'suffix' ? { ...l, nodes: l.nodes.map((n: Line, i: number) => (i === 0 ? { ...n, hash: 'cd'.repeat(32) } : n)) } : l));
    expect((await verifyExportFile(writeLines(badSuffix), { verifierKey })).ok).toBe(false);
    expect((await verifyExportFile(writeLines(lines.filter((l) => l.type !== 'prefix')), { verifierKey })).ok).toBe(false);
    expect((await verifyExportFile(writeLines(lines.filter((l) => l.type !== 'suffix')), { verifierKey })).ok).toBe(false);
    // the header is unsigned, but it must describe the file: no claiming the whole log for a range
    const wholeClaim = lines.map((l) => (l.type === 'export-header' ? { ...l, fromLeaf: 0, toLeaf: size } : l));
    expect(await verifyExportFile(writeLines(wholeClaim), { verifierKey })).toMatchObject({ ok: false, reason: expect.stringMatching(/header announces leaves 0 to/) });

    const beyond = await tb.request.get('/v1/audit/export').query({ to: size + 5 }).set(AU);
    expect(beyond.status).toBe(400);
    expect(beyond.type).toBe('application/problem+json');
    expect((await tb.request.get('/v1/audit/export').query({ from: -1 }).set(AU)).status).toBe(400);
    expect((await tb.request.get('/v1/audit/export').set(W)).status).toBe(403);
  });

  it('fails on an edited, dropped, added or reordered event, a removed checkpoint, or a checkpoint of another log', async () => {
    const file = path.join(tmp, 'whole-tamper.ndjson');
    const lines = await exportTo(file);
    const events = lines.filter(isEvent);
    const at = (leaf: number) => lines.findIndex((l) => isEvent(l) && l.leafIndex === leaf);
    const withLine = (i: number, replacement: Line[]) => [...lines.slice(0, i), ...replacement, ...lines.slice(i + 1)];

    const other = await startTestBroker({ env: { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0' } });
    let otherHead: Line;
    try {
      // another broker whose log has exactly as many leaves: its head fits the file but for the signature and root
      const otherW = auth(await other.apiKey('writer'));
      for (;;) {
        await other.broker.services.auditSequencer.flush();
        otherHead = (await other.request.get('/v1/audit/checkpoint').set(auth(other.adminKey))).body;
        if (otherHead.treeSize >= events.length) break;
        await other.request.post('/v1/groups').set(otherW).send({ name: `o${otherHead.treeSize}` });
      }
      expect(otherHead.treeSize).toBe(events.length);
    } finally {
      await other.close();
    }
    expect(otherHead.verifierKey).not.toBe(verifierKey);
    const olderHead = (await tb.request.get('/v1/audit/checkpoints').set(AU)).body.items.find((h: Line) => h.treeSize < events.length);
    expect(olderHead).toBeDefined();

    const forged = { ...events[2], leafIndex: 3, action: 'secret.delete', resourceName: 'k0' };
    const cases: Record<string, { lines: Line[]; key?: string; reason: RegExp }> = {
      'edited event': { lines: withLine(at(4), [{ ...events[4], actorName: 'mallory' }]), reason: /signed root/ },
      'edited details': { lines: withLine(at(5), [{ ...events[5], details: { ...events[5].details, extra: 1 } }]), reason: /signed root/ },
      'edited seq': { lines: withLine(at(5), [{ ...events[5], seq: events[5].seq + 1000 }]), reason: /signed root/ },
      'dropped event': { lines: lines.filter((_, i) => i !== at(3)), reason: /claims leaf/ },
      'dropped event, renumbered': { lines: renumbered(lines.filter((_, i) => i !== at(3))), reason: /covers \d+ leaves but its checkpoint has/ },
      'added event, renumbered': { lines: renumbered([...lines.slice(0, at(3)), forged, ...lines.slice(at(3))]), reason: /covers \d+ leaves but its checkpoint has/ },
      'reordered events': { lines: withLine(at(2), [{ ...events[3], leafIndex: 2 }, { ...events[2], leafIndex: 3 }]).filter((_, i) => i !== at(3) + 1), reason: /signed root/ },
      'removed checkpoint': { lines: lines.filter((l) => l.type !== 'checkpoint'), reason: /no signed checkpoint/ },
      'checkpoint of another broker': { lines: lines.map((l) => (l.type === 'checkpoint' ? { ...l, checkpoint: otherHead.checkpoint } : l)), reason: /does not verify/ },
      "another broker's checkpoint and key": { lines: lines.map((l) => (l.type === 'checkpoint' ? { ...l, checkpoint: otherHead.checkpoint } : l)), key: otherHead.verifierKey, reason: /signed root/ },
      'an older checkpoint of this log': { lines: lines.map((l) => (l.type === 'checkpoint' ? { ...l, checkpoint: olderHead.checkpoint } : l)), reason: /its checkpoint has/ },
      'a line after the checkpoint': { lines: [...lines, events[0]], reason: /follows the checkpoint/ },
      'no header': { lines: lines.slice(1), reason: /format-1/ },
    };
    for (const [name, c] of Object.entries(cases)) {
      const result = await verifyExportFile(writeLines(c.lines), { verifierKey: c.key ?? verifierKey });
      expect(result.ok, name).toBe(false);
      expect(result.reason, name).toMatch(c.reason);
    }
    // the untouched file still verifies: the cases above fail for what was changed
    expect(await verifyExportFile(file, { verifierKey })).toMatchObject({ ok: true });
  }, 60_000);

  it('the CLI verifies an export with --key (or --key @file) and exits 1 for an altered one', async () => {
    const file = path.join(tmp, 'cli.ndjson');
    const lines = await exportTo(file, { from: 2 });
    const keyFile = path.join(tmp, 'log.vkey');
    fs.writeFileSync(keyFile, verifierKey + '\n');
    const ok = await runCli(['audit', 'verify-export', '--file', file, '--key', verifierKey], baseEnv());
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, format: 2, checked: lines.filter(isEvent).length });
    const fromFile = await runCli(['audit', 'verify-export', '--file', file, '--key', `@${keyFile}`], baseEnv());
    expect(fromFile.code, fromFile.stderr).toBe(0);
    const altered = writeLines(lines.map((l) => (isEvent(l) && l.leafIndex === 4 ? { ...l, outcome: 'deny' } : l)));
    const bad = await runCli(['audit', 'verify-export', '--file', altered, '--key', verifierKey], baseEnv());
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stdout)).toMatchObject({ ok: false, format: 2 });
  }, 60_000);

  it('after audit prune the export starts with the hashes of the removed leaves and still verifies', async () => {
    now += 86_400_000;
    const cutoff = now;
    now += 1000;
    for (const g of ['f', 'g']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    const before = await allEvents(tb);
    const old = before.filter((e) => e.ts < cutoff);

    const s = tb.broker.services;
    const result = await pruneAuditLog({ dal: s.auditQuery, sequencer: s.auditSequencer, audit: s.audit }, cutoff);
    expect(result).toEqual({ removed: old.length, throughLeaf: old.length - 1 });
    const remaining = await allEvents(tb);
    expect(remaining[0].leafIndex).toBe(old.length);
    expect(remaining.at(-1)).toMatchObject({ action: 'audit.prune', details: { removed: old.length, throughLeaf: old.length - 1 } });
    await flush();

    const file = path.join(tmp, 'pruned.ndjson');
    const lines = await exportTo(file);
    const head = (await tb.request.get('/v1/audit/checkpoint').set(AU)).body;
    expect(lines[0]).toMatchObject({ fromLeaf: old.length, toLeaf: head.treeSize });
    expect(lines[1]).toMatchObject({ type: 'prefix', treeSize: old.length });
    expect(lines.filter(isEvent)[0].leafIndex).toBe(old.length);
    expect(await verifyExportFile(file, { verifierKey })).toMatchObject({ ok: true, format: 2, checked: head.treeSize - old.length, rootHash: head.rootHash });
    // asking for the removed leaves gives the same file: they are gone, their hashes are not
    const again = path.join(tmp, 'pruned-from0.ndjson');
    expect((await exportTo(again, { from: 0 }))[0]).toMatchObject({ fromLeaf: old.length });
    expect(await verifyExportFile(again, { verifierKey })).toMatchObject({ ok: true });

    const cli = await runCli(['audit', 'verify-export', '--file', file, '--key', verifierKey], baseEnv());
    expect(cli.code, cli.stderr).toBe(0);

    // the prefix hashes are checked against the signed root like the events
    const badPrefix = lines.map((l) => (l.type === 'prefix' ? { ...l, hashes: l.hashes.map((h: string, i: number) => (i === 0 ? h.replace(/^./, h[0] === 'a' ? 'b' : 'a') : h)) } : l));
    expect(await verifyExportFile(writeLines(badPrefix), { verifierKey })).toMatchObject({ ok: false });

    // the online verifier accepts the removed prefix as missing content
    const v = await tb.request.post('/v1/audit/verify').set(AU).send({});
    expect(v.body).toMatchObject({ ok: true, leavesWithoutEvent: old.length });
  }, 60_000);

  it('mirrors every signed tree head to the JSONL sink as a tree-head line', async () => {
    now += 1000;
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 'sink' })).status).toBe(201);
    await flush();
    const head = (await tb.request.get('/v1/audit/checkpoint').set(AU)).body;
    const lines: Line[] = fs
      .readFileSync(sinkFile, 'utf8')
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l));
    const heads = lines.filter((l) => l.type === 'tree-head');
    expect(heads.length).toBeGreaterThanOrEqual(3);
    for (const h of heads) {
      expect(Object.keys(h).sort()).toEqual(['checkpoint', 'rootHash', 'treeSize', 'type']);
      expect(openCheckpoint(h.checkpoint, verifierKey)).toMatchObject({ size: h.treeSize, root: h.rootHash });
    }
    expect(heads.at(-1)).toEqual({ type: 'tree-head', treeSize: head.treeSize, rootHash: head.rootHash, checkpoint: head.checkpoint });
    // tree sizes only grow along the file
    const sizes = heads.map((h) => h.treeSize);
    expect(sizes).toEqual([...sizes].sort((x, y) => x - y));
    // and the events are there beside them
    expect(lines.some((l) => l.type === undefined && l.action === 'group.create' && l.resourceName === 'sink')).toBe(true);
  });
});
