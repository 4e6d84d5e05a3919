/**
 * The auditors' console session (issue 16): an auditor's or admin's API key, presented once, for a
 * short-lived HttpOnly cookie; CSRF on every state change; read-only in effect; ended by logout,
 * by revoking the key and by expiry; no state in the process (a second instance accepts it).
 */
import supertest from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';
import { freshDatabase, startTestBroker, type TestBroker } from '../support/broker.js';

const HOST = 'console.test:8750';
const ORIGIN = `http://${HOST}`;
const TTL = 600;

/** The kw_console cookie of a response, and its attributes (lower-cased names). */
function sessionCookie(res: supertest.Response): { value: string; attrs: Record<string, string | true>; raw: string } | undefined {
  const raw = ([] as string[]).concat(res.headers['set-cookie'] ?? []).find((c) => c.startsWith('kw_console='));
  if (!raw) return undefined;
  const [pair, ...rest] = raw.split(';').map((s) => s.trim());
  const attrs: Record<string, string | true> = {};
  for (const a of rest) {
    const eq = a.indexOf('=');
    if (eq < 0) attrs[a.toLowerCase()] = true;
    else attrs[a.slice(0, eq).toLowerCase()] = a.slice(eq + 1);
  }
  return { value: pair!.slice('kw_console='.length), attrs, raw };
}

describe('console session', () => {
  let tb: TestBroker;
  let now = Date.parse('2031-03-01T09:00:00.000Z');
  let http: supertest.SuperTest<supertest.Test>;
  let auditorKey: string;
  let writerKey: string;
  let signerKey: string;
  const AU = () => auth(auditorKey);

  /** POST /v1/console/session as the console page would send it. */
  const login = (apiKey: string, headers: Record<string, string> = { Origin: ORIGIN }) =>
    http.post('/v1/console/session').set('Host', HOST).set(headers).send({ apiKey });
  const withCookie = (req: supertest.Test, cookie: string) => req.set('Host', HOST).set('Cookie', `kw_console=${cookie}`);

  async function loggedIn(apiKey: string) {
    const res = await login(apiKey);
    expect(res.status, res.text).toBe(200);
    const cookie = sessionCookie(res)!;
    return { cookie: cookie.value, csrf: res.body.csrfToken as string, body: res.body };
  }

  beforeAll(async () => {
    tb = await startTestBroker({ clock: () => now, env: { KEYWARDEN_CONSOLE_SESSION_TTL: String(TTL), KEYWARDEN_TRUST_PROXY: 'loopback' } });
    http = supertest(tb.broker.app) as unknown as supertest.SuperTest<supertest.Test>;
    auditorKey = await tb.apiKey('auditor');
    writerKey = await tb.apiKey('writer');
    signerKey = await tb.apiKey('signer', { scope: { keys: [], images: [] } });
    markSensitive(auditorKey, writerKey, signerKey, tb.adminKey);
  });
  afterAll(async () => {
    await tb?.close();
  });

  it('an auditor key logs in: session view, HttpOnly SameSite=Strict cookie for the configured lifetime, audited without the key', async () => {
    const res = await login(auditorKey);
    expect(res.status, res.text).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.body).toMatchObject({ role: 'auditor', expiresAt: new Date(now + TTL * 1000).toISOString() });
    expect(res.body.keyId).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(res.body.csrfToken).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    expect(res.text).not.toContain(auditorKey);
    const cookie = sessionCookie(res)!;
    expect(cookie, String(res.headers['set-cookie'])).toBeDefined();
    expect(cookie.attrs.httponly).toBe(true);
    expect(String(cookie.attrs.samesite).toLowerCase()).toBe('strict');
    expect(cookie.attrs.path).toBe('/');
    expect(cookie.attrs['max-age']).toBe(String(TTL));
    expect(cookie.attrs.secure).toBeUndefined(); // plain HTTP, no trusted proxy saying otherwise
    // the cookie is not the API key, nor an access token: a JWT for the console audience only
    expect(cookie.value).not.toContain(auditorKey);
    const payload = JSON.parse(Buffer.from(cookie.value.split('.')[1]!, 'base64url').toString());
    expect(payload.aud).toBe('keywarden-console');
    expect(payload.sub).toBe(res.body.keyId);
    // a console cookie is not a bearer token anywhere
    expectProblem(await http.get('/v1/audit').set(auth(cookie.value)), 401);

    const events = await http.get('/v1/audit?action=console.login').set(AU());
    const event = events.body.items.find((e: any) => e.outcome === 'allow' && e.actorId === res.body.keyId);
    expect(event).toMatchObject({ actorKind: 'operator', resourceKind: 'api-key', resourceName: res.body.keyId, details: { role: 'auditor' } });
    expect(JSON.stringify(events.body)).not.toContain(auditorKey);
    expect(JSON.stringify(events.body)).not.toContain(cookie.value);
  });

  it('an admin key logs in too', async () => {
    const { body } = await loggedIn(tb.adminKey);
    expect(body.role).toBe('admin');
  });

  it('writer, signer and client credentials cannot log in (403); an unknown or revoked key is a 401, audited with an HMAC', async () => {
    expectProblem(await login(writerKey), 403, 'console_role_forbidden');
    expectProblem(await login(signerKey), 403, 'console_role_forbidden');
    const client = await tb.client('console-client');
    markSensitive(client.token, client.clientSecret);
    expectProblem(await login(client.token), 403, 'console_role_forbidden');
    const unknown = `kw_${'x'.repeat(43)}`;
    markSensitive(unknown);
    expectProblem(await login(unknown), 401, 'invalid_api_key');
    expectProblem(await http.post('/v1/console/session').set('Host', HOST).set('Origin', ORIGIN).send({}), 400);
    expectProblem(await http.post('/v1/console/session').set('Host', HOST).set('Origin', ORIGIN).send({ apiKey: auditorKey, extra: 1 }), 400);

    const denied = await http.get('/v1/audit?action=console.login&outcome=deny').set(AU());
    expect(denied.body.items.filter((e: any) => e.reason === 'console_role_forbidden').length).toBeGreaterThanOrEqual(3);
    const failures = await http.get('/v1/audit?action=auth.failure').set(AU());
    const failure = failures.body.items.find((e: any) => e.details?.path === '/v1/console/session');
    expect(failure).toMatchObject({ outcome: 'deny', reason: 'invalid_api_key' });
    expect(failure.details.credential).toMatch(/^hmac-sha256:[0-9a-f]{64}$/);
    for (const body of [denied.text, failures.text]) {
      for (const secret of [unknown, writerKey, signerKey, client.token]) expect(body).not.toContain(secret);
    }
  });

  it('login CSRF: another origin, no origin at all, and a null origin are refused; Sec-Fetch-Site same-origin will do', async () => {
    expectProblem(await login(auditorKey, { Origin: 'http://evil.test' }), 403, 'csrf_rejected');
    expectProblem(await login(auditorKey, { Origin: 'http://console.test.evil.test:8750' }), 403, 'csrf_rejected');
    expectProblem(await login(auditorKey, { Origin: 'null' }), 403, 'csrf_rejected');
    expectProblem(await login(auditorKey, {}), 403, 'csrf_rejected');
    expectProblem(await login(auditorKey, { 'Sec-Fetch-Site': 'cross-site' }), 403, 'csrf_rejected');
    expect((await login(auditorKey, { 'Sec-Fetch-Site': 'same-origin' })).status).toBe(200);
  });

  it('the cookie authenticates GETs of auditor routes; the session route gives back the CSRF token', async () => {
    const s = await loggedIn(auditorKey);
    const audit = await withCookie(http.get('/v1/audit?limit=5'), s.cookie);
    expect(audit.status, audit.text).toBe(200);
    expect(Array.isArray(audit.body.items)).toBe(true);
    const session = await withCookie(http.get('/v1/console/session'), s.cookie);
    expect(session.status).toBe(200);
    expect(session.body).toEqual({ ...s.body });
    // role checks still apply: an auditor's cookie does not open admin routes
    expectProblem(await withCookie(http.get('/v1/api-keys'), s.cookie), 403);
    // no cookie: no session
    expectProblem(await http.get('/v1/console/session'), 401, 'session_expired');
  });

  it('a cookie request other than GET needs the session CSRF token, and may only verify the log or log out', async () => {
    const s = await loggedIn(tb.adminKey);
    expectProblem(await withCookie(http.post('/v1/audit/verify').send({}), s.cookie), 403, 'csrf_rejected');
    expectProblem(await withCookie(http.post('/v1/audit/verify').set('X-CSRF-Token', 'nope').send({}), s.cookie), 403, 'csrf_rejected');
    const other = await loggedIn(tb.adminKey);
    expectProblem(await withCookie(http.post('/v1/audit/verify').set('X-CSRF-Token', other.csrf).send({}), s.cookie), 403, 'csrf_rejected');
    const verified = await withCookie(http.post('/v1/audit/verify').set('X-CSRF-Token', s.csrf).send({}), s.cookie);
    expect(verified.status, verified.text).toBe(200);
    expect(verified.body.ok).toBe(true);
    // an admin's cookie writes nothing, even with the token
    expectProblem(await withCookie(http.post('/v1/secrets').send({ name: 'via-cookie', value: 'v', groups: [] }), s.cookie), 403, 'csrf_rejected');
    expectProblem(await withCookie(http.post('/v1/secrets').set('X-CSRF-Token', s.csrf).send({ name: 'via-cookie', value: 'v', groups: [] }), s.cookie), 403, 'console_read_only');
    expectProblem(await withCookie(http.delete('/v1/api-keys/whatever').set('X-CSRF-Token', s.csrf), s.cookie), 403, 'console_read_only');
    expect((await http.get('/v1/secrets/via-cookie').set(auth(tb.adminKey))).status).toBe(404);
    expectProblem(await withCookie(http.delete('/v1/console/session'), s.cookie), 403, 'csrf_rejected');
    const denials = await http.get('/v1/audit?action=authz.deny').set(AU());
    expect(denials.body.items.some((e: any) => e.reason === 'console_read_only' && e.resourceName === 'POST /v1/secrets')).toBe(true);
    // the same admin with its key in the Authorization header is not limited (the cookie is then ignored)
    const created = await withCookie(http.post('/v1/secrets').set(auth(tb.adminKey)).send({ name: 'via-header', value: 'v1', groups: [] }), 'garbage');
    expect(created.status, created.text).toBe(201);
  });

  it("an admin's session reads only what an auditor may: no secret values, no API keys", async () => {
    const s = await loggedIn(tb.adminKey);
    expect((await withCookie(http.get('/v1/console/session'), s.cookie)).body.role).toBe('admin');
    expect((await http.post('/v1/secrets').set(auth(tb.adminKey)).send({ name: 'admin-session-value', value: 'never-through-a-cookie-77', groups: [] })).status).toBe(201);
    // with the key itself the admin reads the value; through the session it is the auditor's view
    expect((await http.get('/v1/secrets/admin-session-value/content').set(auth(tb.adminKey))).status).toBe(200);
    const content = await withCookie(http.get('/v1/secrets/admin-session-value/content'), s.cookie);
    expectProblem(content, 403);
    expect(content.text).not.toContain('never-through-a-cookie-77');
    expectProblem(await withCookie(http.get('/v1/api-keys'), s.cookie), 403);
    expect((await withCookie(http.get('/v1/secrets/admin-session-value'), s.cookie)).status).toBe(200);
  });

  it('logout ends the session everywhere and clears the cookie; the old cookie is refused and cleared', async () => {
    const s = await loggedIn(auditorKey);
    const out = await withCookie(http.delete('/v1/console/session').set('X-CSRF-Token', s.csrf), s.cookie);
    expect(out.status, out.text).toBe(204);
    const cleared = sessionCookie(out)!;
    expect(cleared.value).toBe('');
    expect(cleared.attrs['max-age']).toBe('0');
    const after = await withCookie(http.get('/v1/audit'), s.cookie);
    expectProblem(after, 401, 'session_expired');
    expect(sessionCookie(after)?.attrs['max-age']).toBe('0');
    expectProblem(await withCookie(http.get('/v1/console/session'), s.cookie), 401, 'session_expired');
    const events = await http.get('/v1/audit?action=console.logout').set(AU());
    expect(events.body.items[0]).toMatchObject({ outcome: 'allow', actorId: s.body.keyId });
    // a stale cookie does not stand in the way of logging in again
    const again = await http.post('/v1/console/session').set('Host', HOST).set('Origin', ORIGIN).set('Cookie', `kw_console=${s.cookie}`).send({ apiKey: auditorKey });
    expect(again.status).toBe(200);
  });

  it('revoking the API key ends its sessions at once', async () => {
    const key = await tb.apiKey('auditor');
    markSensitive(key);
    const s = await loggedIn(key);
    expect((await withCookie(http.get('/v1/audit'), s.cookie)).status).toBe(200);
    expect((await http.delete(`/v1/api-keys/${s.body.keyId}`).set(auth(tb.adminKey))).status).toBe(204);
    expectProblem(await withCookie(http.get('/v1/audit'), s.cookie), 401, 'session_expired');
    expectProblem(await login(key), 401, 'api_key_revoked');
  });

  it('the session expires after its lifetime', async () => {
    const s = await loggedIn(auditorKey);
    now += (TTL - 10) * 1000;
    expect((await withCookie(http.get('/v1/console/session'), s.cookie)).status).toBe(200);
    now += 20_000;
    expectProblem(await withCookie(http.get('/v1/console/session'), s.cookie), 401, 'session_expired');
    expectProblem(await withCookie(http.get('/v1/audit'), s.cookie), 401, 'session_expired');
  });

  it('garbage, tampered and foreign cookies are refused with 401 session_expired', async () => {
    const s = await loggedIn(auditorKey);
    expectProblem(await withCookie(http.get('/v1/audit'), 'garbage'), 401, 'session_expired');
    const [h, p, sig] = s.cookie.split('.');
    const payload = JSON.parse(Buffer.from(p!, 'base64url').toString());
    const tampered = [h, Buffer.from(JSON.stringify({ ...payload, sub: 'bootstrap-admin' })).toString('base64url'), sig].join('.');
    expectProblem(await withCookie(http.get('/v1/audit'), tampered), 401, 'session_expired');
    // an access token (audience <issuer>/v1) is no console session
    const client = await tb.client('cookie-client');
    expectProblem(await withCookie(http.get('/v1/audit'), client.token), 401, 'session_expired');
  });

  it('Secure when the request came over TLS (through a trusted proxy)', async () => {
    const res = await login(auditorKey, { Origin: `https://${HOST}`, 'X-Forwarded-Proto': 'https' });
    expect(res.status, res.text).toBe(200);
    expect(sessionCookie(res)!.attrs.secure).toBe(true);
  });

  it('KEYWARDEN_CONSOLE_SESSION_TTL: 900 s by default, at most 12 hours', () => {
    const base = { KEYWARDEN_DATA_DIR: '/tmp/kw-console-config', KEYWARDEN_ROOT_KEY: Buffer.alloc(32).toString('base64') };
    expect(loadConfig(base).console.sessionTtlSeconds).toBe(900);
    expect(loadConfig({ ...base, KEYWARDEN_CONSOLE_SESSION_TTL: '43200' }).console.sessionTtlSeconds).toBe(43_200);
    expect(() => loadConfig({ ...base, KEYWARDEN_CONSOLE_SESSION_TTL: '43201' })).toThrow(/KEYWARDEN_CONSOLE_SESSION_TTL/);
    expect(() => loadConfig({ ...base, KEYWARDEN_CONSOLE_SESSION_TTL: '0' })).toThrow(/KEYWARDEN_CONSOLE_SESSION_TTL/);
  });
});

describe('console sessions across instances', () => {
  it('two brokers on one database accept each other\'s sessions, and a logout on one ends it on the other', async () => {
    const db = freshDatabase();
    const rootKey = Buffer.alloc(32, 7).toString('base64');
    const a = await startTestBroker({ db, rootKey, keepDatabase: true });
    const b = await startTestBroker({ db, rootKey, keepDatabase: true });
    try {
      const key = await a.apiKey('auditor');
      const res = await supertest(a.broker.app).post('/v1/console/session').set('Host', HOST).set('Origin', ORIGIN).send({ apiKey: key });
      expect(res.status, res.text).toBe(200);
      const cookie = `kw_console=${sessionCookie(res)!.value}`;
      const onB = await supertest(b.broker.app).get('/v1/console/session').set('Cookie', cookie);
      expect(onB.status, onB.text).toBe(200);
      expect(onB.body.keyId).toBe(res.body.keyId);
      const out = await supertest(b.broker.app).delete('/v1/console/session').set('Cookie', cookie).set('X-CSRF-Token', res.body.csrfToken);
      expect(out.status, out.text).toBe(204);
      expectProblem(await supertest(a.broker.app).get('/v1/audit').set('Cookie', cookie), 401, 'session_expired');
    } finally {
      await b.close();
      await a.close();
      await db.drop();
    }
  });
});

describe('console login rate limit', () => {
  it('refuses logins from an address after its failures (429 with Retry-After), apart from other addresses and the token endpoint', async () => {
    let now = Date.parse('2031-03-01T09:00:00.000Z');
    const tb = await startTestBroker({
      clock: () => now,
      env: { KEYWARDEN_TRUST_PROXY: 'loopback', KEYWARDEN_AUTH_MAX_FAILURES_PER_ADDRESS: '3', KEYWARDEN_AUTH_FAILURE_WINDOW: '60' },
    });
    try {
      const http = supertest(tb.broker.app);
      const key = await tb.apiKey('auditor');
      const wrong = `kw_${'x'.repeat(40)}`;
      markSensitive(key, wrong);
      const from = (ip: string, apiKey: string) =>
        http.post('/v1/console/session').set('Host', HOST).set('Origin', ORIGIN).set('X-Forwarded-For', ip).send({ apiKey });
      for (let i = 0; i < 3; i++) expectProblem(await from('203.0.113.9', wrong), 401);
      // the right key from the guessing address waits too: the limit is on the address, not the key
      const limited = await from('203.0.113.9', key);
      expectProblem(limited, 429, 'rate_limited');
      expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
      expect(Number(limited.headers['retry-after'])).toBeLessThanOrEqual(60);
      // another address logs in; the guessing address's token requests are not counted against it
      expect((await from('203.0.113.10', key)).status).toBe(200);
      const token = await http.post('/v1/auth/token').set('X-Forwarded-For', '203.0.113.9').type('form').send({ grant_type: 'client_credentials', client_id: 'nobody', client_secret: 'nothing' });
      expect(token.status, token.text).toBe(401);
      // after the window, the address may try again
      now += 61_000;
      expect((await from('203.0.113.9', key)).status).toBe(200);
    } finally {
      await tb.close();
    }
  });
});
