import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen, type RunningServer } from '../../src/http/server.js';
import { ListRequestRewriter, withListQuery } from '../../src/http/list-method.js';
import { problemFromDomainError, ProblemError } from '../../src/http/problem.js';
import { vaultErrorsOf, vaultStatusOf } from '../../src/http/vault-errors.js';
import { ConflictError, NotFoundError, PreconditionFailedError } from '../../src/core/errors.js';
import { auth, markSensitive, remaining } from '../core/helpers.js';
import { capture } from '../support/audit-events.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { createCa, issue, writePems } from '../support/pki.js';

/** Vault's error shape: application/json with an `errors` array of strings, never a problem document. */
function expectVaultError(res: { status: number; headers: Record<string, string>; body: any }, status: number, first?: string | RegExp) {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  // exactly this: hvac reads `errors` only from a response whose Content-Type is the bare media type
  expect(res.headers['content-type']).toBe('application/json');
  expect(Object.keys(res.body)).toEqual(expect.arrayContaining(['errors']));
  expect(res.body.type).toBeUndefined();
  expect(Array.isArray(res.body.errors) && res.body.errors.every((e: unknown) => typeof e === 'string')).toBe(true);
  if (first !== undefined) {
    if (typeof first === 'string') expect(res.body.errors[0]).toBe(first);
    else expect(res.body.errors[0]).toMatch(first);
  }
  return res.body as { errors: string[]; warnings?: string[] };
}

const vaultToken = (token: string) => ({ 'X-Vault-Token': token });

describe('Vault-compatible auth, sys and errors', () => {
  let tb: TestBroker;
  let writer: Record<string, string>;
  let now = Date.now();
  const clock = () => now;
  let app: { clientId: string; clientSecret: string };

  beforeAll(async () => {
    tb = await startTestBroker({ clock, env: { KEYWARDEN_ACCESS_TOKEN_TTL: '900', KEYWARDEN_ACCESS_TOKEN_MAX_TTL: '3600' } });
    writer = auth(await tb.apiKey('writer'));
    await tb.request.post('/v1/groups').set(writer).send({ name: 'payments' });
    await tb.request.post('/v1/groups').set(writer).send({ name: 'shared' });
    await tb.request.post('/v1/secrets').set(writer).send({ name: 'db.password', value: 'hunter2', groups: ['payments'] });
    const res = await tb.request.post('/v1/clients').set(writer).send({ name: 'billing', groups: ['payments', 'shared'] });
    expect(res.status).toBe(201);
    app = { clientId: res.body.clientId, clientSecret: res.body.clientSecret };
    markSensitive(app.clientSecret);
  });
  afterAll(async () => {
    await tb?.close();
  });

  const login = () => tb.request.post('/v1/auth/approle/login').send({ role_id: app.clientId, secret_id: app.clientSecret });

  it('AppRole login answers Vault\'s auth block for the client, audited as a client_credentials issue', async () => {
    const { result: res, events } = await capture(tb, () => login());
    expect(res.status, res.text).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const a = res.body.auth;
    expect(a).toMatchObject({ renewable: true, lease_duration: 900, metadata: { role_name: 'billing' }, entity_id: app.clientId, token_type: 'service' });
    expect([...a.policies].sort()).toEqual(['payments', 'shared']);
    expect(a.token_policies).toEqual(a.policies);
    expect(a.client_token).toMatch(/^eyJ/);
    expect(res.body).toMatchObject({ data: null, wrap_info: null, lease_id: '' });
    // the token is a real Keywarden client token: it reads the native delivery route
    expect((await tb.request.get('/v1/client/secrets/db.password').set(auth(a.client_token))).status).toBe(200);
    const issue = events.find((e) => e.action === 'auth.token.issue');
    expect(issue?.details).toMatchObject({ grantType: 'client_credentials', jti: a.accessor });
  });

  it('a wrong secret_id is Vault\'s 400 "invalid role or secret ID", audited and rate limited like the token endpoint', async () => {
    const { result: res, events } = await capture(tb, () => tb.request.post('/v1/auth/approle/login').send({ role_id: app.clientId, secret_id: 'wrong' }));
    expectVaultError(res, 400, 'invalid role or secret ID');
    expect(events.some((e) => e.action === 'auth.failure' && e.outcome === 'deny')).toBe(true);
    expectVaultError(await tb.request.post('/v1/auth/approle/login').send({ role_id: app.clientId }), 400, 'missing secret_id');
    expectVaultError(await tb.request.post('/v1/auth/approle/login').set('Content-Type', 'application/json').send('{"role_id":'), 400);
  });

  it('AppRole login ignores any token sent with it (expired, revoked, garbage; X-Vault-Token or Bearer), as Vault does', async () => {
    const expired = (await login()).body.auth.client_token as string;
    const revoked = (await login()).body.auth.client_token as string;
    expect((await tb.request.post('/v1/auth/token/revoke-self').set(vaultToken(revoked))).status).toBe(204);
    const t0 = now;
    now += 910_000; // past exp and the 5 s clock tolerance
    try {
      expectVaultError(await tb.request.get('/v1/auth/token/lookup-self').set(vaultToken(expired)), 403, 'permission denied');
      const stale = [expired, revoked, 'eyJhbGciOiJFUzI1NiJ9.e30.x', `kw_${'A'.repeat(43)}`];
      for (const token of stale) {
        for (const header of [vaultToken(token), auth(token)]) {
          const res = await tb.request.post('/v1/auth/approle/login').set(header).send({ role_id: app.clientId, secret_id: app.clientSecret });
          expect(res.status, res.text).toBe(200);
          // the new token is what counts
          expect((await tb.request.get('/v1/auth/token/lookup-self').set(vaultToken(res.body.auth.client_token))).status).toBe(200);
        }
      }
      // ignoring the token does not make a wrong secret right
      expectVaultError(await tb.request.post('/v1/auth/approle/login').set(vaultToken(expired)).send({ role_id: app.clientId, secret_id: 'wrong' }), 400, 'invalid role or secret ID');
    } finally {
      now = t0;
    }
  });

  it('lookup-self describes the token from X-Vault-Token and from Authorization: Bearer alike', async () => {
    const token = (await login()).body.auth.client_token as string;
    const viaVault = await tb.request.get('/v1/auth/token/lookup-self').set(vaultToken(token));
    expect(viaVault.status, viaVault.text).toBe(200);
    expect(viaVault.body.data).toMatchObject({ id: token, display_name: 'approle-billing', ttl: remaining(900), renewable: true, path: 'auth/approle/login', meta: { role_name: 'billing' } });
    expect([...viaVault.body.data.policies].sort()).toEqual(['payments', 'shared']);
    const viaBearer = await tb.request.get('/v1/auth/token/lookup-self').set(auth(token));
    expect(viaBearer.body.data).toEqual(viaVault.body.data);
    // X-Vault-Token wins over Authorization, as in Vault
    expectVaultError(await tb.request.get('/v1/auth/token/lookup-self').set(vaultToken('not-a-token')).set(auth(token)), 403, 'permission denied');
    // an operator API key is a Vault token too (hvac's is_authenticated() asks lookup-self)
    const op = await tb.request.get('/v1/auth/token/lookup-self').set(vaultToken(writer.Authorization.slice(7)));
    expect(op.status).toBe(200);
    expect(op.body.data).toMatchObject({ policies: ['writer'], renewable: false, ttl: 0 });
  });

  it('no, a bad, or an expired token is 403 permission denied (Vault never answers 401), audited as auth.failure', async () => {
    expectVaultError(await tb.request.get('/v1/auth/token/lookup-self'), 403, 'permission denied');
    const { result: bad, events } = await capture(tb, () => tb.request.get('/v1/auth/token/lookup-self').set(vaultToken('eyJhbGciOiJFUzI1NiJ9.e30.x')));
    const body = expectVaultError(bad, 403, 'permission denied');
    expect(body.errors.length).toBe(2);
    expect(bad.headers['www-authenticate']).toBeUndefined();
    expect(events.some((e) => e.action === 'auth.failure')).toBe(true);
    const token = (await login()).body.auth.client_token as string;
    const t0 = now;
    now += 910_000; // past exp and the 5 s clock tolerance
    try {
      expectVaultError(await tb.request.get('/v1/auth/token/lookup-self').set(vaultToken(token)), 403, 'permission denied');
    } finally {
      now = t0;
    }
  });

  it('renew-self mints a new token within the max TTL; the chain ends KEYWARDEN_ACCESS_TOKEN_MAX_TTL after the login', async () => {
    const t0 = now;
    try {
      const first = (await login()).body.auth;
      now = t0 + 600_000;
      const { result: renewed, events } = await capture(tb, () => tb.request.post('/v1/auth/token/renew-self').set(vaultToken(first.client_token)).send({ increment: '30m' }));
      expect(renewed.status, renewed.text).toBe(200);
      const second = renewed.body.auth;
      expect(second.client_token).not.toBe(first.client_token);
      expect(second.lease_duration).toBe(1800);
      expect(renewed.body.warnings).toBeNull();
      expect(events.find((e) => e.action === 'auth.token.issue')?.details).toMatchObject({ grantType: 'vault:renew-self', renewedFrom: first.accessor, jti: second.accessor });
      // the token it replaced stays valid until its own expiry (hvac callers may still hold it)
      expect((await tb.request.get('/v1/auth/token/lookup-self').set(vaultToken(first.client_token))).status).toBe(200);
      // 2300 s after the login, 1300 s of the hour are left: capped, with Vault's warning
      now = t0 + 2_300_000;
      const capped = await tb.request.post('/v1/auth/token/renew-self').set(vaultToken(second.client_token)).send({ increment: 3600 });
      expect(capped.status, capped.text).toBe(200);
      expect(capped.body.auth.lease_duration).toBe(1300);
      expect(capped.body.warnings[0]).toMatch(/capped/);
      const lookup = await tb.request.get('/v1/auth/token/lookup-self').set(vaultToken(capped.body.auth.client_token));
      expect(lookup.body.data).toMatchObject({ creation_time: Math.floor(t0 / 1000), ttl: 1300 });
      // the last token of the chain expires when the hour ends: nothing is left to renew, log in again
      now = t0 + 3_601_000;
      expectVaultError(await tb.request.post('/v1/auth/token/renew-self').set(vaultToken(capped.body.auth.client_token)).send({}), 403, 'permission denied');
    } finally {
      now = t0;
    }
    const fresh = (await login()).body.auth;
    expectVaultError(await tb.request.post('/v1/auth/token/renew-self').set(vaultToken(fresh.client_token)).send({ increment: 'forever' }), 400, /increment/);
    // operators have nothing to renew: the route is for clients (authz.deny, Vault's 403)
    const { result: denied, events: denials } = await capture(tb, () => tb.request.post('/v1/auth/token/renew-self').set(writer).send({}));
    expectVaultError(denied, 403, 'permission denied');
    expect(denials.some((e) => e.action === 'authz.deny')).toBe(true);
  });

  it('revoke-self revokes the token\'s jti (204, token.revoke audited); the token is dead afterwards', async () => {
    const a = (await login()).body.auth;
    const { result: res, events } = await capture(tb, () => tb.request.post('/v1/auth/token/revoke-self').set(vaultToken(a.client_token)));
    expect(res.status).toBe(204);
    expect(events.find((e) => e.action === 'token.revoke')?.resourceName).toBe(a.accessor);
    expectVaultError(await tb.request.get('/v1/auth/token/lookup-self').set(vaultToken(a.client_token)), 403, 'permission denied');
    expect((await tb.request.get('/v1/client/secrets/db.password').set(auth(a.client_token))).status).toBe(401);
  });

  it('unwrap: a bootstrap token unwraps once into a login; the second unwrap fails as in Vault and flags it compromised', async () => {
    const created = await tb.request.post('/v1/clients/billing/bootstrap-tokens').set(writer).send({});
    expect(created.status).toBe(201);
    const wrapping = created.body.token as string;
    markSensitive(wrapping);
    const first = await tb.request.post('/v1/sys/wrapping/unwrap').set(vaultToken(wrapping));
    expect(first.status, first.text).toBe(200);
    const unwrapped = first.body.auth;
    expect(unwrapped).toMatchObject({ metadata: { role_name: 'billing' }, renewable: true });
    expect((await tb.request.get('/v1/client/secrets/db.password').set(auth(unwrapped.client_token))).status).toBe(200);

    // second presentation (in the body, as hvac's sys.unwrap(token) sends it)
    const { result: again, events } = await capture(tb, () => tb.request.post('/v1/sys/wrapping/unwrap').send({ token: wrapping }));
    expectVaultError(again, 400, 'wrapping token is not valid or does not exist');
    const alert = events.find((e) => e.action === 'auth.bootstrap.reuse');
    expect(alert?.details).toMatchObject({ alert: true, revokedJti: unwrapped.accessor });
    const listed = await tb.request.get('/v1/clients/billing/bootstrap-tokens').set(writer);
    expect(listed.body.items.find((i: { accessor: string }) => i.accessor === created.body.accessor)).toMatchObject({ compromised: true });
    // what the first unwrap issued is revoked, as on the native bootstrap grant
    expect((await tb.request.get('/v1/client/secrets/db.password').set(auth(unwrapped.client_token))).status).toBe(401);
    expectVaultError(await tb.request.post('/v1/sys/wrapping/unwrap').send({ token: 'kwb_unknown' }), 400, 'wrapping token is not valid or does not exist');
    expectVaultError(await tb.request.post('/v1/sys/wrapping/unwrap').send({}), 400, /no wrapping token/);
  });

  it('sys/health maps readiness to Vault\'s codes and honours activecode/sealedcode', async () => {
    const ok = await tb.request.get('/v1/sys/health');
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ initialized: true, sealed: false, standby: false });
    expect((await tb.request.get('/v1/sys/health?activecode=204')).status).toBe(204);
    expectVaultError(await tb.request.get('/v1/sys/health?activecode=abc'), 400);
    // not ready (the audit chain found broken): sealed, 503 or the sealedcode asked for
    const chain = tb.broker.services.auditChain as unknown as { status: string };
    const before = chain.status;
    chain.status = 'broken';
    try {
      const down = await tb.request.get('/v1/sys/health');
      expect(down.status).toBe(503);
      expect(down.body).toMatchObject({ sealed: true, keywarden_checks: { auditChain: 'broken' } });
      expect((await tb.request.get('/v1/sys/health?sealedcode=299')).status).toBe(299);
    } finally {
      chain.status = before;
    }
  });

  it('sys/mounts and sys/internal/ui/mounts describe one KV v2 mount at KEYWARDEN_VAULT_KV_MOUNT', async () => {
    const mounts = await tb.request.get('/v1/sys/mounts');
    expect(mounts.status).toBe(200);
    expect(mounts.body.data['secret/']).toMatchObject({ type: 'kv', options: { version: '2' } });
    expect(mounts.body['secret/']).toEqual(mounts.body.data['secret/']);
    const ui = await tb.request.get('/v1/sys/internal/ui/mounts/secret');
    expect(ui.body.data).toMatchObject({ path: 'secret/', type: 'kv', options: { version: '2' } });
    expectVaultError(await tb.request.get('/v1/sys/internal/ui/mounts/other'), 400, /no mount/);
  });

  it('errors keep their shape per API: Vault paths answer Vault errors, native paths problem+json', async () => {
    expectVaultError(await tb.request.get('/v1/sys/nothing-here'), 404, /unsupported path/);
    // a Vault path with an operation it does not support: Vault's 405, with Allow
    const wrongMethod = await tb.request.delete('/v1/sys/health');
    expectVaultError(wrongMethod, 405, /DELETE is not supported on \/v1\/sys\/health/);
    expect(wrongMethod.headers.allow).toBe('GET, HEAD');
    const native = await tb.request.get('/v1/secrets/x').set(auth('eyJhbGciOiJFUzI1NiJ9.e30.x'));
    expect(native.status).toBe(401);
    expect(native.headers['content-type']).toMatch(/^application\/problem\+json/);
    // X-Vault-Token means nothing to the native API
    const t = (await login()).body.auth.client_token as string;
    expect((await tb.request.get('/v1/client/secrets/db.password').set(vaultToken(t))).status).toBe(401);
    // the native token endpoint (same /v1/auth/token prefix) is untouched
    const tokenRes = await tb.request.post('/v1/auth/token').type('form').send({ grant_type: 'client_credentials', client_id: app.clientId, client_secret: 'wrong' });
    expect(tokenRes.status).toBe(401);
    expect(tokenRes.headers['content-type']).toMatch(/^application\/problem\+json/);
  });

  it('a 429 keeps Vault\'s shape and Retry-After', async () => {
    const res = await tb.request.post('/v1/clients').set(writer).send({ name: 'victim', groups: [] });
    let last: any;
    for (let i = 0; i < 40; i++) {
      last = await tb.request.post('/v1/auth/approle/login').set('X-Forwarded-For', '10.0.0.9').send({ role_id: res.body.clientId, secret_id: `wrong-${i}` });
      if (last.status === 429) break;
    }
    expectVaultError(last, 429);
    expect(Number(last.headers['retry-after'])).toBeGreaterThan(0);
  });
});

describe('Vault authorization matrix (auth and sys routes)', () => {
  type Caller = 'anonymous' | 'badApiKey' | 'badJwt' | 'client' | 'auditor' | 'writer' | 'admin';
  const CALLERS: Caller[] = ['anonymous', 'badApiKey', 'badJwt', 'client', 'auditor', 'writer', 'admin'];
  // `who`: which callers get past authorization (the probe status proves it); everyone else gets
  // Vault's 403 "permission denied". A public route answers every caller with a valid or no token;
  // an ops route (health, mount discovery) and a login path ignore tokens altogether, as /healthz
  // and /readyz do and as Vault's login paths do
  const ROUTES: Array<{ method: 'get' | 'post'; path: string; body?: object; who: 'ops' | 'login' | 'public' | 'client' | 'authenticated'; probe: number }> = [
    { method: 'post', path: '/v1/auth/approle/login', body: {}, who: 'login', probe: 400 },
    { method: 'get', path: '/v1/auth/token/lookup-self', who: 'authenticated', probe: 200 },
    { method: 'post', path: '/v1/auth/token/renew-self', body: { increment: 'never' }, who: 'client', probe: 400 },
    { method: 'post', path: '/v1/auth/token/revoke-self', body: {}, who: 'client', probe: 204 },
    { method: 'post', path: '/v1/sys/wrapping/unwrap', body: {}, who: 'public', probe: 400 },
    { method: 'get', path: '/v1/sys/health', who: 'ops', probe: 200 },
    { method: 'get', path: '/v1/sys/mounts', who: 'ops', probe: 200 },
    { method: 'get', path: '/v1/sys/internal/ui/mounts/secret', who: 'ops', probe: 200 },
  ];
  let tb: TestBroker;
  const creds: Partial<Record<Caller, string>> = {};

  beforeAll(async () => {
    tb = await startTestBroker();
    creds.auditor = await tb.apiKey('auditor');
    creds.writer = await tb.apiKey('writer');
    creds.admin = tb.adminKey;
    creds.badApiKey = `kw_${'A'.repeat(43)}`;
    creds.badJwt = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln';
    await tb.client('matrix', []);
  });
  afterAll(async () => {
    await tb?.close();
  });

  for (const route of ROUTES) {
    it(`${route.method.toUpperCase()} ${route.path}`, async () => {
      for (const caller of CALLERS) {
        // revoke-self spends the token: a fresh client token for every probe
        const token = caller === 'client' ? (await tb.client(`m-${Math.random().toString(36).slice(2, 8)}`, [])).token : creds[caller];
        let req = tb.request[route.method](route.path);
        if (token) req = req.set('X-Vault-Token', token);
        const res = route.body !== undefined ? await req.send(route.body) : await req;
        const invalid = caller === 'badApiKey' || caller === 'badJwt';
        const allowed = route.who === 'ops' || route.who === 'login' || (!invalid && (route.who === 'public' || (route.who === 'client' ? caller === 'client' : caller !== 'anonymous')));
        if (allowed) expect(res.status, `${caller}: ${res.text.slice(0, 200)}`).toBe(route.probe);
        else expectVaultError(res, 403, 'permission denied');
      }
    });
  }
});

describe('Vault error mapping', () => {
  it('maps Keywarden kinds to Vault statuses and texts', () => {
    // a missing (or ungranted) KV secret is Vault's bare 404
    expect(vaultErrorsOf(problemFromDomainError(new NotFoundError('secret a/b')))).toEqual([]);
    expect(vaultErrorsOf(new ProblemError(404, 'route_not_found', 'Not found', 'unsupported path: GET /v1/sys/x'))).toEqual(['unsupported path: GET /v1/sys/x']);
    expect(vaultStatusOf(problemFromDomainError(new ConflictError('exists')).status)).toBe(400);
    expect(vaultStatusOf(problemFromDomainError(new PreconditionFailedError('check-and-set parameter did not match the current version')).status)).toBe(412);
    expect(vaultStatusOf(401)).toBe(403);
    expect(vaultErrorsOf(new ProblemError(500, 'internal_error', 'Internal error', 'stack details'))).toEqual(['internal error']);
  });
});

describe('LIST requests on the broker\'s server', () => {
  let tb: TestBroker;
  let server: RunningServer;
  let port: number;
  let token: string;

  beforeAll(async () => {
    tb = await startTestBroker();
    const c = await tb.client('lister', []);
    token = c.token;
    server = await listen(tb.broker.app, { listen: { host: '127.0.0.1', port: 0 }, tls: undefined });
    port = Number(new URL(server.url).port);
  });
  afterAll(async () => {
    await server?.close();
    await tb?.close();
  });

  /** Sends raw bytes on one connection (in the given pieces) and collects what comes back until the server closes. */
  function raw(pieces: string[], delayMs = 20): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      let received = '';
      socket.on('data', (d) => (received += d.toString('latin1')));
      socket.on('error', reject);
      socket.on('close', () => resolve(received));
      (async () => {
        for (const piece of pieces) {
          socket.write(piece);
          await new Promise((r) => setTimeout(r, delayMs));
        }
      })();
    });
  }
  const statusLines = (text: string) => text.match(/HTTP\/1\.1 \d{3}/g) ?? [];

  it('serves LIST as GET ?list=true (merging the query), where Node alone would refuse the method', async () => {
    const out = await raw([`LIST /v1/sys/mounts?x=1 HTTP/1.1\r\nHost: k\r\nX-Vault-Token: ${token}\r\nConnection: close\r\n\r\n`]);
    expect(statusLines(out)).toEqual(['HTTP/1.1 200']);
    expect(out).toContain('"type":"kv"');
    expect(withListQuery('/a?list=false&b=2')).toBe('/a?b=2&list=true');
    expect(withListQuery('/a')).toBe('/a?list=true');
  });

  it('keep-alive and pipelined requests: each LIST is rewritten, bodies containing "LIST " never are', async () => {
    // body bytes that look like a LIST request: Content-Length body, then a chunked body split across writes
    const bodyLikeList = 'LIST /v1/sys/health HTTP/1.1\r\n\r\n';
    const pieces = [
      `LIST /v1/sys/mounts HTTP/1.1\r\nHost: k\r\n\r\n` +
        `POST /v1/nothing HTTP/1.1\r\nHost: k\r\nContent-Type: text/plain\r\nContent-Length: ${bodyLikeList.length}\r\n\r\n${bodyLikeList}` +
        `LI`,
      `ST /v1/nothing-either HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n5;ext=1\r\nLIST \r\n`,
      `${(bodyLikeList.length - 5).toString(16)}\r\n${bodyLikeList.slice(5)}\r\n0\r\nX-Trailer: LIST /\r\n\r\n`,
      `GET /v1/sys/health HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n`,
    ];
    const out = await raw(pieces);
    // four responses: mounts (LIST), 404 for the POST (its body was not taken for a request), 404 for
    // the chunked LIST (rewritten: llhttp alone would answer 400 and close), health. A body taken
    // for a request would add a response; a LIST left alone would end the connection early.
    expect(statusLines(out)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 404', 'HTTP/1.1 404', 'HTTP/1.1 200']);
    expect(out).toContain('"code":"route_not_found"');
  });

  it('the rewriter passes body bytes unchanged byte for byte, and gives up (pass-through) on framing it cannot follow', () => {
    const r = new ListRequestRewriter();
    const body = 'LIST /x HTTP/1.1\r\n\r\n';
    const input = `POST /a HTTP/1.1\r\nContent-Length: ${body.length}\r\n\r\n${body}LIST /b HTTP/1.1\r\n\r\n`;
    // one byte at a time: the worst case for the state machine
    const out = [...Buffer.from(input)].map((b) => r.push(Buffer.from([b]))).map((b) => b.toString('latin1')).join('');
    expect(out).toBe(`POST /a HTTP/1.1\r\nContent-Length: ${body.length}\r\n\r\n${body}GET /b?list=true HTTP/1.1\r\n\r\n`);
    // both Content-Length and Transfer-Encoding: llhttp refuses it, so the rewriter stops rewriting
    const smuggle = new ListRequestRewriter();
    const s = `POST /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nLIST /b HTTP/1.1\r\n\r\n`;
    expect(smuggle.push(Buffer.from(s)).toString('latin1')).toBe(s);
    const list = 'LIST /b HTTP/1.1\r\n\r\n';
    expect(smuggle.push(Buffer.from(list)).toString('latin1')).toBe(list);
  });

  it('LIST works over TLS too (the rewrite sits after decryption, before the parser)', async () => {
    const ca = await createCa('vault-list-ca');
    const cert = await issue(ca, { cn: 'localhost', ips: ['127.0.0.1'], usage: 'server' });
    const written = writePems({ 'server.pem': cert.certPem, 'server-key.pem': cert.keyPem });
    const tlsServer = await listen(tb.broker.app, { listen: { host: '127.0.0.1', port: 0 }, tls: { certFile: written.paths['server.pem'], keyFile: written.paths['server-key.pem'] } });
    try {
      const out = await new Promise<string>((resolve, reject) => {
        const socket = tls.connect({ port: Number(new URL(tlsServer.url).port), host: '127.0.0.1', ca: ca.certPem, servername: 'localhost' }, () => {
          socket.write(`LIST /v1/sys/mounts HTTP/1.1\r\nHost: k\r\n\r\nLIST /v1/sys/mounts HTTP/1.1\r\nHost: k\r\nConnection: close\r\n\r\n`);
        });
        let received = '';
        socket.on('data', (d) => (received += d.toString('latin1')));
        socket.on('error', reject);
        socket.on('close', () => resolve(received));
      });
      expect(statusLines(out)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 200']);
    } finally {
      await tlsServer.close();
      fs.rmSync(written.dir, { recursive: true, force: true });
    }
  });

  it('a plain GET ?list=true reaches the same place as LIST (what supertest, without the server, sends)', async () => {
    const res = await tb.request.get('/v1/sys/mounts?list=true');
    expect(res.status).toBe(200);
  });
});
