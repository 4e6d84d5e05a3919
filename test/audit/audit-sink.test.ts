import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { allEvents, auth, readJsonl, readTreeHeads } from './audit-helpers.js';

/** The JSONL mirror for log shippers, and reopening it after logrotate moved it away. */
describe('audit JSONL sink', () => {
  let tb: TestBroker;
  let tmp: string;
  let file: string;
  let W: Record<string, string>;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-audit-sink-'));
    file = path.join(tmp, 'logs', 'audit.jsonl'); // the directory is created on start
    // the sequencer runs only when the test says so: mirrored events are the ones recorded, leaves not yet given
    tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_FILE: file, KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0' } });
    W = auth(await tb.apiKey('writer'));
  });
  afterAll(async () => {
    await tb?.close();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('mirrors every committed event, one JSON object per line, identical to the database', async () => {
    expect(tb.broker.services.auditSink).toBeDefined();
    for (const g of ['s1', 's2']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'mirrored', value: 'sink-secret-value-1', groups: ['s1'] })).status).toBe(201);
    const text = fs.readFileSync(file, 'utf8');
    expect(text.endsWith('\n')).toBe(true);
    expect(text).not.toContain('sink-secret-value-1');
    expect(readJsonl(file)).toEqual(await allEvents(tb));
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    // rejected operations add nothing
    const before = readJsonl(file).length;
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 's1' })).status).toBe(409);
    expect(readJsonl(file)).toHaveLength(before);
  });

  it('appends each signed tree head the sequencer publishes, as a line of its own', async () => {
    const before = readTreeHeads(file).length;
    await tb.broker.services.auditSequencer.flush();
    const heads = readTreeHeads(file);
    expect(heads.length).toBe(before + 1);
    const head = heads.at(-1)!;
    const published = (await tb.request.get('/v1/audit/checkpoint').set(auth(await tb.apiKey('auditor')))).body;
    expect(head).toEqual({ type: 'tree-head', treeSize: published.treeSize, rootHash: published.rootHash, checkpoint: published.checkpoint });
    expect(head.treeSize).toBe((await allEvents(tb)).filter((e) => e.leafIndex !== null).length);
  });

  it('after the file is renamed, reopen() starts a new file at the original path', async () => {
    const rotated = `${file}.1`;
    const beforeRotate = await allEvents(tb);
    fs.renameSync(file, rotated);
    // until reopen, writes still go to the open (renamed) file
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 'during' })).status).toBe(201);
    expect(fs.existsSync(file)).toBe(false);
    expect(readJsonl(rotated).at(-1)).toMatchObject({ action: 'group.create', resourceName: 'during' });

    tb.broker.services.auditSink!.reopen();
    expect(fs.existsSync(file)).toBe(true);
    for (const g of ['after1', 'after2']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);

    const old = readJsonl(rotated);
    const fresh = readJsonl(file);
    expect(old.map((e) => e.seq)).toEqual([...beforeRotate.map((e) => e.seq), beforeRotate.length + 1]);
    expect(fresh.map((e) => e.resourceName)).toEqual(['after1', 'after2']);
    // together the two files are the whole log, in order, with nothing lost or repeated (the
    // mirror writes events as recorded, before the sequencer gives them their leaves)
    const withoutLeaf = (events: Array<Record<string, unknown>>) => events.map(({ leafIndex: _l, ...e }) => e);
    expect(withoutLeaf([...old, ...fresh] as never)).toEqual(withoutLeaf((await allEvents(tb)) as never));
    expect(fresh[0].seq).toBe(old.at(-1)!.seq + 1);
  });
});
