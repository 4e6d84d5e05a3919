/**
 * What the console needed that the API lacked (issue 16): activity counted per time bucket by the
 * database, the audit log's status, the source-address filter of the audit search, and the export
 * of a search as NDJSON or CSV.
 */
import supertest from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEventInput } from '../../src/audit/audit-types.js';
import { auth, expectProblem } from '../core/helpers.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T = Date.parse('2031-05-10T12:00:30.000Z');

describe('activity report and audit search additions', () => {
  let tb: TestBroker;
  let now = T - 100 * DAY;
  let AU: Record<string, string>;
  let W: Record<string, string>;
  let client: { clientId: string; clientSecret: string };
  const http = () => supertest(tb.broker.app);

  async function recordAt(at: number, input: Partial<AuditEventInput> & Pick<AuditEventInput, 'action' | 'outcome'>) {
    const saved = now;
    now = at;
    try {
      await tb.broker.services.audit.record({ actor: { kind: 'client', id: 'cid-web', name: 'web' }, ...input });
    } finally {
      now = saved;
    }
  }

  beforeAll(async () => {
    tb = await startTestBroker({ clock: () => now });
    AU = auth(await tb.apiKey('auditor'));
    W = auth(await tb.apiKey('writer'));
    client = await tb.client('reporter');
    const read = (outcome: 'allow' | 'deny', sourceIp = '10.1.2.3') => ({ action: 'secret.read', outcome, resource: { kind: 'secret', name: 'db.pass' }, request: { requestId: 'r', sourceIp, userAgent: null } }) as const;
    const release = (decision: 'allow' | 'warn' | 'deny') =>
      ({ action: 'release.decide', outcome: decision === 'deny' ? 'deny' : 'allow', resource: { kind: 'image', name: 'reg/app' }, details: { decisionId: 'rd_x', decision, policy: 'prod' } }) as const;
    await recordAt(T - 30_000, read('allow'));
    await recordAt(T - 30_000, read('allow', '192.168.7.9'));
    await recordAt(T - 30_000, read('deny'));
    await recordAt(T - 10 * MIN, { action: 'auth.token.issue', outcome: 'allow' });
    await recordAt(T - 10 * MIN, { action: 'image.sign', outcome: 'allow' });
    await recordAt(T - 10 * MIN, { action: 'image.sign', outcome: 'error' });
    await recordAt(T - 5 * HOUR, release('allow'));
    await recordAt(T - 5 * HOUR, release('warn'));
    await recordAt(T - 5 * HOUR, release('deny'));
    // details that merely mention a decision do not count as release decisions
    await recordAt(T - 5 * HOUR, { action: 'policy.update', outcome: 'allow', details: { decision: 'allow' } });
    await recordAt(T - 10 * DAY, read('allow'));
    await recordAt(T - 40 * DAY, read('allow'));
    await recordAt(T + 2 * DAY, read('allow')); // the future (a clock ahead): in no window
    now = T;
  });
  afterAll(async () => {
    await tb?.close();
  });

  const zeros = (n: number) => new Array<number>(n).fill(0);
  const at = (n: number, entries: Record<number, number>) => {
    const a = zeros(n);
    for (const [i, v] of Object.entries(entries)) a[Number(i)] = v;
    return a;
  };

  it('hour: 60 one-minute buckets aligned to the minute, the newest the current one', async () => {
    const res = await http().get('/v1/reports/activity?window=hour').set(AU);
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({ window: 'hour', bucketSeconds: 60, from: '2031-05-10T11:01:00.000Z', to: '2031-05-10T12:01:00.000Z' });
    expect(res.body.buckets).toHaveLength(60);
    expect(res.body.buckets[59]).toBe('2031-05-10T12:00:00.000Z');
    expect(res.body.series).toEqual({
      secretReads: at(60, { 59: 2 }),
      denials: at(60, { 59: 1 }),
      tokenIssuances: at(60, { 49: 1 }),
      signatures: at(60, { 49: 1 }),
      releasesAllow: zeros(60),
      releasesWarn: zeros(60),
      releasesDeny: zeros(60),
    });
    expect(res.body.totals).toEqual({ secretReads: 2, denials: 1, tokenIssuances: 1, signatures: 1, releasesAllow: 0, releasesWarn: 0, releasesDeny: 0 });
  });

  it('day (the default): 24 hourly buckets, release decisions by decision', async () => {
    const res = await http().get('/v1/reports/activity').set(AU);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ window: 'day', bucketSeconds: 3600, from: '2031-05-09T13:00:00.000Z', to: '2031-05-10T13:00:00.000Z' });
    expect(res.body.series).toEqual({
      secretReads: at(24, { 23: 2 }),
      denials: at(24, { 23: 1, 18: 1 }),
      tokenIssuances: at(24, { 22: 1 }),
      signatures: at(24, { 22: 1 }),
      releasesAllow: at(24, { 18: 1 }),
      releasesWarn: at(24, { 18: 1 }),
      releasesDeny: at(24, { 18: 1 }),
    });
  });

  it('30d: 30 daily buckets aligned to UTC midnight; older events fall out', async () => {
    const res = await http().get('/v1/reports/activity?window=30d').set(AU);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ window: '30d', bucketSeconds: 86400, from: '2031-04-11T00:00:00.000Z', to: '2031-05-11T00:00:00.000Z' });
    expect(res.body.series.secretReads).toEqual(at(30, { 29: 2, 19: 1 }));
    expect(res.body.totals).toMatchObject({ secretReads: 3, denials: 2, releasesAllow: 1, releasesWarn: 1, releasesDeny: 1 });
  });

  it('is for auditors and admins only; a bad window is a 400', async () => {
    expectProblem(await http().get('/v1/reports/activity').set(W), 403);
    const token = await http().post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret });
    expect(token.status).toBe(200);
    expectProblem(await http().get('/v1/reports/activity').set(auth(token.body.access_token)), 403);
    expectProblem(await http().get('/v1/reports/activity'), 401);
    expectProblem(await http().get('/v1/reports/activity?window=week').set(AU), 400);
    expectProblem(await http().get('/v1/reports/activity?window=day&x=1').set(AU), 400);
    expect((await http().get('/v1/reports/activity?window=hour').set(auth(tb.adminKey))).status).toBe(200);
  });

  it('GET /v1/audit filters by source address, exactly or by prefix', async () => {
    const exact = await http().get('/v1/audit?sourceIp=10.1.2.3').set(AU);
    expect(exact.status, exact.text).toBe(200);
    expect(exact.body.items.length).toBe(5);
    expect(exact.body.items.every((e: any) => e.sourceIp === '10.1.2.3')).toBe(true);
    const prefix = await http().get('/v1/audit?sourceIp=192.168.*').set(AU);
    expect(prefix.body.items.map((e: any) => e.sourceIp)).toEqual(['192.168.7.9']);
    // LIKE wildcards are literal
    expect((await http().get('/v1/audit?sourceIp=10.1.2._').set(AU)).body.items).toEqual([]);
    expect((await http().get('/v1/audit?sourceIp=10.1.2.3&outcome=deny').set(AU)).body.items).toHaveLength(1);
    expectProblem(await http().get('/v1/audit?sourceIp=10.0.0.1%20OR%201').set(AU), 400);
  });

  it('exports a search as NDJSON or CSV, newest first, audited', async () => {
    const q = 'action=secret.read&since=2031-04-01T00:00:00Z&until=2031-05-11T00:00:00Z';
    const nd = await http().get(`/v1/reports/audit-events?${q}`).set(AU);
    expect(nd.status, nd.text).toBe(200);
    expect(nd.headers['content-type']).toMatch(/^application\/x-ndjson/);
    expect(nd.headers['content-disposition']).toContain('keywarden-audit-events.ndjson');
    const events = nd.text.trim().split('\n').map((l) => JSON.parse(l));
    // newest first by event number (the order of /v1/audit): the event of ten days ago was recorded last
    expect(events.map((e) => e.ts)).toEqual([T - 10 * DAY, T - 30_000, T - 30_000, T - 30_000]);
    expect(events[0].seq).toBeGreaterThan(events[1].seq);
    expect(events.every((e) => e.action === 'secret.read')).toBe(true);
    const limited = await http().get(`/v1/reports/audit-events?${q}&max=2`).set(AU);
    expect(limited.text.trim().split('\n')).toHaveLength(2);

    const csv = await http().get(`/v1/reports/audit-events?${q}&format=csv&outcome=deny`).set(AU);
    expect(csv.status).toBe(200);
    expect(csv.headers['content-type']).toMatch(/^text\/csv/);
    const lines = csv.text.split('\r\n').filter(Boolean);
    expect(lines[0]).toBe('seq,leaf_index,time,actor_kind,actor_id,actor_name,action,resource_kind,resource_name,outcome,reason,request_id,source_ip,user_agent,details');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toContain(',secret.read,secret,db.pass,deny,');
    expect(lines[1]).toContain(new Date(T - 30_000).toISOString());

    const exports = await http().get('/v1/audit?action=audit.export').set(AU);
    expect(exports.body.items[0].details).toMatchObject({ format: 'csv', filter: { action: 'secret.read', outcome: 'deny' } });
    expectProblem(await http().get('/v1/reports/audit-events').set(W), 403);
    expectProblem(await http().get('/v1/reports/audit-events?format=xml').set(AU), 400);
    expectProblem(await http().get('/v1/reports/audit-events?max=0').set(AU), 400);
  });

  it('GET /v1/audit/status: chain verdict, newest signed head and its age, queue, sink', async () => {
    await tb.broker.services.auditSequencer.flush();
    const res = await http().get('/v1/audit/status').set(AU);
    expect(res.status, res.text).toBe(200);
    expect(res.body.chain).toEqual({ status: 'ok', reason: null, firstBadLeaf: null, detectedAt: null });
    expect(res.body.checkpoint.treeSize).toBeGreaterThan(10);
    expect(res.body.checkpoint.ageSeconds).toBeGreaterThanOrEqual(0);
    expect(res.body.queued).toBe(0);
    expect(res.body.sink).toEqual({ configured: false, status: 'off', lastWriteAt: null, lastError: null });
    expectProblem(await http().get('/v1/audit/status').set(W), 403);
  });
});
