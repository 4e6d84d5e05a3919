import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import supertest from 'supertest';
import { expectProblem, markSensitive } from '../core/helpers.js';
import { bulkAuditLog } from '../support/audit-events.js';
import { bearer, startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * Issue 28, finding 1: an auditor's pass over the whole log (a verification, an export) must not
 * stop deliveries. On SQLite every read answers synchronously, so a pass that never gave the
 * event loop back held every request until it ended. The log here is large enough that a pass
 * takes a while; what is asserted is order (a delivery finished while the pass was still
 * running), never a duration.
 */

const EVENTS = 25_000;

/** Polls `probe` every 5 ms until it holds, at most `ms`. */
async function until(ms: number, probe: () => boolean | Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await probe()) return true;
    await new Promise((r) => setTimeout(r, 5));
  }
  return probe();
}

describe("an auditor's heavy pass over a large log", () => {
  let tb: TestBroker;
  let AU: Record<string, string>;
  let client: { clientId: string; clientSecret: string; token: string };
  let size: number;
  const heavy = () => tb.broker.services.auditHeavyPasses;

  beforeAll(async () => {
    // no background passes or sequencer runs of the broker's own: the only heavy pass is the test's
    tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_SEQUENCE_INTERVAL_MS: '0', KEYWARDEN_AUDIT_VERIFY_INTERVAL: '0', KEYWARDEN_AUDIT_FULL_VERIFY_INTERVAL: '0' } });
    const W = bearer(await tb.apiKey('writer'));
    AU = bearer(await tb.apiKey('auditor'));
    markSensitive('heavy-pass-value');
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 'g' })).status).toBe(201);
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'db', value: 'heavy-pass-value', groups: ['g'] })).status).toBe(201);
    client = await tb.client('app', ['g']);
    await tb.broker.services.auditSequencer.flush();
    size = await bulkAuditLog(tb, EVENTS);
    expect(size).toBeGreaterThanOrEqual(EVENTS);
  }, 120_000);
  afterAll(async () => {
    await tb?.close();
  });

  /** A client's delivery: a new token, then the secret. Resolves to whether both answered 200. */
  async function deliver(): Promise<boolean> {
    const token = await supertest(tb.broker.app).post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: client.clientId, client_secret: client.clientSecret });
    if (token.status !== 200) return false;
    const read = await supertest(tb.broker.app).get('/v1/client/secrets/db').set(bearer(token.body.access_token));
    return read.status === 200 && Buffer.from(read.body.content, 'base64').toString() === 'heavy-pass-value';
  }

  /** Starts a request, and answers a flag that turns true when its response has fully arrived. */
  function started(req: supertest.Test): { done: () => boolean; response: Promise<supertest.Response> } {
    let finished = false;
    const response = req.then((res) => {
      finished = true;
      return res;
    });
    return { done: () => finished, response };
  }

  it('deliveries and /healthz answer while a whole-log verification runs; a second pass meanwhile is 429 audit_pass_busy', async () => {
    const verify = started(tb.request.post('/v1/audit/verify').set(AU).send({}));
    // a pass that held the event loop would show here already: this poll would not run until it ended
    expect(await until(10_000, () => heavy().busy), 'the verification never started, or held the event loop until it ended').toBe(true);

    // all of these finish while the verification is still running (sent together: the pass's
    // length is the margin, and a fast machine shortens it)
    const [delivered, health, second, exported] = await Promise.all([
      deliver(),
      supertest(tb.broker.app).get('/healthz'),
      supertest(tb.broker.app).post('/v1/audit/verify').set(AU).send({}),
      supertest(tb.broker.app).get('/v1/audit/export').set(AU),
    ]);
    expect(verify.done(), 'a delivery, /healthz or a refusal waited for the verification').toBe(false);
    expect(delivered).toBe(true);
    expect(health.status).toBe(200);
    const problem = expectProblem(second, 429, 'audit_pass_busy');
    expect(Number(second.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(problem.detail).toMatch(/another verification or export/);
    expectProblem(exported, 429, 'audit_pass_busy');

    const res = await verify.response;
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ ok: true });
    expect(res.body.leavesChecked).toBeGreaterThanOrEqual(size);
    // the slot is free again
    expect(heavy().busy).toBe(false);
  });

  it('deliveries answer while the log is exported (GET /v1/audit/export), and the export is whole', async () => {
    const exported = started(tb.request.get('/v1/audit/export').set(AU).buffer(true).parse((res, cb) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => cb(null, text));
    }));
    expect(await until(10_000, () => heavy().busy), 'the export never started').toBe(true);
    const [delivered, health, search] = await Promise.all([deliver(), supertest(tb.broker.app).get('/healthz'), supertest(tb.broker.app).get('/v1/reports/audit-events').query({ max: 100_000 }).set(AU)]);
    expect(exported.done(), 'a delivery, /healthz or a refusal waited for the export').toBe(false);
    expect(delivered).toBe(true);
    expect(health.status).toBe(200);
    expectProblem(search, 429, 'audit_pass_busy');

    const res = await exported.response;
    expect(res.status).toBe(200);
    const lines = (res.body as string).trim().split('\n').map((l) => JSON.parse(l) as { type?: string });
    expect(lines[0]).toMatchObject({ type: 'export-header', fromLeaf: 0 });
    expect(lines[lines.length - 1]).toMatchObject({ type: 'checkpoint' });
    expect(lines.filter((l) => l.type === undefined).length).toBeGreaterThanOrEqual(size);
  });

  it('a pass given up (the watch at shutdown) stops at its next slice instead of running to the end', async () => {
    const stopping = new AbortController();
    const pass = tb.broker.services.auditVerifier.verify({ signal: stopping.signal });
    stopping.abort(new Error('the broker is stopping'));
    await expect(pass).rejects.toThrow('the broker is stopping');
    // a pass not given up runs to the end
    expect(await tb.broker.services.auditVerifier.verify({ signal: new AbortController().signal })).toMatchObject({ ok: true });
  });

  it("deliveries answer while the console's search export runs (GET /v1/reports/audit-events?max=100000)", async () => {
    const exported = started(tb.request.get('/v1/reports/audit-events').query({ max: 100_000 }).set(AU).buffer(true).parse((res, cb) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => cb(null, text));
    }));
    expect(await until(10_000, () => heavy().busy), 'the export never started').toBe(true);
    expect(await deliver()).toBe(true);
    expect(exported.done(), 'the delivery waited for the export').toBe(false);
    const res = await exported.response;
    expect(res.status).toBe(200);
    expect((res.body as string).trim().split('\n').length).toBeGreaterThanOrEqual(size);
  });
});

describe('the per-key budget of heavy passes', () => {
  let tb: TestBroker;

  beforeAll(async () => {
    // a budget of 1 ms: any pass uses it up
    tb = await startTestBroker({ env: { KEYWARDEN_AUDIT_PASS_BUDGET_MS: '1', KEYWARDEN_AUDIT_PASS_WINDOW: '600' } });
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('a key that used its budget gets 429 audit_pass_limit with Retry-After until its window ends; another key still may', async () => {
    const first = bearer(await tb.apiKey('auditor'));
    const other = bearer(await tb.apiKey('auditor'));
    expect((await tb.request.post('/v1/audit/verify').set(first).send({})).body).toMatchObject({ ok: true });

    const refused = await tb.request.post('/v1/audit/verify').set(first).send({});
    expectProblem(refused, 429, 'audit_pass_limit');
    const retryAfter = Number(refused.headers['retry-after']);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(600);
    // exports draw on the same budget, from the API and the console
    expectProblem(await tb.request.get('/v1/audit/export').set(first), 429, 'audit_pass_limit');
    expectProblem(await tb.request.get('/v1/reports/audit-events').set(first), 429, 'audit_pass_limit');
    // a refused pass records nothing: no audit.verify event beyond the first one
    const verifies = (await tb.request.get('/v1/audit').query({ action: 'audit.verify' }).set(other)).body.items;
    expect(verifies).toHaveLength(1);

    // the budget is the key's own
    expect((await tb.request.post('/v1/audit/verify').set(other).send({})).body).toMatchObject({ ok: true });
    // and it is kept in the database, for every instance, not in this process
    const row = await tb.broker.services.db('auth_failures').where('bucket', 'like', 'audit-pass:%');
    expect(row).toHaveLength(2);
  });
});
