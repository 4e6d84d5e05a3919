import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen, type RunningServer } from '../../src/http/server.js';
import { auth, markSensitive } from '../core/helpers.js';
import { capture } from '../support/audit-events.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import { hvacAvailable, SYSTEM_PYTHON } from '../support/hvac.js';
import { createCa, issue, writePems, type Issued } from '../support/pki.js';
import { httpsRequest, type RawResponse } from '../identity-workload/helpers.js';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
const hvac = hvacAvailable();
const SPIFFE_WEB = 'spiffe://keywarden.local/ns/prod/sa/web';
const SECRET_VALUE = 'cert-login-secret-value';
const DAY = 24 * 60 * 60 * 1000;
const REFUSED = 'invalid certificate or no client certificate supplied';

function expectVaultRefusal(res: RawResponse) {
  expect(res.status, res.text).toBe(400);
  expect(res.headers['content-type']).toBe('application/json');
  expect(res.body.errors[0]).toBe(REFUSED);
}

/**
 * Issue 28: Vault routes ignored client certificates, so an mTLS workload could not use them.
 * POST /v1/auth/cert/login is Vault's cert auth method over the native mTLS identities.
 */
describe('Vault cert auth: the mTLS client certificate logs in', () => {
  let tb: TestBroker;
  let server: RunningServer;
  let pemDir: string;
  let pemPaths: Record<string, string>;
  let ca: Issued;
  const certs: Record<string, Issued> = {};

  beforeAll(async () => {
    ca = await createCa('Keywarden Vault Cert CA');
    const otherCa = await createCa('Another CA');
    const serverCert = await issue(ca, { cn: '127.0.0.1', ips: ['127.0.0.1'], usage: 'server' });
    certs.web = await issue(ca, { uris: [SPIFFE_WEB], cn: 'web-pod-1', usage: 'client' });
    certs.unmapped = await issue(ca, { cn: 'stranger', usage: 'client' });
    certs.expired = await issue(ca, { uris: [SPIFFE_WEB], usage: 'client', notBefore: new Date(Date.now() - 10 * DAY), notAfter: new Date(Date.now() - DAY) });
    certs.wrongCa = await issue(otherCa, { uris: [SPIFFE_WEB], usage: 'client' });
    certs.retired = await issue(ca, { cn: 'retired-svc', usage: 'client' });
    const written = writePems({
      'server.pem': serverCert.certPem,
      'server-key.pem': serverCert.keyPem,
      'ca.pem': ca.certPem,
      'web.pem': certs.web.certPem,
      'web-key.pem': certs.web.keyPem,
    });
    pemDir = written.dir;
    pemPaths = written.paths;

    tb = await startTestBroker();
    const w = auth(await tb.apiKey('writer'));
    markSensitive(SECRET_VALUE);
    expect((await tb.request.post('/v1/groups').set(w).send({ name: 'web' })).status).toBe(201);
    expect((await tb.request.post('/v1/secrets').set(w).send({ name: 'db.password', value: SECRET_VALUE, groups: ['web'] })).status).toBe(201);
    for (const [name, certIdentity] of [['web', SPIFFE_WEB], ['retired', 'CN=retired-svc']] as const) {
      const res = await tb.request.post('/v1/clients').set(w).send({ name, groups: ['web'], certIdentity });
      expect(res.status, res.text).toBe(201);
      markSensitive(res.body.clientSecret);
    }
    expect((await tb.request.patch('/v1/clients/retired').set(w).send({ enabled: false })).status).toBe(200);
    server = await listen(tb.broker.app, {
      listen: { host: '127.0.0.1', port: 0 },
      tls: { certFile: pemPaths['server.pem'], keyFile: pemPaths['server-key.pem'], clientCaFile: pemPaths['ca.pem'] },
    });
  });
  afterAll(async () => {
    await server?.close();
    await tb?.close();
    if (pemDir) fs.rmSync(pemDir, { recursive: true, force: true });
  });

  const certLogin = (cert?: Issued, opts: { body?: object; headers?: Record<string, string> } = {}) =>
    httpsRequest(server.url, '/v1/auth/cert/login', {
      ca: ca.certPem,
      cert: cert?.certPem,
      key: cert?.keyPem,
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...opts.headers },
      body: JSON.stringify(opts.body ?? {}),
    });

  it('a mapped certificate gets a Vault login for its client, audited; the token reads KV and the native API', async () => {
    const { result: res, events } = await capture(tb, () => certLogin(certs.web));
    expect(res.status, res.text).toBe(200);
    expect(res.headers['cache-control']).toBe('no-store');
    const a = res.body.auth;
    expect(a).toMatchObject({ policies: ['web'], metadata: { role_name: 'web' }, renewable: true, token_type: 'service' });
    expect(events.find((e) => e.action === 'auth.token.issue')?.details).toMatchObject({ grantType: 'vault:cert', jti: a.accessor });
    const kv = await tb.request.get('/v1/secret/data/db/password').set('X-Vault-Token', a.client_token);
    expect(kv.status, kv.text).toBe(200);
    expect(kv.body.data.data).toEqual({ value: Buffer.from(SECRET_VALUE).toString('base64') });
    expect((await tb.request.get('/v1/client/secrets/db.password').set(auth(a.client_token))).status).toBe(200);
    // the token is an ordinary client token: it renews and revokes as one
    const renewed = await tb.request.post('/v1/auth/token/renew-self').set('X-Vault-Token', a.client_token).send({});
    expect(renewed.status, renewed.text).toBe(200);
  });

  it('ignores any token sent along (a login path); `name` must be the client\'s', async () => {
    const stale = await certLogin(certs.web, { headers: { 'X-Vault-Token': 'eyJhbGciOiJFUzI1NiJ9.e30.x' } });
    expect(stale.status, stale.text).toBe(200);
    expect((await certLogin(certs.web, { body: { name: 'web' } })).status).toBe(200);
    const { result: other, events } = await capture(tb, () => certLogin(certs.web, { body: { name: 'retired' } }));
    expectVaultRefusal(other);
    expect(events.some((e) => e.action === 'auth.failure' && e.details?.grantType === 'vault:cert')).toBe(true);
  });

  it('no certificate, an unmapped, expired or foreign one, or a disabled client: Vault\'s 400, the reason in the audit log', async () => {
    for (const [cert, reason] of [
      [undefined, 'no client certificate'],
      [certs.unmapped, 'certificate_unmapped'],
      [certs.expired, 'certificate_expired'],
      [certs.wrongCa, 'certificate_untrusted'],
      [certs.retired, 'client_disabled'],
    ] as const) {
      const { result: res, events } = await capture(tb, () => certLogin(cert));
      expectVaultRefusal(res);
      expect(events.find((e) => e.action === 'auth.failure')?.reason, String(reason)).toBe(reason);
      expect(events.some((e) => e.action === 'auth.token.issue')).toBe(false);
    }
    // over plain HTTP there is no certificate at all
    const plain = await tb.request.post('/v1/auth/cert/login').send({});
    expect(plain.status).toBe(400);
    expect(plain.body.errors[0]).toBe(REFUSED);
  });

  it.skipIf(!hvac.ok)('hvac: client.auth.cert.login() with the workload certificate, then a KV read', async () => {
    const { stdout } = await run(SYSTEM_PYTHON, [path.join(here, 'clients', 'hvac-cert.py')], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', VAULT_ADDR: server.url, CA_FILE: pemPaths['ca.pem'], CERT_FILE: pemPaths['web.pem'], KEY_FILE: pemPaths['web-key.pem'] },
      timeout: 60_000,
    });
    const r = JSON.parse(stdout);
    expect(r.login).toMatchObject({ policies: ['web'], metadata: { role_name: 'web' } });
    expect(r.token_adopted).toBe(true);
    expect(r.lookup).toBe('approle-web');
    expect(r.kv).toEqual({ value: Buffer.from(SECRET_VALUE).toString('base64') });
  });
});
