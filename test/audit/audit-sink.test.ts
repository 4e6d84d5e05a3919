import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { allEvents, auth, readJsonl } from './audit-helpers.js';

/** The JSONL mirror for log shippers, and reopening it after logrotate moved it away. */
describe('audit JSONL sink', () => {
  let tb: TestBroker;
  let tmp: string;
  let file: string;
  let W: Record<string, string>;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-audit-sink-'));
    file = path.join(tmp, 'logs', 'audit.jsonl'); // the directory is created on start
    tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_FILE: file } });
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
    // together the two files are the whole log, in order, with nothing lost or repeated
    expect([...old, ...fresh]).toEqual(await allEvents(tb));
    expect(fresh[0].prevHash).toBe(old.at(-1)!.hash);
  });
});
