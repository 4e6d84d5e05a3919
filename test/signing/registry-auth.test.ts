import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestBroker, type TestBroker } from '../support/broker.js';
import {
  freePort,
  pushTestImage,
  registryAvailable,
  startRegistry,
  startTokenAuthProxy,
  type PushedImage,
  type TestRegistry,
  type TokenAuthProxy,
} from '../support/registry.js';
import { auth, capture, createKey, expectProblem, registryManifest } from './helpers.js';

const available = registryAvailable().ok;
const CREDS = { username: 'ci-bot', password: `pw-${Math.random().toString(36).slice(2)}-secret` };

let tb: TestBroker;
let reg: TestRegistry;
let proxy: TokenAuthProxy;
let plain: http.Server;
let plainHost: string;
let plainRequests = 0;
let downHost: string;
let img: PushedImage;

describe.skipIf(!available)('registry access', () => {
  beforeAll(async () => {
    reg = await startRegistry();
    proxy = await startTokenAuthProxy(reg.hostPort, CREDS);
    // a plain-http server that is NOT listed as insecure: the broker must not talk HTTP to it
    plain = http.createServer((_req, res) => {
      plainRequests++;
      res.writeHead(200).end('{}');
    });
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    plainHost = `127.0.0.1:${(plain.address() as AddressInfo).port}`;
    downHost = `127.0.0.1:${await freePort()}`;
    tb = await startTestBroker({
      // plainHost may be contacted (egress), but not over plain http
      env: { KEYWARDEN_INSECURE_REGISTRIES: [reg.hostPort, proxy.hostPort, downHost].join(','), KEYWARDEN_EGRESS_ALLOW: plainHost },
    });
    await createKey(tb, 'release');
    img = await pushTestImage(reg.hostPort, 'org/app', 'v1');
  });
  afterAll(async () => {
    plain?.closeAllConnections();
    await Promise.all([tb?.close(), proxy?.close(), reg?.stop(), new Promise((r) => (plain ? plain.close(r) : r(undefined)))]);
  });

  const sign = (image: string) => tb.request.post('/v1/signatures').set(auth(tb.adminKey)).send({ image, key: 'release' });

  async function storeSecret(name: string, value: unknown) {
    const res = await tb.request.post('/v1/secrets').set(auth(tb.adminKey)).send({ name, value: JSON.stringify(value) });
    expect(res.status, res.text).toBe(201);
  }

  it('without credentials the token-auth registry refuses the broker (502 registry_unauthorized)', async () => {
    const { result: res, events } = await capture(tb, () => sign(`${proxy.hostPort}/org/app:v1`));
    expectProblem(res, 502, 'registry_unauthorized');
    expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual(['image.sign:error']);
    expect(proxy.challenges).toBeGreaterThan(0);
    expect(proxy.forwarded).toBe(0);
  });

  it('maps registry credentials only to existing secrets and only for admins', async () => {
    await storeSecret('reg-cred-wrong', { username: CREDS.username, password: 'wrong' });
    await storeSecret('reg-cred', CREDS);
    const writer = await tb.apiKey('writer');
    expectProblem(await tb.request.put(`/v1/registry-credentials/${proxy.hostPort}`).set(auth(writer)).send({ secret: 'reg-cred' }), 403);
    expectProblem(await tb.request.put(`/v1/registry-credentials/${proxy.hostPort}`).send({ secret: 'reg-cred' }), 401);
    expectProblem(await tb.request.put(`/v1/registry-credentials/${proxy.hostPort}`).set(auth(tb.adminKey)).send({ secret: 'missing' }), 400);
    expectProblem(await tb.request.put(`/v1/registry-credentials/bad_host!`).set(auth(tb.adminKey)).send({ secret: 'reg-cred' }), 400);
    expectProblem(await tb.request.put(`/v1/registry-credentials/${proxy.hostPort}`).set(auth(tb.adminKey)).send({ secret: 'reg-cred', x: 1 }), 400);

    const wrong = await tb.request.put(`/v1/registry-credentials/${proxy.hostPort}`).set(auth(tb.adminKey)).send({ secret: 'reg-cred-wrong' });
    expect(wrong.status, wrong.text).toBe(200);
    const res = await sign(`${proxy.hostPort}/org/app:v1`);
    expectProblem(res, 502, 'registry_unauthorized');
    expect(res.text).not.toContain('wrong');
    expect(proxy.tokenRequests.some((t) => !t.authorized)).toBe(true);
  });

  it('signs through the token-auth proxy with credentials held as a secret', async () => {
    const { result: put, events } = await capture(tb, () =>
      tb.request.put(`/v1/registry-credentials/${proxy.hostPort}`).set(auth(tb.adminKey)).send({ secret: 'reg-cred' }),
    );
    expect(put.status, put.text).toBe(200);
    expect(put.body).toEqual({ registry: proxy.hostPort, secret: 'reg-cred' });
    expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual(['registry.credentials.set:allow']);

    const auditor = await tb.apiKey('auditor');
    const list = await tb.request.get('/v1/registry-credentials').set(auth(auditor));
    expect(list.status).toBe(200);
    expect(list.body.items).toEqual([{ registry: proxy.hostPort, secret: 'reg-cred' }]);
    expect(list.text).not.toContain(CREDS.password);

    const res = await sign(`${proxy.hostPort}/org/app:v1`);
    expect(res.status, res.text).toBe(201);
    expect(res.body.digest).toBe(img.digest);
    expect(res.text).not.toContain(CREDS.password);
    expect(proxy.tokenRequests.some((t) => t.authorized && t.scopes.some((s) => s === 'repository:org/app:pull,push'))).toBe(true);
    expect(proxy.forwarded).toBeGreaterThan(0);
    // the signature landed in the upstream registry
    const sig = await registryManifest(reg.hostPort, 'org/app', `${img.digest.replace(':', '-')}.sig`);
    expect(sig.status).toBe(200);
    expect(sig.json.layers).toHaveLength(1);
    const payload = JSON.parse(Buffer.from(res.body.payload, 'base64').toString());
    expect(payload.critical.identity['docker-reference']).toBe(`${proxy.hostPort}/org/app`);
    // nothing about the credential reaches the audit log
    const audit = await tb.request.get('/v1/audit?limit=1000').set(auth(auditor));
    expect(audit.text).not.toContain(CREDS.password);
  });

  it('refuses plain HTTP to a registry not listed in KEYWARDEN_INSECURE_REGISTRIES', async () => {
    const { result: res, events } = await capture(tb, () => sign(`${plainHost}/org/app:v1`));
    expectProblem(res, 400, 'insecure_registry_refused');
    expect(plainRequests).toBe(0);
    expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual(['image.sign:error']);
  });

  it('reports an unreachable registry as 502 registry_unreachable', async () => {
    const { result: res, events } = await capture(tb, () => sign(`${downHost}/org/app:v1`));
    expectProblem(res, 502, 'registry_unreachable');
    expect(events.map((e) => `${e.action}:${e.outcome}`)).toEqual(['image.sign:error']);
  });

  it('reports a missing image as 404 and a malformed reference as 400', async () => {
    expectProblem(await sign(`${reg.hostPort}/org/nothing:v1`), 404, 'image_not_found');
    expectProblem(await sign(`${proxy.hostPort}/org/app:v9`), 404, 'image_not_found');
    expectProblem(await sign(`${reg.hostPort}/org/app:bad tag`), 400, 'invalid_request');
    expectProblem(await sign(`${reg.hostPort}//app:v1`), 400, 'invalid_request');
  });
});
