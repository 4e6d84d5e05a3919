import supertest from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * Issue 28: API keys were checked on every route without a limit (60 wrong keys, 60 × 401), so
 * the console login's per-address limit could be sidestepped through the API. Failed API keys now
 * count per source address in one bucket for every route, the Vault API and the console login.
 */
const HOST = 'console.test:8750';
const ORIGIN = `http://${HOST}`;
const wrongKey = (i: number) => `kw_${String(i).padStart(43, 'x')}`;

async function refusals(tb: TestBroker): Promise<number> {
  const metric = await tb.broker.services.metrics.registry.getSingleMetric('keywarden_rate_limit_refusals_total')!.get();
  return metric.values.find((v) => v.labels.scope === 'api-key')?.value ?? 0;
}

function expectRateLimited(res: supertest.Response, maxRetryAfter: number): number {
  const body = expectProblem(res, 429, 'rate_limited');
  const retryAfter = Number(res.headers['retry-after']);
  expect(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= maxRetryAfter, `Retry-After ${retryAfter}`).toBe(true);
  expect(body.retryAfter).toBe(retryAfter);
  return retryAfter;
}

describe('failed API keys are rate limited per source address (default limit)', () => {
  let tb: TestBroker;
  let now = Date.parse('2031-04-01T10:00:00.000Z');
  let http: supertest.Agent;

  beforeAll(async () => {
    // the default limit (50 per 60 s window): only the proxy setting, to tell addresses apart
    tb = await startTestBroker({ clock: () => now, env: { KEYWARDEN_TRUST_PROXY: 'loopback' } });
    http = supertest.agent(tb.broker.app);
    markSensitive(tb.adminKey);
  });
  afterAll(async () => {
    await tb?.close();
  });

  const from = (ip: string) => ({ 'X-Forwarded-For': ip });

  it('a burst of 60 wrong keys hits the limit: 401s, then 429 with Retry-After, the right key included; other addresses and client tokens unaffected', async () => {
    const token = (await tb.client('rl-bystander', [])).token;
    const statuses: number[] = [];
    let last: supertest.Response | undefined;
    for (let i = 0; i < 60; i++) {
      last = await http.get('/v1/secrets').set(from('203.0.113.7')).set(auth(wrongKey(i)));
      statuses.push(last.status);
    }
    expect(statuses.slice(0, 50).every((s) => s === 401), statuses.join(' ')).toBe(true);
    expect(statuses.slice(50).every((s) => s === 429), statuses.join(' ')).toBe(true);
    expectRateLimited(last!, 60);
    expect(await refusals(tb)).toBeGreaterThanOrEqual(10);
    // locked: the right key from that address waits too, on any route
    expectRateLimited(await http.get('/v1/groups').set(from('203.0.113.7')).set(auth(tb.adminKey)), 60);
    // another address is not affected, nor are client tokens from the guessing address
    expect((await http.get('/v1/secrets').set(from('203.0.113.8')).set(auth(tb.adminKey))).status).toBe(200);
    expect((await http.get('/v1/client/secrets').set(from('203.0.113.7')).set(auth(token))).status).toBe(200);
    // after the window the address may try again
    now += 61_000;
    expect((await http.get('/v1/secrets').set(from('203.0.113.7')).set(auth(tb.adminKey))).status).toBe(200);
  });

  it('successes in between do not reset the count: the limit is on the address', async () => {
    for (let i = 0; i < 25; i++) expectProblem(await http.get('/v1/secrets').set(from('203.0.113.9')).set(auth(wrongKey(i))), 401, 'invalid_api_key');
    expect((await http.get('/v1/secrets').set(from('203.0.113.9')).set(auth(tb.adminKey))).status).toBe(200);
    for (let i = 0; i < 25; i++) expectProblem(await http.get('/v1/secrets').set(from('203.0.113.9')).set(auth(wrongKey(i))), 401, 'invalid_api_key');
    expectRateLimited(await http.get('/v1/secrets').set(from('203.0.113.9')).set(auth(tb.adminKey)), 60);
    now += 61_000;
  });
});

describe('one API-key bucket per address for the API, the Vault API and the console login', () => {
  let tb: TestBroker;
  let now = Date.parse('2031-04-02T10:00:00.000Z');
  let http: supertest.Agent;
  let auditorKey: string;

  beforeAll(async () => {
    tb = await startTestBroker({
      clock: () => now,
      env: { KEYWARDEN_TRUST_PROXY: 'loopback', KEYWARDEN_AUTH_MAX_API_KEY_FAILURES_PER_ADDRESS: '4', KEYWARDEN_AUTH_MAX_FAILURES_PER_ADDRESS: '1000', KEYWARDEN_AUTH_FAILURE_WINDOW: '60' },
    });
    http = supertest.agent(tb.broker.app);
    auditorKey = await tb.apiKey('auditor');
    markSensitive(auditorKey);
  });
  afterAll(async () => {
    await tb?.close();
  });

  const consoleLogin = (ip: string, apiKey: string) => http.post('/v1/console/session').set('Host', HOST).set('Origin', ORIGIN).set('X-Forwarded-For', ip).send({ apiKey });

  it('wrong keys on the API lock the console login from that address (the console limit cannot be sidestepped)', async () => {
    for (let i = 0; i < 4; i++) expectProblem(await http.get('/v1/audit').set('X-Forwarded-For', '198.51.100.1').set(auth(wrongKey(i))), 401);
    expectRateLimited(await consoleLogin('198.51.100.1', auditorKey), 60);
    expect((await consoleLogin('198.51.100.2', auditorKey)).status).toBe(200);
    now += 61_000;
    expect((await consoleLogin('198.51.100.1', auditorKey)).status).toBe(200);
  });

  it('wrong keys at the console login count against the API from that address', async () => {
    for (let i = 0; i < 4; i++) expectProblem(await consoleLogin('198.51.100.3', wrongKey(i)), 401);
    expectRateLimited(await http.get('/v1/audit').set('X-Forwarded-For', '198.51.100.3').set(auth(auditorKey)), 60);
    now += 61_000;
  });

  it('the Vault API counts API keys in X-Vault-Token the same way, and answers 429 in Vault\'s shape', async () => {
    for (let i = 0; i < 4; i++) {
      const res = await http.get('/v1/secret/data/app/db').set('X-Forwarded-For', '198.51.100.4').set('X-Vault-Token', wrongKey(i));
      expect(res.status).toBe(403);
    }
    const limited = await http.get('/v1/secret/data/app/db').set('X-Forwarded-For', '198.51.100.4').set('X-Vault-Token', auditorKey);
    expect(limited.status).toBe(429);
    expect(limited.headers['content-type']).toBe('application/json');
    expect(Array.isArray(limited.body.errors)).toBe(true);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    // the native API from that address is locked too: one bucket
    expectRateLimited(await http.get('/v1/audit').set('X-Forwarded-For', '198.51.100.4').set(auth(auditorKey)), 60);
    now += 61_000;
  });

  it('bad access tokens (JWTs) are not API keys and are not counted: they cannot be guessed', async () => {
    for (let i = 0; i < 6; i++) expectProblem(await http.get('/v1/audit').set('X-Forwarded-For', '198.51.100.5').set(auth('eyJhbGciOiJFUzI1NiJ9.e30.x')), 401, 'invalid_token');
    expect((await http.get('/v1/audit').set('X-Forwarded-For', '198.51.100.5').set(auth(auditorKey))).status).toBe(200);
  });
});
