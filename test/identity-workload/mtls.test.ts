import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen, type RunningServer } from '../../src/http/server.js';
import { auth, expectProblem, markSensitive } from '../core/helpers.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { expectRawProblem, httpsRequest } from './helpers.js';
import { createCa, issue, writePems, type Issued } from '../support/pki.js';

const SPIFFE_WEB = 'spiffe://keywarden.local/ns/prod/sa/web';
const SECRET_VALUE = 'mtls-delivered-secret-value';
const DAY = 24 * 60 * 60 * 1000;

describe('mTLS client certificates over real TLS handshakes', () => {
  let tb: TestBroker;
  let server: RunningServer;
  let pemDir: string;
  let ca: Issued;
  const certs: Record<string, Issued> = {};
  let w: Record<string, string>;

  beforeAll(async () => {
    ca = await createCa('Keywarden Test Client CA');
    const otherCa = await createCa('Some Other CA');
    const serverCert = await issue(ca, { cn: '127.0.0.1', ips: ['127.0.0.1'], usage: 'server' });
    certs.spiffe = await issue(ca, { uris: [SPIFFE_WEB], cn: 'web-pod-1', usage: 'client' });
    certs.cn = await issue(ca, { cn: 'batch-worker', usage: 'client' });
    certs.unmapped = await issue(ca, { cn: 'stranger', usage: 'client' });
    certs.spiffeUnmapped = await issue(ca, { uris: ['spiffe://keywarden.local/ns/prod/sa/unknown'], cn: 'batch-worker', usage: 'client' });
    certs.expired = await issue(ca, {
      uris: [SPIFFE_WEB],
      usage: 'client',
      notBefore: new Date(Date.now() - 10 * DAY),
      notAfter: new Date(Date.now() - DAY),
    });
    certs.wrongCa = await issue(otherCa, { uris: [SPIFFE_WEB], cn: 'batch-worker', usage: 'client' });
    certs.disabled = await issue(ca, { cn: 'retired-svc', usage: 'client' });
    const written = writePems({ 'server.pem': serverCert.certPem, 'server-key.pem': serverCert.keyPem, 'client-ca.pem': ca.certPem });
    pemDir = written.dir;

    tb = await startTestBroker();
    w = auth(await tb.apiKey('writer'));
    markSensitive(SECRET_VALUE);
    expect((await tb.request.post('/v1/groups').set(w).send({ name: 'web' })).status).toBe(201);
    expect((await tb.request.post('/v1/secrets').set(w).send({ name: 'db.password', value: SECRET_VALUE, groups: ['web'] })).status).toBe(201);
    for (const [name, certIdentity] of [
      ['web', SPIFFE_WEB],
      ['batch', 'CN=batch-worker'],
      ['retired', 'CN=retired-svc'],
    ] as const) {
      const res = await tb.request.post('/v1/clients').set(w).send({ name, groups: ['web'], certIdentity });
      expect(res.status, res.text).toBe(201);
      expect(res.body.certIdentity).toBe(certIdentity);
      markSensitive(res.body.clientSecret);
    }
    expect((await tb.request.patch('/v1/clients/retired').set(w).send({ enabled: false })).status).toBe(200);

    server = await listen(tb.broker.app, {
      listen: { host: '127.0.0.1', port: 0 },
      tls: { certFile: written.paths['server.pem'], keyFile: written.paths['server-key.pem'], clientCaFile: written.paths['client-ca.pem'] },
    });
    expect(server.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });

  afterAll(async () => {
    await server?.close();
    await tb?.close();
    if (pemDir) fs.rmSync(pemDir, { recursive: true, force: true });
  });

  const get = (path: string, cert?: Issued, headers?: Record<string, string>) =>
    httpsRequest(server.url, path, { ca: ca.certPem, cert: cert?.certPem, key: cert?.keyPem, headers });

  it('a certificate mapped by its SPIFFE URI SAN reads secrets with no token', async () => {
    const res = await get('/v1/client/secrets/db.password', certs.spiffe);
    expect(res.status, res.text).toBe(200);
    expect(Buffer.from(res.body.content, 'base64').toString()).toBe(SECRET_VALUE);
    expect(res.headers['cache-control']).toBe('no-store');
    const list = await get('/v1/client/secrets', certs.spiffe);
    expect(list.status).toBe(200);
    expect(list.body.items.map((i: any) => i.name)).toContain('db.password');
  });

  it('a certificate with only a CN is mapped by CN=<cn>', async () => {
    const res = await get('/v1/client/secrets/db.password', certs.cn);
    expect(res.status, res.text).toBe(200);
    expect(Buffer.from(res.body.content, 'base64').toString()).toBe(SECRET_VALUE);
  });

  it('the SPIFFE URI SAN wins over the CN: an unmapped URI is not rescued by a mapped CN', async () => {
    const res = await get('/v1/client/secrets/db.password', certs.spiffeUnmapped);
    expectRawProblem(res, 401, 'certificate_unmapped');
    expect(res.text).not.toContain(SECRET_VALUE);
  });

  it('a trusted but unmapped certificate → 401 certificate_unmapped', async () => {
    const res = await get('/v1/client/secrets/db.password', certs.unmapped);
    expectRawProblem(res, 401, 'certificate_unmapped');
    expect(res.text).not.toContain(SECRET_VALUE);
  });

  it('an expired certificate → 401 certificate_expired, even though its identity is mapped', async () => {
    const res = await get('/v1/client/secrets/db.password', certs.expired);
    expectRawProblem(res, 401, 'certificate_expired');
    expect(res.text).not.toContain(SECRET_VALUE);
  });

  it('a certificate from another CA → 401 certificate_untrusted, even though its identity is mapped', async () => {
    const res = await get('/v1/client/secrets/db.password', certs.wrongCa);
    expectRawProblem(res, 401, 'certificate_untrusted');
    expect(res.text).not.toContain(SECRET_VALUE);
  });

  it("a disabled client's certificate → 401; re-enabling restores access", async () => {
    const res = await get('/v1/client/secrets/db.password', certs.disabled);
    expect(res.status).toBe(401);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.body.code).toBe('client_disabled');
    expect(res.text).not.toContain(SECRET_VALUE);
    // disabling the mapped client also cuts off an otherwise valid certificate at once
    expect((await tb.request.patch('/v1/clients/batch').set(w).send({ enabled: false })).status).toBe(200);
    expectRawProblem(await get('/v1/client/secrets/db.password', certs.cn), 401, 'client_disabled');
    expect((await tb.request.patch('/v1/clients/batch').set(w).send({ enabled: true })).status).toBe(200);
    expect((await get('/v1/client/secrets/db.password', certs.cn)).status).toBe(200);
  });

  it('remapping certIdentity takes effect immediately', async () => {
    expect((await tb.request.patch('/v1/clients/batch').set(w).send({ certIdentity: 'CN=stranger' })).status).toBe(200);
    expectRawProblem(await get('/v1/client/secrets/db.password', certs.cn), 401, 'certificate_unmapped');
    expect((await get('/v1/client/secrets/db.password', certs.unmapped)).status).toBe(200);
    expect((await tb.request.patch('/v1/clients/batch').set(w).send({ certIdentity: 'CN=batch-worker' })).status).toBe(200);
    expect((await get('/v1/client/secrets/db.password', certs.cn)).status).toBe(200);
  });

  it('two clients cannot share a certIdentity', async () => {
    const res = await tb.request.post('/v1/clients').set(w).send({ name: 'web-copy', certIdentity: SPIFFE_WEB });
    expectProblem(res, 409);
  });

  it('token-authenticated requests still work over the same HTTPS server without a certificate', async () => {
    const token = await tb.client('tokenholder', ['web']);
    const res = await get('/v1/client/secrets/db.password', undefined, { Authorization: `Bearer ${token.token}` });
    expect(res.status, res.text).toBe(200);
    expect(Buffer.from(res.body.content, 'base64').toString()).toBe(SECRET_VALUE);
    // operator API keys too
    const ops = await get('/v1/clients/web', undefined, w);
    expect(ops.status).toBe(200);
    expect(ops.body.certIdentity).toBe(SPIFFE_WEB);
    // the token endpoint itself works over HTTPS without a certificate
    const tokenRes = await httpsRequest(server.url, '/v1/auth/token', {
      ca: ca.certPem,
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'client_credentials', client_id: token.clientId, client_secret: token.clientSecret }).toString(),
    });
    expect(tokenRes.status, tokenRes.text).toBe(200);
    expect(tokenRes.body.access_token).toBeTruthy();
  });

  it('no certificate and no token → 401', async () => {
    expectRawProblem(await get('/v1/client/secrets/db.password'), 401, 'unauthenticated');
  });

  it('a bearer token takes precedence over a presented certificate', async () => {
    const res = await get('/v1/client/secrets/db.password', certs.spiffe, { Authorization: 'Bearer not-a-valid-token' });
    expectRawProblem(res, 401, 'invalid_token');
  });

  it('a certificate-authenticated client is still only a client: operator routes → 403', async () => {
    expectRawProblem(await get('/v1/clients', certs.spiffe), 403, 'forbidden');
  });
});
