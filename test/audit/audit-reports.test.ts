import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toCsv } from '../../src/audit/reports-service.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblemCode, parseCsv } from './audit-helpers.js';

const DAY = 86_400_000;
const ACCESS_HEADER = ['client', 'client_id', 'client_enabled', 'secret', 'group', 'last_read_at', 'last_read_version'];

/** Access, expiry and stale-grant reports, as JSON and as spreadsheet-safe CSV. */
describe('audit reports', () => {
  let tb: TestBroker;
  let now = Date.parse('2032-06-01T12:00:00.000Z');
  const T0 = now;
  let AU: Record<string, string>;
  let W: Record<string, string>;
  let alice: { clientId: string; token: string };
  let bob: { clientId: string; token: string };
  let evil: { clientId: string; token: string };

  beforeAll(async () => {
    tb = await startTestBroker({ clock: () => now });
    AU = auth(await tb.apiKey('auditor'));
    W = auth(await tb.apiKey('writer'));
    for (const g of ['web', 'batch', '-cmd']) expect((await tb.request.post('/v1/groups').set(W).send({ name: g })).status).toBe(201);
    const secrets = [
      { name: 'web.key', value: 'report-value-1', groups: ['web'], expiry: new Date(T0 + 100 * DAY).toISOString() },
      { name: 'batch.db', value: 'report-value-2', groups: ['batch'], expiry: new Date(T0 + 10 * DAY).toISOString() },
      { name: 'shared', value: 'report-value-3', groups: ['web', 'batch'] },
      { name: 'gone', value: 'report-value-5', groups: ['web'], expiry: new Date(T0 + 1 * DAY).toISOString() },
    ];
    for (const s of secrets) expect((await tb.request.post('/v1/secrets').set(W).send(s)).status, s.name).toBe(201);
    // a name a spreadsheet would evaluate (names may start with '-')
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: '-2-3', value: 'report-value-6', groups: ['-cmd'] })).status).toBe(201);
    expect((await tb.request.delete('/v1/secrets/gone').set(W)).status).toBe(204);
    alice = await tb.client('alice', ['web']);
    bob = await tb.client('bob', ['batch', 'web']);
    evil = await tb.client('-evil', ['-cmd']);
    await tb.client('idle');
    now = T0 + 60_000;
    expect((await tb.request.get('/v1/client/secrets/web.key').set(auth(alice.token))).status).toBe(200);
    expect((await tb.request.post('/v1/secrets/shared/versions').set(W).send({ value: 'report-value-3b' })).status).toBe(201);
    expect((await tb.request.get('/v1/client/secrets/shared').set(auth(bob.token))).status).toBe(200);
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('access report (JSON): client -> secret -> groups with the last read; secret -> clients', async () => {
    const res = await tb.request.get('/v1/reports/access').set(AU);
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    const body = res.body;
    expect(body.generatedAt).toBe(new Date(now).toISOString());
    const client = (name: string) => body.clients.find((c: any) => c.name === name);
    expect(client('alice')).toEqual({
      name: 'alice',
      clientId: alice.clientId,
      enabled: true,
      secrets: [
        { name: 'shared', groups: ['web'], lastReadAt: null, lastReadVersion: null },
        { name: 'web.key', groups: ['web'], lastReadAt: new Date(T0 + 60_000).toISOString(), lastReadVersion: 1 },
      ],
    });
    expect(client('bob').secrets).toEqual([
      { name: 'batch.db', groups: ['batch'], lastReadAt: null, lastReadVersion: null },
      { name: 'shared', groups: ['batch', 'web'], lastReadAt: new Date(T0 + 60_000).toISOString(), lastReadVersion: 2 },
      { name: 'web.key', groups: ['web'], lastReadAt: null, lastReadVersion: null },
    ]);
    expect(client('idle')).toMatchObject({ secrets: [] });
    const secret = (name: string) => body.secrets.find((s: any) => s.name === name);
    expect(secret('shared').clients).toEqual(['alice', 'bob']);
    expect(secret('web.key').clients).toEqual(['alice', 'bob']);
    expect(secret('batch.db').clients).toEqual(['bob']);
    expect(secret('gone')).toBeUndefined(); // deleted secrets are not reported
    expect(JSON.stringify(body)).not.toMatch(/report-value/);
  });

  it('access report (CSV): header row, one parseable row per grant path, formula cells neutralised', async () => {
    const res = await tb.request.get('/v1/reports/access').set(AU).set('Accept', 'text/csv');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/csv/);
    expect(res.text.endsWith('\r\n')).toBe(true);
    const rows = parseCsv(res.text);
    expect(rows[0]).toEqual(ACCESS_HEADER);
    for (const r of rows) expect(r).toHaveLength(ACCESS_HEADER.length);
    const data = rows.slice(1).map((r) => Object.fromEntries(ACCESS_HEADER.map((h, i) => [h, r[i]])));
    expect(data.find((r) => r.client === 'alice' && r.secret === 'web.key')).toEqual({
      client: 'alice',
      client_id: alice.clientId,
      client_enabled: 'true',
      secret: 'web.key',
      group: 'web',
      last_read_at: new Date(T0 + 60_000).toISOString(),
      last_read_version: '1',
    });
    expect(data.find((r) => r.client === 'alice' && r.secret === 'shared')).toMatchObject({ group: 'web', last_read_at: '', last_read_version: '' });
    expect(data.filter((r) => r.client === 'bob' && r.secret === 'shared').map((r) => r.group)).toEqual(['batch', 'web']);
    // same rows as the JSON report
    const json = (await tb.request.get('/v1/reports/access').set(AU)).body;
    const jsonPaths = json.clients.flatMap((c: any) => c.secrets.flatMap((s: any) => s.groups.map((g: string) => `${c.name}|${s.name}|${g}`)));
    const csvPaths = data.map((r) => `${r.client.replace(/^'/, '')}|${r.secret.replace(/^'/, '')}|${r.group.replace(/^'/, '')}`);
    expect(csvPaths.sort()).toEqual(jsonPaths.sort());

    // names starting with - (or = + @) are prefixed so spreadsheets show them as text
    const evilRows = data.filter((r) => r.client_id === evil.clientId);
    expect(evilRows.length).toBe(1);
    expect(evilRows[0]).toMatchObject({ client: "'-evil", secret: "'-2-3", group: "'-cmd" });
    for (const r of rows) for (const cell of r) expect(cell).not.toMatch(/^[=+\-@\t\r]/);
  });

  it('toCsv quotes and neutralises every kind of cell', () => {
    const csv = toCsv(['a', 'b'], [
      ['=1+1', '+SUM(A1)'],
      ['@cmd', '-1'],
      ['\tTAB', 'has "quotes", and comma'],
      ['multi\nline', null],
      [true, 42],
    ]);
    expect(parseCsv(csv)).toEqual([
      ['a', 'b'],
      ["'=1+1", "'+SUM(A1)"],
      ["'@cmd", "'-1"],
      ["'\tTAB", 'has "quotes", and comma'],
      ['multi\nline', ''],
      ['true', '42'],
    ]);
  });

  it('expiring lists live secrets expiring before the given time, soonest first', async () => {
    const res = await tb.request.get('/v1/reports/expiring').query({ before: new Date(T0 + 30 * DAY).toISOString() }).set(AU);
    expect(res.status).toBe(200);
    expect(res.body.items.map((i: any) => i.name)).toEqual(['batch.db']);
    expect(res.body.items[0]).toMatchObject({ name: 'batch.db', expiry: new Date(T0 + 10 * DAY).toISOString(), expired: false, version: 1 });

    const later = await tb.request.get('/v1/reports/expiring').query({ before: new Date(T0 + 365 * DAY).toISOString() }).set(AU);
    expect(later.body.items.map((i: any) => i.name)).toEqual(['batch.db', 'web.key']);
    const none = await tb.request.get('/v1/reports/expiring').query({ before: new Date(T0 + 10 * DAY).toISOString() }).set(AU);
    expect(none.body.items).toEqual([]); // strictly before

    now = T0 + 20 * DAY;
    const afterExpiry = await tb.request.get('/v1/reports/expiring').query({ before: new Date(T0 + 30 * DAY).toISOString() }).set(AU);
    expect(afterExpiry.body.items[0]).toMatchObject({ name: 'batch.db', expired: true });
    now = T0 + 60_000;

    for (const q of [{}, { before: 'tomorrow' }, { before: '2032-01-01' }, { before: '2032-01-01T00:00:00Z', extra: '1' }]) {
      expectProblemCode(await tb.request.get('/v1/reports/expiring').query(q).set(AU), 400, 'invalid_request');
    }
  });

  it('stale-access lists never-read and long-unread grants', async () => {
    const res = await tb.request.get('/v1/reports/stale-access?days=30').set(AU);
    expect(res.status).toBe(200);
    expect(res.body.days).toBe(30);
    const key = (i: any) => `${i.client}|${i.secret}|${i.group}`;
    const stale = res.body.items.map(key);
    expect(stale).toContain('alice|shared|web');
    expect(stale).toContain('bob|batch.db|batch');
    expect(stale).not.toContain('alice|web.key|web'); // read a minute ago
    expect(res.body.items.find((i: any) => key(i) === 'alice|shared|web')).toMatchObject({ neverRead: true, lastReadAt: null });

    now = T0 + 45 * DAY;
    const later = await tb.request.get('/v1/reports/stale-access?days=30').set(AU);
    const aliceKey = later.body.items.find((i: any) => key(i) === 'alice|web.key|web');
    expect(aliceKey).toMatchObject({ neverRead: false, lastReadAt: new Date(T0 + 60_000).toISOString() });
    const wide = await tb.request.get('/v1/reports/stale-access?days=60').set(AU);
    expect(wide.body.items.map(key)).not.toContain('alice|web.key|web');

    const csv = await tb.request.get('/v1/reports/stale-access?days=30').set(AU).set('Accept', 'text/csv');
    expect(csv.headers['content-type']).toMatch(/^text\/csv/);
    const rows = parseCsv(csv.text);
    expect(rows[0]).toEqual(['client', 'secret', 'group', 'last_read_at']);
    expect(rows.slice(1)).toContainEqual(['alice', 'web.key', 'web', new Date(T0 + 60_000).toISOString()]);
    expect(rows.slice(1)).toContainEqual(["'-evil", "'-2-3", "'-cmd", '']);
    now = T0 + 60_000;

    for (const q of ['days=0', 'days=abc', 'days=5000', 'days=1.5', 'since=1']) {
      expectProblemCode(await tb.request.get(`/v1/reports/stale-access?${q}`).set(AU), 400, 'invalid_request');
    }
  });
});
