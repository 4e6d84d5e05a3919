import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';

describe('operator API keys', () => {
  let tb: TestBroker;
  let now = Date.now();
  const clock = () => now;
  let admin: Record<string, string>;

  beforeAll(async () => {
    tb = await startTestBroker({ clock });
    admin = auth(tb.adminKey);
    markSensitive(tb.adminKey);
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('creates a key shown once, lists keys without key material', async () => {
    const res = await tb.request.post('/v1/api-keys').set(admin).send({ name: 'ci-writer', role: 'writer' });
    expect(res.status).toBe(201);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body).toMatchObject({ name: 'ci-writer', role: 'writer', expiresAt: null, revokedAt: null });
    expect(res.body.key).toMatch(/^kw_[A-Za-z0-9_-]{40,}$/);
    markSensitive(res.body.key);
    const list = await tb.request.get('/v1/api-keys').set(admin);
    expect(list.status).toBe(200);
    const item = list.body.items.find((i: any) => i.id === res.body.id);
    expect(item).toMatchObject({ name: 'ci-writer', role: 'writer' });
    expect(list.body.items.map((i: any) => i.id)).toContain('bootstrap-admin');
    const text = JSON.stringify(list.body);
    expect(text).not.toContain(res.body.key);
    expect(text).not.toContain('key_hash');
    expect(list.body.items.every((i: any) => !('key' in i))).toBe(true);
    // the new key works with its role
    expect((await tb.request.get('/v1/secrets').set(auth(res.body.key))).status).toBe(200);
    expectProblem(await tb.request.get('/v1/api-keys').set(auth(res.body.key)), 403, 'forbidden');
  });

  it.each([
    [{ name: 'x', role: 'root' }],
    [{ name: 'bad name', role: 'writer' }],
    [{ name: 'short-ttl', role: 'writer', ttlSeconds: 10 }],
    [{ name: 'scoped-writer', role: 'writer', scope: { keys: [], images: [] } }],
    [{ name: 'extra', role: 'writer', admin: true }],
  ])('rejects %j with 400', async (body) => {
    expectProblem(await tb.request.post('/v1/api-keys').set(admin).send(body), 400, 'invalid_request');
  });

  it('an expired key → 401 api_key_expired', async () => {
    const res = await tb.request.post('/v1/api-keys').set(admin).send({ name: 'short', role: 'auditor', ttlSeconds: 120 });
    expect(res.status).toBe(201);
    markSensitive(res.body.key);
    expect(res.body.expiresAt).toBe(new Date(now + 120_000).toISOString());
    expect((await tb.request.get('/v1/secrets').set(auth(res.body.key))).status).toBe(200);
    now += 119_000;
    expect((await tb.request.get('/v1/secrets').set(auth(res.body.key))).status).toBe(200);
    now += 2_000;
    const expired = await tb.request.get('/v1/secrets').set(auth(res.body.key));
    expectProblem(expired, 401, 'api_key_expired');
    expect(expired.text).not.toContain(res.body.key);
  });

  it('a revoked key → 401 api_key_revoked; revoking is idempotent; unknown id 404', async () => {
    const res = await tb.request.post('/v1/api-keys').set(admin).send({ name: 'to-revoke', role: 'writer' });
    markSensitive(res.body.key);
    expect((await tb.request.get('/v1/secrets').set(auth(res.body.key))).status).toBe(200);
    expect((await tb.request.delete(`/v1/api-keys/${res.body.id}`).set(admin)).status).toBe(204);
    expectProblem(await tb.request.get('/v1/secrets').set(auth(res.body.key)), 401, 'api_key_revoked');
    expect((await tb.request.delete(`/v1/api-keys/${res.body.id}`).set(admin)).status).toBe(204);
    const listed = (await tb.request.get('/v1/api-keys').set(admin)).body.items.find((i: any) => i.id === res.body.id);
    expect(listed.revokedAt).not.toBeNull();
    expectProblem(await tb.request.delete('/v1/api-keys/does-not-exist').set(admin), 404, 'not_found');
    expectProblem(await tb.request.delete('/v1/api-keys/bad.id!').set(admin), 400, 'invalid_request');
  });

  it('a revoked admin key cannot revoke anything', async () => {
    const res = await tb.request.post('/v1/api-keys').set(admin).send({ name: 'second-admin', role: 'admin' });
    markSensitive(res.body.key);
    await tb.request.delete(`/v1/api-keys/${res.body.id}`).set(admin);
    expectProblem(await tb.request.delete('/v1/api-keys/bootstrap-admin').set(auth(res.body.key)), 401, 'api_key_revoked');
    expect((await tb.request.get('/v1/api-keys').set(admin)).status).toBe(200);
  });
});

describe('JWT signing key rotation', () => {
  let tb: TestBroker;
  beforeAll(async () => {
    tb = await startTestBroker();
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('rotates: new tokens use the new kid, old tokens keep working, both keys are published', async () => {
    const c1 = await tb.client('rot-1');
    const kidOf = (t: string) => JSON.parse(Buffer.from(t.split('.')[0], 'base64url').toString()).kid;
    const oldKid = kidOf(c1.token);
    const res = await tb.request.post('/v1/jwt-keys/rotate').set(auth(tb.adminKey));
    expect(res.status).toBe(200);
    expect(res.body.retired).toEqual([oldKid]);
    expect(res.body.kid).not.toBe(oldKid);
    const jwks = await tb.request.get('/.well-known/jwks.json');
    expect(jwks.body.keys.map((k: any) => k.kid).sort()).toEqual([oldKid, res.body.kid].sort());
    expect(JSON.stringify(jwks.body)).not.toMatch(/"d":/);
    const c2 = await tb.client('rot-2');
    expect(kidOf(c2.token)).toBe(res.body.kid);
    expect((await tb.request.get('/v1/client/secrets').set(auth(c1.token))).status).toBe(200);
    expect((await tb.request.get('/v1/client/secrets').set(auth(c2.token))).status).toBe(200);
  });
});
