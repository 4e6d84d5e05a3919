/**
 * Egress rules of the release gate, signing and Notary: no connection to hosts nobody named, no
 * private addresses unless configured, realms / redirects / upload locations stay on the
 * registry's origin unless allowed, credentials never leave their origin, and decisions carry no
 * upstream bodies or socket errors. Against a running test broker with small HTTP servers that
 * stand in for registries (they count every connection and request).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { verifyNotaryTrust } from '../../src/trust/notary/index.js';
import {
  EgressPolicy,
  EgressRefusedError,
  HostList,
  isPublicAddress,
  literalRegistryOf,
} from '../../src/trust/registry/egress-policy.js';
import { RegistryClient, RegistryError } from '../../src/trust/registry/registry-client.js';
import { bearer, startTestBroker, type TestBroker } from '../support/broker.js';
import { freePort } from '../support/registry.js';
import { upsertPolicy } from '../support/policies.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;
const UPSTREAM_SECRET = 'UPSTREAM-BODY-7f3c internal host db-01.corp 10.9.8.7';

interface Recorded {
  method: string;
  url: string;
  authorization?: string;
}

interface CountingServer {
  hostPort: string;
  port: number;
  connections: number;
  requests: Recorded[];
  close(): Promise<void>;
}

/** An HTTP server on loopback that records every accepted socket and request. */
async function countingServer(handler: (req: http.IncomingMessage, res: http.ServerResponse) => void = (_q, r) => r.writeHead(404).end()): Promise<CountingServer> {
  const state = { connections: 0, requests: [] as Recorded[] };
  const server = http.createServer((req, res) => {
    state.requests.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization });
    handler(req, res);
  });
  server.on('connection', () => state.connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    hostPort: `127.0.0.1:${port}`,
    port,
    get connections() {
      return state.connections;
    },
    get requests() {
      return state.requests;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  } as CountingServer;
}

/** Upstream text and socket errors that must never appear in what a caller sees. */
function expectNoLeak(text: string, ...internal: string[]) {
  expect(text).not.toMatch(/ECONNREFUSED|ECONNRESET|EHOSTUNREACH|fetch failed|getaddrinfo|wrong version number/i);
  expect(text).not.toContain(UPSTREAM_SECRET);
  expect(text).not.toContain('db-01.corp');
  for (const s of internal) expect(text).not.toContain(s);
}

// ------------------------------------------------------------------------------ unit: addresses and hosts

describe('egress policy (unit)', () => {
  it('accepts only global unicast addresses', () => {
    for (const a of ['8.8.8.8', '1.1.1.1', '2001:4860:4860::8888', '[2606:4700::1111]']) expect(isPublicAddress(a), a).toBe(true);
    for (const a of [
      '127.0.0.1',
      '127.5.6.7',
      '10.0.0.1',
      '172.16.0.1',
      '172.31.255.255',
      '192.168.1.1',
      '169.254.169.254',
      '100.64.0.1',
      '0.0.0.0',
      '255.255.255.255',
      '224.0.0.1',
      '::',
      '::1',
      '[::1]',
      'fe80::1',
      'fe80::1%eth0',
      'fc00::1',
      'fd12:3456::1',
      'fec0::1',
      '::ffff:127.0.0.1',
      '::ffff:7f00:1',
      '::ffff:10.0.0.1',
      '::ffff:169.254.169.254',
      '64:ff9b::7f00:1',
      '2002:7f00:1::1',
      'not an address',
      'localhost',
    ]) {
      expect(isPublicAddress(a), a).toBe(false);
    }
  });

  it('takes the registry of a pattern only when it is literal', () => {
    expect(literalRegistryOf('registry.example.com/team/*')).toBe('registry.example.com');
    expect(literalRegistryOf('Registry.Example.com:5000/**')).toBe('registry.example.com:5000');
    expect(literalRegistryOf('[::1]:5000/x')).toBe('[::1]:5000');
    expect(literalRegistryOf('**')).toBeUndefined();
    expect(literalRegistryOf('**/app')).toBeUndefined();
    expect(literalRegistryOf('*.example.com/team/app')).toBeUndefined();
    expect(literalRegistryOf('registry.example.com:*/team/app')).toBeUndefined();
    expect(literalRegistryOf('registry?.example.com/app')).toBeUndefined();
    expect(literalRegistryOf('noslash')).toBeUndefined();
  });

  it('matches host lists by host, host:port and *.domain', () => {
    const list = new HostList(['auth.example.com', 'cdn.example.net:8443', '*.blob.example.org', '127.0.0.1:5000']);
    expect(list.matches(new URL('https://auth.example.com/token'))).toBe(true);
    expect(list.matches(new URL('https://AUTH.example.com:444/token'))).toBe(true);
    expect(list.matches(new URL('https://cdn.example.net:8443/x'))).toBe(true);
    expect(list.matches(new URL('https://cdn.example.net/x'))).toBe(false);
    expect(list.matches(new URL('https://a.b.blob.example.org/x'))).toBe(true);
    expect(list.matches(new URL('https://blob.example.org/x'))).toBe(false);
    expect(list.matches(new URL('https://evilblob.example.org/x'))).toBe(false);
    expect(list.matches(new URL('http://127.0.0.1:5000/v2/'))).toBe(true);
    expect(list.matches(new URL('http://2130706433:5000/v2/'))).toBe(true); // the same address, normalized
    expect(list.matches(new URL('http://127.0.0.1:5001/v2/'))).toBe(false);
    expect(() => new HostList(['http://x.example.com'])).toThrow();
  });

  it('refuses private IP literals (any spelling) and plain http unless configured', () => {
    const egress = new EgressPolicy({ insecureHosts: ['127.0.0.1:5000'], allowedHosts: ['10.0.0.5'] });
    for (const u of ['https://127.0.0.1/', 'https://2130706433/', 'https://0x7f.1/', 'https://[::ffff:127.0.0.1]/', 'https://[::]/', 'https://0.0.0.0/', 'https://169.254.169.254/latest/meta-data/']) {
      expect(() => egress.checkDestination(new URL(u)), u).toThrow(EgressRefusedError);
    }
    expect(() => egress.checkDestination(new URL('http://registry.example.com/'))).toThrow(/plain HTTP/);
    expect(() => egress.checkDestination(new URL('https://user:pw@registry.example.com/'))).toThrow(EgressRefusedError);
    expect(egress.checkDestination(new URL('http://127.0.0.1:5000/v2/'))).toBe('explicit');
    expect(egress.checkDestination(new URL('https://10.0.0.5:8443/'))).toBe('explicit');
    expect(egress.checkDestination(new URL('https://registry.example.com/'))).toBe('public-only');
    expect(egress.registryPermitted('registry.example.com', ['Registry.Example.com'])).toBe(true);
    expect(egress.registryPermitted('registry.example.com', ['other.example.com'])).toBe(false);
    expect(egress.registryPermitted('127.0.0.1:5000', [])).toBe(true);
  });

  it('checks what a host name resolves to and never connects to a loopback answer', async () => {
    const target = await countingServer((_q, r) => r.writeHead(200).end('{}'));
    const egress = new EgressPolicy({ insecureHosts: [], allowedHosts: [] });
    try {
      const err = await egress.fetch(`https://localhost:${target.port}/v2/`, { redirect: 'manual' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EgressRefusedError);
      expect((err as EgressRefusedError).reason).toBe('non_public_address');
      expect(target.connections).toBe(0);
    } finally {
      await egress.close();
      await target.close();
    }
  });
});

// ------------------------------------------------------------------------------ registry client: other origins

describe('registry client: credentials stay on their origin', () => {
  let other: CountingServer;
  let registry: CountingServer;
  let egress: EgressPolicy;

  beforeAll(async () => {
    other = await countingServer((req, res) => {
      req.resume();
      req.on('end', () => res.writeHead(201, { 'Docker-Content-Digest': DIGEST }).end());
    });
    registry = await countingServer((req, res) => {
      if (req.headers.authorization !== 'Bearer registry-token') return void res.writeHead(401, { 'WWW-Authenticate': 'Bearer realm="x"' }).end();
      if (req.method === 'HEAD') return void res.writeHead(404).end();
      if (req.method === 'POST') return void res.writeHead(202, { Location: `http://${other.hostPort}/upload/abc?_state=s` }).end();
      res.writeHead(404).end();
    });
  });
  afterAll(async () => {
    await egress?.close();
    await Promise.all([other?.close(), registry?.close()]);
  });

  it('uploads to an allowed other origin without the registry token', async () => {
    egress = new EgressPolicy({ insecureHosts: [registry.hostPort, other.hostPort], allowedHosts: [] });
    const client = new RegistryClient({ insecureRegistries: [], egress, credentials: async () => ({ token: 'registry-token' }) });
    await client.pushBlob(registry.hostPort, 'team/app', Buffer.from('payload')).catch(() => undefined);
    expect(other.requests.length).toBeGreaterThan(0);
    expect(other.requests.every((r) => r.authorization === undefined)).toBe(true);
    expect(registry.requests.every((r) => r.authorization === 'Bearer registry-token')).toBe(true);
  });
});

// ------------------------------------------------------------------------------ against a running broker

describe('release gate and signing do not reach hosts of the caller’s choosing', () => {
  let tb: TestBroker;
  let allowDefault: TestBroker;
  let writer: Record<string, string>;
  let admin: Record<string, string>;
  /** the stand-in registry (explicitly configured as insecure), its behaviour set per test */
  let fake: CountingServer;
  let mode: 'realm' | 'redirect' | 'upload' | 'error-body' = 'realm';
  /** where the fake registry points the broker: must never see a request */
  let second: CountingServer;
  let listening: CountingServer;
  /** a listening server on a registry address no policy names */
  let unnamed: CountingServer;
  let downRegistry: string;

  beforeAll(async () => {
    second = await countingServer((_q, r) => r.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"t"}'));
    listening = await countingServer();
    unnamed = await countingServer();
    downRegistry = `127.0.0.1:${await freePort()}`;
    fake = await countingServer((req, res) => {
      const url = req.url ?? '';
      if (mode === 'realm') {
        return void res
          .writeHead(401, { 'WWW-Authenticate': `Bearer realm="http://${second.hostPort}/token",service="fake",scope="repository:team/app:pull"` })
          .end(UPSTREAM_SECRET);
      }
      if (mode === 'redirect') return void res.writeHead(307, { Location: `http://${second.hostPort}${url}` }).end();
      if (mode === 'error-body') {
        return void res
          .writeHead(500, { 'content-type': 'application/json' })
          .end(JSON.stringify({ errors: [{ code: 'UNKNOWN', message: UPSTREAM_SECRET }] }));
      }
      // upload: enough of a registry for the signing flow to reach the blob upload
      if (/\/manifests\/v1$/.test(url) && (req.method === 'HEAD' || req.method === 'GET')) {
        return void res.writeHead(200, { 'Docker-Content-Digest': DIGEST, 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end();
      }
      if (req.method === 'POST' && url.includes('/blobs/uploads/')) {
        return void res.writeHead(202, { Location: `http://${second.hostPort}/upload/abc?_state=s` }).end();
      }
      res.writeHead(404).end();
    });
    const env = { KEYWARDEN_INSECURE_REGISTRIES: `${fake.hostPort},${downRegistry}`, KEYWARDEN_GATE_TIMEOUT_MS: '3000', KEYWARDEN_GATE_CACHE_TTL: '0' };
    tb = await startTestBroker({ env });
    allowDefault = await startTestBroker({ env: { ...env, KEYWARDEN_GATE_DEFAULT: 'allow' } });
    admin = bearer(tb.adminKey);
    writer = bearer(await tb.apiKey('writer'));
    expect((await tb.request.post('/v1/signing-keys').set(admin).send({ name: 'release' })).status).toBe(201);
    // the registry's credential: a static token that must never reach `second`
    expect((await tb.request.post('/v1/secrets').set(admin).send({ name: 'fake-cred', value: JSON.stringify({ token: 'registry-token-secret' }) })).status).toBe(201);
    expect((await tb.request.put(`/v1/registry-credentials/${fake.hostPort}`).set(admin).send({ secret: 'fake-cred' })).status).toBe(200);
  });
  afterAll(async () => {
    await tb?.close();
    await allowDefault?.close();
    await Promise.all([fake?.close(), second?.close(), listening?.close(), unnamed?.close()]);
  });
  afterEach(() => {
    expect(second.connections, 'the host the registry pointed at was contacted').toBe(0);
  });

  async function decide(image: string, broker = tb, who = writer) {
    const res = await broker.request.post('/v1/releases').set(who).send({ image });
    expect(res.status, res.text).toBe(200);
    return res.body as { decision: string; digest: string | null; policy: string | null; checks: Array<{ type: string; ok: boolean; code?: string; detail: string }> };
  }

  const putPolicy = (doc: Record<string, unknown>) => upsertPolicy(tb, admin, doc);

  it('decides an image no policy matches without any connection', async () => {
    const d = await decide(`${listening.hostPort}/x/y:tag`);
    expect(d).toMatchObject({ decision: 'deny', policy: null, digest: null });
    expect(d.checks).toEqual([expect.objectContaining({ type: 'policy', code: 'no_policy' })]);
    // KEYWARDEN_GATE_DEFAULT=allow resolves tags, but only on registries it may contact
    const a = await decide(`${listening.hostPort}/x/y:tag`, allowDefault, bearer(await allowDefault.apiKey('writer')));
    expect(a.decision).toBe('deny');
    expect(a.checks[0]).toMatchObject({ type: 'registry', code: 'registry_not_allowed' });
    expect(listening.connections).toBe(0);
  });

  it('a policy naming a registry on a private address does not make the broker reach it', async () => {
    await putPolicy({ name: 'loopback-literal', images: [`${listening.hostPort}/team/*`], rules: { nonRootUser: true } });
    await putPolicy({ name: 'loopback-name', images: [`localhost:${listening.port}/team/*`], cosign: { keys: ['release'] } });
    await putPolicy({ name: 'everything', images: ['**'], rules: { nonRootUser: true } });
    const literal = await decide(`${listening.hostPort}/team/app:v1`);
    expect(literal).toMatchObject({ decision: 'deny', policy: 'loopback-literal', digest: null });
    expect(literal.checks[0]).toMatchObject({ type: 'registry', code: 'registry_egress_refused' });
    const byName = await decide(`localhost:${listening.port}/team/app@${DIGEST}`);
    expect(byName).toMatchObject({ decision: 'deny', policy: 'loopback-name' });
    expect(byName.checks[0]).toMatchObject({ type: 'cosign', code: 'registry_egress_refused' });
    // a wildcard registry ("**") matches, but opens no egress by itself
    const wildcard = await decide(`${unnamed.hostPort}/other/app:v1`);
    expect(wildcard).toMatchObject({ decision: 'deny', policy: 'everything' });
    expect(wildcard.checks).toEqual([expect.objectContaining({ type: 'registry', code: 'registry_not_allowed' })]);
    for (const d of [literal, byName, wildcard]) expectNoLeak(JSON.stringify(d));
    expect(listening.connections).toBe(0);
    // signing is bounded the same way, even for an admin
    const sign = await tb.request.post('/v1/signatures').set(admin).send({ image: `${unnamed.hostPort}/other/app:v1`, key: 'release' });
    expect(sign.status, sign.text).toBe(403);
    expect(sign.body.code).toBe('registry_not_allowed');
    const named = await tb.request.post('/v1/signatures').set(admin).send({ image: `${listening.hostPort}/team/app:v1`, key: 'release' });
    expect(named.status, named.text).toBe(502);
    expect(named.body.code).toBe('egress_refused');
    expect(listening.connections).toBe(0);
    expect(unnamed.connections).toBe(0);
  });

  it('refuses a token realm on another host: no request there, no credentials', async () => {
    mode = 'realm';
    // Basic credentials: the kind the token flow would send to the realm
    expect((await tb.request.post('/v1/secrets').set(admin).send({ name: 'fake-basic', value: JSON.stringify({ username: 'u', password: 'registry-password' }) })).status).toBe(201);
    expect((await tb.request.put(`/v1/registry-credentials/${fake.hostPort}`).set(admin).send({ secret: 'fake-basic' })).status).toBe(200);
    await putPolicy({ name: 'fake', images: [`${fake.hostPort}/**`], rules: { nonRootUser: true } });
    const d = await decide(`${fake.hostPort}/team/app:v1`);
    expect(d).toMatchObject({ decision: 'deny', policy: 'fake' });
    expect(d.checks[0]).toMatchObject({ type: 'registry', code: 'registry_egress_refused' });
    expectNoLeak(JSON.stringify(d), second.hostPort, String(second.port));
    const sign = await tb.request.post('/v1/signatures').set(admin).send({ image: `${fake.hostPort}/team/app:v1`, key: 'release' });
    expect(sign.status, sign.text).toBe(502);
    expect(sign.body.code).toBe('egress_refused');
    expectNoLeak(sign.text, second.hostPort, String(second.port));
    expect(fake.requests.length).toBeGreaterThan(0);
    expect(second.requests).toEqual([]);
    expect((await tb.request.put(`/v1/registry-credentials/${fake.hostPort}`).set(admin).send({ secret: 'fake-cred' })).status).toBe(200);
  });

  it('refuses a redirect to another origin and does not carry the registry token', async () => {
    mode = 'redirect';
    const d = await decide(`${fake.hostPort}/team/app:v1`);
    expect(d.decision).toBe('deny');
    expect(d.checks[0]).toMatchObject({ type: 'registry', code: 'registry_egress_refused' });
    expectNoLeak(JSON.stringify(d), second.hostPort, String(second.port));
    // the token did go to the registry itself
    expect(fake.requests.some((r) => r.authorization === 'Bearer registry-token-secret')).toBe(true);
    expect(second.requests).toEqual([]);
  });

  it('refuses a blob upload location on another origin (signing)', async () => {
    mode = 'upload';
    const before = fake.requests.length;
    const sign = await tb.request.post('/v1/signatures').set(admin).send({ image: `${fake.hostPort}/team/app:v1`, key: 'release' });
    expect(sign.status, sign.text).toBe(502);
    expect(sign.body.code).toBe('egress_refused');
    expectNoLeak(sign.text, second.hostPort, String(second.port));
    expect(fake.requests.slice(before).some((r) => r.method === 'POST')).toBe(true);
    expect(second.requests).toEqual([]);
  });

  it('keeps upstream bodies and socket errors out of decisions and problems', async () => {
    mode = 'error-body';
    const d = await decide(`${fake.hostPort}/team/app:v1`);
    expect(d.checks[0]).toMatchObject({ type: 'registry', code: 'registry_bad_response' });
    expectNoLeak(JSON.stringify(d));
    const sign = await tb.request.post('/v1/signatures').set(admin).send({ image: `${fake.hostPort}/team/app:v1`, key: 'release' });
    expect(sign.status).toBe(502);
    expectNoLeak(sign.text);

    await putPolicy({ name: 'down', images: [`${downRegistry}/**`], rules: { nonRootUser: true } });
    const down = await decide(`${downRegistry}/team/app:v1`);
    expect(down.checks[0]).toMatchObject({ type: 'registry', code: 'registry_unreachable' });
    expectNoLeak(JSON.stringify(down));
    const downSign = await tb.request.post('/v1/signatures').set(admin).send({ image: `${downRegistry}/team/app:v1`, key: 'release' });
    expect(downSign.body.code).toBe('registry_unreachable');
    expectNoLeak(downSign.text);
  });

  it('requires https for Notary servers unless the host is configured for plain http', async () => {
    const doc = (server: string) => ({ name: 'notary-egress', images: ['notary.example.com/team/*'], notary: { server, rootKeys: ['a'.repeat(64)] } });
    const plain = await tb.request.post('/v1/policies').set(admin).send(doc('http://notary.example.com:4443'));
    expect(plain.status, plain.text).toBe(400);
    expect(plain.text).toMatch(/https/);
    expect((await tb.request.post('/v1/policies').set(admin).send(doc('https://user:pw@notary.example.com'))).status).toBe(400);
    expect((await tb.request.post('/v1/policies').set(admin).send(doc('https://notary.example.com'))).status).toBe(201);
    // a host listed in KEYWARDEN_INSECURE_REGISTRIES may use plain http
    expect((await tb.request.put('/v1/policies/notary-egress').set(admin).send(doc(`http://${fake.hostPort}`))).status).toBe(200);
  });
});

describe('Notary client egress (fetch time)', () => {
  it('refuses plain http, private addresses and other-origin realms with the broker’s egress fetch', async () => {
    const realmTarget = await countingServer((_q, r) => r.writeHead(200).end('{"token":"t"}'));
    const notary = await countingServer((_q, r) => r.writeHead(401, { 'WWW-Authenticate': `Bearer realm="http://${realmTarget.hostPort}/token"` }).end());
    const strict = new EgressPolicy({ insecureHosts: [], allowedHosts: [] });
    const configured = new EgressPolicy({ insecureHosts: [notary.hostPort], allowedHosts: [] });
    const base = { gun: 'registry.example.com/team/app', tag: 'v1', rootKeys: ['a'.repeat(64)], timeoutMs: 2000 };
    try {
      // stored before https was required: refused when fetched
      const plain = await verifyNotaryTrust({ ...base, server: `http://${notary.hostPort}`, fetchImpl: strict.fetch });
      expect(plain).toMatchObject({ ok: false, code: 'unreachable' });
      expect(plain.reason).toMatch(/plain http refused/);
      // https to a loopback address nobody configured
      const loopback = await verifyNotaryTrust({ ...base, server: `https://127.0.0.1:${notary.port}`, fetchImpl: strict.fetch });
      expect(loopback).toMatchObject({ ok: false, code: 'unreachable' });
      expect(notary.connections).toBe(0);
      // configured server, but its realm is on another host: no credentials leave
      const realm = await verifyNotaryTrust({ ...base, server: `http://${notary.hostPort}`, fetchImpl: configured.fetch, credentials: { username: 'u', password: 'p' } });
      expect(realm).toMatchObject({ ok: false, code: 'unreachable' });
      expect(realm.reason).toMatch(/token realm on another host refused/);
      expect(notary.requests.length).toBeGreaterThan(0);
      expect(realmTarget.connections).toBe(0);
    } finally {
      await strict.close();
      await configured.close();
      await Promise.all([realmTarget.close(), notary.close()]);
    }
  });
});
