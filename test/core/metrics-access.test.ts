import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { capture } from '../support/audit-events.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblem, markSensitive } from './helpers.js';

/**
 * GET /metrics: public by default (KEYWARDEN_METRICS_AUTH=none), or behind an operator API key
 * of role admin or auditor (KEYWARDEN_METRICS_AUTH=api-key). Either way it carries no secret
 * names or values, client ids or secrets, tokens or keys.
 */
const SECRET_NAME = 'metrics.probe-secret-name';
const SECRET_VALUE = 'metrics-probe-secret-value-7f3a';

async function exercise(tb: TestBroker) {
  const a = auth(tb.adminKey);
  expect((await tb.request.post('/v1/groups').set(a).send({ name: 'metrics-group' })).status).toBe(201);
  expect((await tb.request.post('/v1/secrets').set(a).send({ name: SECRET_NAME, value: SECRET_VALUE, groups: ['metrics-group'] })).status).toBe(201);
  const client = await tb.client('metrics-probe-client', ['metrics-group']);
  markSensitive(SECRET_VALUE, client.clientSecret, client.token);
  const read = await tb.request.get(`/v1/client/secrets/${SECRET_NAME}`).set(auth(client.token));
  expect(read.status, read.text).toBe(200);
  // a failed lookup by name too: the raw path must not become a label
  expect((await tb.request.get('/v1/secrets/metrics.no-such-secret-name').set(a)).status).toBe(404);
  return client;
}

function expectNothingSensitive(text: string, values: string[]) {
  for (const v of values) expect(text.includes(v), `metrics contain ${v.slice(0, 12)}…`).toBe(false);
  expect(text).not.toContain('no-such-secret-name');
  expect(text).toMatch(/keywarden_http_request_duration_seconds_count\{[^}]*route="\/v1\/client\/secrets\/:name"/);
}

describe('KEYWARDEN_METRICS_AUTH', () => {
  it('defaults to none and accepts only none or api-key', () => {
    expect(loadConfig({}).metricsAuth).toBe('none');
    expect(loadConfig({ KEYWARDEN_METRICS_AUTH: 'api-key' }).metricsAuth).toBe('api-key');
    expect(() => loadConfig({ KEYWARDEN_METRICS_AUTH: 'token' })).toThrow(/KEYWARDEN_METRICS_AUTH/);
  });
});

describe('GET /metrics with KEYWARDEN_METRICS_AUTH=none (default)', () => {
  let tb: TestBroker;
  beforeAll(async () => {
    tb = await startTestBroker();
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('is served to anyone and leaks no names, values, credentials or tokens', async () => {
    const client = await exercise(tb);
    const res = await tb.request.get('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    expectNothingSensitive(res.text, [SECRET_NAME, SECRET_VALUE, client.clientId, client.clientSecret, client.token, tb.adminKey, 'metrics-probe-client']);
  });
});

describe('GET /metrics with KEYWARDEN_METRICS_AUTH=api-key', () => {
  let tb: TestBroker;
  let client: { clientId: string; clientSecret: string; token: string };
  beforeAll(async () => {
    tb = await startTestBroker({ env: { KEYWARDEN_METRICS_AUTH: 'api-key' } });
    client = await exercise(tb);
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('refuses anonymous callers and invalid keys with 401', async () => {
    expectProblem(await tb.request.get('/metrics'), 401, 'unauthenticated');
    expectProblem(await tb.request.get('/metrics').set(auth(`kw_${'A'.repeat(43)}`)), 401, 'invalid_api_key');
  });

  it('refuses writer and signer keys and client tokens with 403, audited', async () => {
    for (const role of ['writer', 'signer'] as const) {
      const key = await tb.apiKey(role);
      markSensitive(key);
      const { result: res, events } = await capture(tb, () => tb.request.get('/metrics').set(auth(key)));
      expectProblem(res, 403, 'forbidden');
      expect(events.map((e) => `${e.action}:${e.resourceName}`)).toEqual(['authz.deny:GET /metrics']);
    }
    expectProblem(await tb.request.get('/metrics').set(auth(client.token)), 403, 'forbidden');
  });

  it('serves admin and auditor keys, without sensitive content', async () => {
    const auditor = await tb.apiKey('auditor');
    markSensitive(auditor);
    for (const key of [tb.adminKey, auditor]) {
      const res = await tb.request.get('/metrics').set(auth(key));
      expect(res.status, res.text.slice(0, 200)).toBe(200);
      expect(res.headers['content-type']).toMatch(/^text\/plain/);
      expectNothingSensitive(res.text, [SECRET_NAME, SECRET_VALUE, client.clientId, client.clientSecret, client.token, tb.adminKey, auditor, 'metrics-probe-client']);
    }
  });

  it('leaves the other ops routes public', async () => {
    expect((await tb.request.get('/healthz')).status).toBe(200);
    expect((await tb.request.get('/readyz')).status).toBe(200);
    expect((await tb.request.get('/openapi.yaml')).status).toBe(200);
    expect((await tb.request.get('/docs')).status).toBe(200);
  });
});
