import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectNoSensitive, expectProblemCode, headSeq } from './audit-helpers.js';

const VALUE = 'role-boundary-secret-value-Zq81';

type Call = [method: 'get' | 'post' | 'put' | 'patch' | 'delete', path: string, body?: Record<string, unknown>];

const AUDIT_READS: Call[] = [
  ['get', '/v1/audit'],
  ['get', '/v1/audit/export'],
  ['post', '/v1/audit/verify', {}],
  ['get', '/v1/audit/checkpoints'],
  ['get', '/v1/reports/access'],
  ['get', '/v1/reports/expiring?before=2099-01-01T00:00:00Z'],
  ['get', '/v1/reports/stale-access?days=30'],
];

const METADATA_READS: Call[] = [
  ['get', '/v1/secrets'],
  ['get', '/v1/secrets/app.key'],
  ['get', '/v1/secrets/app.key/versions'],
  ['get', '/v1/groups'],
  ['get', '/v1/groups/app'],
  ['get', '/v1/clients'],
  ['get', '/v1/clients/app-client'],
];

const MUTATIONS: Call[] = [
  ['post', '/v1/secrets', { name: 'auditor.made', value: 'x-value-123' }],
  ['patch', '/v1/secrets/app.key', { description: 'changed' }],
  ['post', '/v1/secrets/app.key/versions', { value: 'other-value-123' }],
  ['post', '/v1/secrets/app.key/rollback', { version: 1 }],
  ['delete', '/v1/secrets/app.key'],
  ['post', '/v1/groups', { name: 'auditor-group' }],
  ['delete', '/v1/groups/app'],
  ['put', '/v1/groups/app/secrets', { remove: ['app.key'] }],
  ['put', '/v1/groups/app/clients', { remove: ['app-client'] }],
  ['post', '/v1/clients', { name: 'auditor-client' }],
  ['patch', '/v1/clients/app-client', { enabled: false }],
  ['delete', '/v1/clients/app-client'],
  ['put', '/v1/clients/app-client/groups', { remove: ['app'] }],
  ['post', '/v1/clients/app-client/secret'],
  ['post', '/v1/clients/app-client/bootstrap-tokens', { ttl: 60 }],
  ['get', '/v1/api-keys'],
  ['post', '/v1/api-keys', { name: 'escalate', role: 'admin' }],
  ['delete', '/v1/api-keys/bootstrap-admin'],
  ['post', '/v1/audit/checkpoints'],
  ['post', '/v1/jwt-keys/rotate'],
  ['post', '/v1/tokens/revoke', { jti: 'abc' }],
];

/** Who may read the log and the reports, and that auditors read metadata but never values. */
/** After refused calls, the log may only have grown by authorization-denial events. */
async function expectOnlyDenials(t: TestBroker, afterSeq: number, expected: number) {
  const rows = await t.broker.services.db('audit_events').where('seq', '>', afterSeq).orderBy('seq');
  expect(rows.map((r: any) => `${r.action}/${r.outcome}`)).toEqual(Array(expected).fill('authz.deny/deny'));
}

describe('audit role boundaries', () => {
  let tb: TestBroker;
  let keys: Record<'auditor' | 'writer' | 'signer', string>;
  let client: { token: string };

  const call = (key: string | undefined, [method, path, body]: Call) => {
    let req = tb.request[method](path);
    if (key) req = req.set(auth(key));
    return body ? req.send(body) : req;
  };

  beforeAll(async () => {
    tb = await startTestBroker();
    keys = { auditor: await tb.apiKey('auditor'), writer: await tb.apiKey('writer'), signer: await tb.apiKey('signer') };
    const W = auth(keys.writer);
    expect((await tb.request.post('/v1/groups').set(W).send({ name: 'app' })).status).toBe(201);
    expect((await tb.request.post('/v1/secrets').set(W).send({ name: 'app.key', value: VALUE, groups: ['app'] })).status).toBe(201);
    client = await tb.client('app-client', ['app']);
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('an auditor reads the log, exports, verifies, lists checkpoints and reads the reports', async () => {
    for (const c of AUDIT_READS) {
      const res = await call(keys.auditor, c);
      expect(res.status, `${c[0]} ${c[1]}: ${res.text?.slice(0, 200)}`).toBe(200);
    }
    const csv = await tb.request.get('/v1/reports/access').set(auth(keys.auditor)).set('Accept', 'text/csv');
    expect(csv.status).toBe(200);
  });

  it('an auditor reads secret metadata, but never a value', async () => {
    for (const c of METADATA_READS) {
      const res = await call(keys.auditor, c);
      expect(res.status, `${c[0]} ${c[1]}`).toBe(200);
      expectNoSensitive(res.text, [VALUE], `${c[1]} for an auditor`);
    }
    const before = await headSeq(tb);
    for (const path of ['/v1/secrets/app.key/content', '/v1/secrets/app.key/content?version=1']) {
      const res = await tb.request.get(path).set(auth(keys.auditor));
      expectProblemCode(res, 403, 'forbidden');
      expectNoSensitive(res.text, [VALUE], 'the 403');
    }
    // a client route is not an operator route
    expectProblemCode(await tb.request.get('/v1/client/secrets/app.key').set(auth(keys.auditor)), 403, 'forbidden');
    await expectOnlyDenials(tb, before, 3);
  });

  it('an auditor gets 403 on every mutation, and nothing changes', async () => {
    const before = await headSeq(tb);
    for (const c of MUTATIONS) {
      const res = await call(keys.auditor, c);
      expect(res.status, `${c[0]} ${c[1]}: ${res.text?.slice(0, 200)}`).toBe(403);
      expect(res.body.code).toBe('forbidden');
    }
    await expectOnlyDenials(tb, before, MUTATIONS.length);
    const W = auth(keys.writer);
    expect((await tb.request.get('/v1/secrets/app.key').set(W)).body).toMatchObject({ version: 1, latestVersion: 1, description: '', groups: ['app'] });
    expect((await tb.request.get('/v1/groups/app').set(W)).body).toMatchObject({ secrets: ['app.key'], clients: ['app-client'] });
    expect((await tb.request.get('/v1/clients/app-client').set(W)).body).toMatchObject({ enabled: true });
    expect((await tb.request.get('/v1/secrets/auditor.made').set(W)).status).toBe(404);
    expect((await tb.request.get('/v1/api-keys').set(auth(tb.adminKey))).body.items.map((k: any) => k.name)).not.toContain('escalate');
    // the client still reads with its old token (secret not rotated)
    expect((await tb.request.get('/v1/client/secrets/app.key').set(auth(client.token))).status).toBe(200);
  });

  it('writers, signers and clients get 403 on the log, the checkpoints and the reports', async () => {
    const all: Call[] = [...AUDIT_READS, ['post', '/v1/audit/checkpoints']];
    for (const [who, key] of [
      ['writer', keys.writer],
      ['signer', keys.signer],
      ['client', client.token],
    ] as const) {
      for (const c of all) {
        const res = await call(key, c);
        expect(res.status, `${who} ${c[0]} ${c[1]}: ${res.status}`).toBe(403);
        expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
        expect(res.text).not.toMatch(/"seq"/);
      }
    }
    const csv = await tb.request.get('/v1/reports/access').set(auth(keys.writer)).set('Accept', 'text/csv');
    expect(csv.status).toBe(403);
    expect(csv.text).not.toContain('app-client');
  });

  it('without credentials every audit route is a 401', async () => {
    for (const c of [...AUDIT_READS, ['post', '/v1/audit/checkpoints'] as Call]) {
      expect((await call(undefined, c)).status, `${c[0]} ${c[1]}`).toBe(401);
    }
  });

  it('an admin may do all of it', async () => {
    for (const c of [...AUDIT_READS, ['post', '/v1/audit/checkpoints'] as Call]) {
      const res = await call(tb.adminKey, c);
      expect([200, 201], `${c[0]} ${c[1]}`).toContain(res.status);
    }
    expect((await tb.request.get('/v1/secrets/app.key/content').set(auth(tb.adminKey))).status).toBe(200);
  });
});
