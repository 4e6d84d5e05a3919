import { createHash, generateKeyPairSync, sign as cryptoSign, constants, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canonicalJson, CanonicalJsonError } from '../../src/trust/notary/canonical-json.js';
import { parseBearerChallenge } from '../../src/trust/notary/notary-client.js';
import { verifyNotaryTrust, type NotaryCheckInput } from '../../src/trust/notary/notary-verifier.js';
import { computeKeyId, parsePinnedKey, parseTufKey, pinnedKeyMatches } from '../../src/trust/notary/tuf-keys.js';
import { verifySignature } from '../../src/trust/notary/tuf-signatures.js';
import {
  createDelegationKey,
  freePort,
  NotaryCli,
  notaryToolsAvailable,
  startNotaryServer,
  type NotaryServerHandle,
} from '../support/notary-server.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), 'notary-fixtures');
const fixture = (p: string) => readFileSync(join(FIXTURES, p));
const sha256Hex = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

// ---------------------------------------------------------------- helpers

/** A fetch that serves captured metadata for one GUN, optionally transformed. */
function fixtureFetch(dir: string, gun: string, transform?: (role: string, body: Buffer) => Buffer): typeof fetch {
  return (async (url: string | URL | Request) => {
    const u = new URL(String(url));
    const prefix = `/v2/${gun}/_trust/tuf/`;
    if (!u.pathname.startsWith(prefix)) return new Response('not found', { status: 404 });
    const role = u.pathname.slice(prefix.length).replace(/\.json$/, '');
    let body: Buffer;
    try {
      body = fixture(`${dir}/${role}.json`);
    } catch {
      return new Response('{"errors":[{"code":"METADATA_NOT_FOUND"}]}', { status: 404 });
    }
    if (transform) body = transform(role, body);
    return new Response(new Uint8Array(body), { status: 200, headers: { 'content-type': 'application/json' } });
  }) as typeof fetch;
}

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    const a = server.address();
    resolve(`http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`);
  }));
}

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

/** HTTP proxy on loopback that forwards GETs to `upstream` and lets the test rewrite bodies. */
async function startProxy(
  upstream: string,
  handler: (req: IncomingMessage, res: ServerResponse, forward: () => Promise<{ status: number; headers: Headers; body: Buffer }>) => Promise<void> | void,
): Promise<{ url: string; close: () => Promise<void> }> {
  const server = createServer((req, res) => {
    const forward = async () => {
      const r = await fetch(upstream + (req.url ?? '/'));
      return { status: r.status, headers: r.headers, body: Buffer.from(await r.arrayBuffer()) };
    };
    Promise.resolve(handler(req, res, forward)).catch((err) => {
      res.statusCode = 502;
      res.end(String(err));
    });
  });
  const url = await listen(server);
  return { url, close: () => closeServer(server) };
}

function tamperProxy(upstream: string, role: string, edit: (body: Buffer) => Buffer) {
  return startProxy(upstream, async (req, res, forward) => {
    const r = await forward();
    let body = r.body;
    if (req.url?.endsWith(`/_trust/tuf/${role}.json`)) body = edit(body);
    res.writeHead(r.status, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
  });
}

// ---------------------------------------------------------------- unit tests

describe('canonical JSON (docker/go canonical/json behaviour)', () => {
  it('sorts keys, drops whitespace and writes integers', () => {
    expect(canonicalJson({ b: 1, a: [true, null, { d: 'x', c: -0 }], e: 1e3 })).toBe('{"a":[true,null,{"c":0,"d":"x"}],"b":1,"e":1000}');
  });

  it('escapes only quote and backslash; control chars, HTML chars and non-ASCII stay raw', () => {
    const out = canonicalJson({ s: 'a"b\\c\n\t<>&\u2028é\u0001' });
    expect(out).toBe('{"s":"a\\"b\\\\c\n\t<>&\u2028é\u0001"}');
    expect(Buffer.from(out, 'utf8').includes(Buffer.from([0x01]))).toBe(true);
  });

  it('orders keys by UTF-8 bytes like Go, not by UTF-16 code units', () => {
    // U+FF61 is EF BD A1 in UTF-8, U+1F600 is F0 9F 98 80; in UTF-16 the emoji's surrogate (D83D) sorts first.
    expect(canonicalJson({ '\u{1F600}': 2, '\uFF61': 1 })).toBe('{"\uFF61":1,"\u{1F600}":2}');
  });

  it('rejects non-integral numbers', () => {
    expect(() => canonicalJson({ a: 1.5 })).toThrow(CanonicalJsonError);
    expect(() => canonicalJson({ a: Number.NaN })).toThrow(CanonicalJsonError);
  });

  it('reproduces the exact bytes of the signed part of real notary-server output', () => {
    for (const f of ['app/root.json', 'app/timestamp.json', 'app/snapshot.json', 'app/targets.json', 'del/targets/releases.json']) {
      const raw = fixture(f).toString('utf8');
      const start = raw.indexOf('{"signed":') === 0 ? '{"signed":'.length : -1;
      const end = raw.indexOf(',"signatures":');
      expect(start).toBeGreaterThan(0);
      expect(canonicalJson(JSON.parse(raw).signed)).toBe(raw.slice(start, end));
    }
  });
});

describe('TUF key ids and signatures', () => {
  const root = JSON.parse(fixture('app/root.json').toString('utf8'));
  const delTargets = JSON.parse(fixture('del/targets.json').toString('utf8'));

  it('computes the key id notary uses for every key in real root.json and delegations', () => {
    const keys = { ...root.signed.keys, ...delTargets.signed.delegations.keys };
    expect(Object.keys(keys).length).toBe(5);
    for (const [id, key] of Object.entries(keys)) {
      expect(parseTufKey(key).id).toBe(id);
      const k = key as { keytype: string; keyval: { public: string } };
      expect(computeKeyId(k.keytype, Buffer.from(k.keyval.public, 'base64'))).toBe(id);
    }
    const types = Object.values(keys).map((k) => (k as { keytype: string }).keytype).sort();
    expect(types).toEqual(['ecdsa', 'ecdsa', 'ecdsa-x509', 'ecdsa-x509', 'ed25519']);
  });

  it("computes notary's canonical id of x509 keys (as printed by `notary key list`)", () => {
    const rootId = root.signed.roles.root.keyids[0];
    expect(parseTufKey(root.signed.keys[rootId]).canonicalId).toBe('c8104522fd2480ce1e8647e08389867c9ffae86cd4e0cc69a5d9d937cfc20805');
    const [delId] = Object.keys(delTargets.signed.delegations.keys);
    expect(parseTufKey(delTargets.signed.delegations.keys[delId]).canonicalId).toBe('5c3cf9d393f5569347250ef9f871be38509fe64eb477f3d5fff99f5ec4fe5fae');
  });

  it('parses pinned keys in every accepted form and matches only the right key', () => {
    const rootId = root.signed.roles.root.keyids[0];
    const key = parseTufKey(root.signed.keys[rootId]);
    const b64 = root.signed.keys[rootId].keyval.public as string;
    const certPem = Buffer.from(b64, 'base64').toString('utf8');
    const pubPem = new X509Certificate(certPem).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    for (const form of [b64, certPem, pubPem, Buffer.from(pubPem).toString('base64'), rootId, key.canonicalId]) {
      expect(pinnedKeyMatches(parsePinnedKey(form), key)).toBe(true);
    }
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    expect(pinnedKeyMatches(parsePinnedKey(other), key)).toBe(false);
    expect(pinnedKeyMatches(parsePinnedKey('0'.repeat(64)), key)).toBe(false);
    expect(() => parsePinnedKey('not a key!')).toThrow();
  });

  it('verifies real ecdsa and eddsa signatures and rejects altered messages', () => {
    const ts = JSON.parse(fixture('app/timestamp.json').toString('utf8'));
    const tsKey = parseTufKey(root.signed.keys[ts.signatures[0].keyid]);
    expect(ts.signatures[0].method).toBe('eddsa');
    const msg = Buffer.from(canonicalJson(ts.signed));
    const sig = Buffer.from(ts.signatures[0].sig, 'base64');
    expect(verifySignature(tsKey, 'eddsa', sig, msg)).toBe(true);
    expect(verifySignature(tsKey, 'eddsa', sig, Buffer.concat([msg, Buffer.from(' ')]))).toBe(false);
    expect(verifySignature(tsKey, 'ecdsa', sig, msg)).toBe(false);

    const rootKey = parseTufKey(root.signed.keys[root.signatures[0].keyid]);
    const rmsg = Buffer.from(canonicalJson(root.signed));
    const rsig = Buffer.from(root.signatures[0].sig, 'base64');
    expect(rsig.length).toBe(64);
    expect(verifySignature(rootKey, 'ecdsa', rsig, rmsg)).toBe(true);
    expect(verifySignature(rootKey, 'ecdsa', rsig, rmsg.subarray(1))).toBe(false);
  });

  it('uses RSA-PSS with SHA-256 and a 32-byte salt, as notary does', () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const der = publicKey.export({ type: 'spki', format: 'der' });
    const key = parseTufKey({ keytype: 'rsa', keyval: { public: der.toString('base64'), private: null } });
    const msg = Buffer.from('{"a":1}');
    const good = cryptoSign('sha256', msg, { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
    const otherSalt = cryptoSign('sha256', msg, { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 64 });
    expect(verifySignature(key, 'rsapss', good, msg)).toBe(true);
    expect(verifySignature(key, 'rsapss', otherSalt, msg)).toBe(false);
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ type: 'spki', format: 'der' });
    expect(() => parseTufKey({ keytype: 'rsa', keyval: { public: small.toString('base64') } })).toThrow(/2048/);
  });

  it('parses bearer challenges', () => {
    expect(parseBearerChallenge('Bearer realm="https://auth.example/token",service="notary",scope="repository:a/b:pull"')).toEqual({
      realm: 'https://auth.example/token',
      service: 'notary',
      scope: 'repository:a/b:pull',
    });
    expect(parseBearerChallenge('Basic realm="x"')).toBeUndefined();
  });
});

describe('verifyNotaryTrust on captured real notary metadata (offline)', () => {
  const gun = '127.0.0.1:5000/team/app';
  const rootJson = JSON.parse(fixture('app/root.json').toString('utf8'));
  const pinned = rootJson.signed.keys[rootJson.signed.roles.root.keyids[0]].keyval.public as string;
  const now = new Date('2026-11-27T00:00:00Z');
  const base = (over: Partial<NotaryCheckInput> = {}): NotaryCheckInput => ({
    server: 'http://127.0.0.1:1',
    gun,
    tag: 'v1',
    rootKeys: [pinned],
    now,
    fetchImpl: fixtureFetch('app', gun),
    ...over,
  });

  it('accepts the real data and falls back to targets when targets/releases was never published', async () => {
    const r = await verifyNotaryTrust(base());
    expect(r).toMatchObject({ ok: true, code: 'ok', digest: `sha256:${sha256Hex('a')}` });
    expect(r.roles).toEqual(['root', 'timestamp', 'snapshot', 'targets']);
    expect(r.expires?.toISOString()).toBe('2026-12-10T12:35:08.535Z');
  });

  it('rejects a key id that is not the hash of its key material', async () => {
    const r = await verifyNotaryTrust(
      base({
        fetchImpl: fixtureFetch('app', gun, (role, body) => {
          if (role !== 'timestamp') return body;
          const doc = JSON.parse(body.toString());
          doc.signatures.push({ ...doc.signatures[0], sig: Buffer.alloc(64).toString('base64') });
          doc.signatures.shift();
          return Buffer.from(JSON.stringify(doc));
        }),
      }),
    );
    expect(r).toMatchObject({ ok: false, code: 'signature_invalid' });
  });

  it('reports version rollback against a remembered version', async () => {
    const r = await verifyNotaryTrust(base({ minVersions: { targets: 99 } }));
    expect(r).toMatchObject({ ok: false, code: 'version_rollback' });
    expect(r.reason).toMatch(/targets\.json version \d+ is older than the last seen version 99/);
  });

  it('never throws on garbage', async () => {
    for (const body of ['', 'null', '{"signed":1}', '[]', '{"signed":{"_type":"Root"},"signatures":[]}']) {
      const r = await verifyNotaryTrust(base({ fetchImpl: (async () => new Response(body)) as typeof fetch }));
      expect(r.ok).toBe(false);
      expect(r.code).toBe('bad_metadata');
    }
    const throwing = (async () => {
      throw new TypeError('boom');
    }) as typeof fetch;
    expect(await verifyNotaryTrust(base({ fetchImpl: throwing }))).toMatchObject({ ok: false, code: 'unreachable' });
    expect(await verifyNotaryTrust(base({ rootKeys: [] }))).toMatchObject({ ok: false, code: 'root_untrusted' });
    expect(await verifyNotaryTrust({ ...base(), server: 'not a url' })).toMatchObject({ ok: false, code: 'unreachable' });
  });
});

// ---------------------------------------------------------------- real notary-server + notary client

const tools = notaryToolsAvailable();
if (!tools.ok) {
  console.warn(`[notary.test] skipping real notary-server tests: ${tools.reason}`);
}
const describeReal = tools.ok ? describe : describe.skip;

describeReal('verifyNotaryTrust against a real notary-server and notary client', () => {
  const APP = '127.0.0.1:5000/team/app';
  const DEL = '127.0.0.1:5000/team/del';
  const digestOf = (s: string) => `sha256:${sha256Hex(s)}`;
  let server: NotaryServerHandle;
  let cli: NotaryCli;
  // A second trust dir: the notary client reuses one root key for every GUN of a trust dir.
  let cliDel: NotaryCli;
  let keysDir: string;
  let appRoot: { keyId: string; publicB64: string; certPem: string };
  let delRoot: { publicB64: string };

  beforeAll(async () => {
    server = await startNotaryServer();
    cli = await NotaryCli.create(server.url);
    keysDir = await mkdtemp(join(tmpdir(), 'kw-notary-keys-'));

    await cli.init(APP);
    await cli.addHash(APP, 'v1', 1234, sha256Hex('image-v1'));
    appRoot = await cli.rootKey(APP);

    cliDel = await NotaryCli.create(server.url);
    await cliDel.init(DEL);
    const releases = await createDelegationKey(keysDir, 'releases');
    const qa = await createDelegationKey(keysDir, 'qa');
    await cliDel.importKey(releases.keyPath, 'targets/releases');
    await cliDel.importKey(qa.keyPath, 'targets/qa');
    await cliDel.addDelegation(DEL, 'targets/releases', releases.certPath);
    await cliDel.addDelegation(DEL, 'targets/qa', qa.certPath);
    await cliDel.addHash(DEL, 'v2', 99, sha256Hex('image-v2'), ['targets/releases']);
    await cliDel.addHash(DEL, 'v3', 99, sha256Hex('image-v3'), ['targets/releases', 'targets/qa']);
    await cliDel.addHash(DEL, 'v4', 99, sha256Hex('image-v4-a'), ['targets/releases']);
    await cliDel.addHash(DEL, 'v4', 99, sha256Hex('image-v4-b'), ['targets/qa']);
    delRoot = await cliDel.rootKey(DEL);
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    await cli?.cleanup();
    await cliDel?.cleanup();
    if (keysDir) await rm(keysDir, { recursive: true, force: true });
  });

  const check = (over: Partial<NotaryCheckInput>) =>
    verifyNotaryTrust({ server: server.url, gun: APP, tag: 'v1', rootKeys: [appRoot.publicB64], timeoutMs: 3000, ...over });

  it('accepts a signed tag and returns its digest', async () => {
    expect(appRoot).toMatchObject({ keytype: 'ecdsa-x509' });
    const r = await check({});
    expect(r).toMatchObject({ ok: true, code: 'ok', digest: digestOf('image-v1') });
    expect(r.roles).toEqual(['root', 'timestamp', 'snapshot', 'targets']);
    // timestamp.json is the shortest-lived document (14 days on notary-server)
    const days = ((r.expires?.getTime() ?? 0) - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(13);
    expect(days).toBeLessThan(15);
    const same = await check({ expectedDigest: digestOf('image-v1').toUpperCase().replace('SHA256', 'sha256') });
    expect(same.ok).toBe(true);
  });

  it('accepts the pinned root key as PEM certificate, PEM public key and `notary key list` id', async () => {
    const pubPem = new X509Certificate(appRoot.certPem).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    const listed = await cli.listedRootKeyId();
    for (const key of [appRoot.certPem, pubPem, listed, appRoot.keyId]) {
      expect(await check({ rootKeys: [key] })).toMatchObject({ ok: true, digest: digestOf('image-v1') });
    }
  });

  it('rejects trust data whose root is not signed by the pinned key', async () => {
    expect(await cliDel.listedRootKeyId()).not.toBe(await cli.listedRootKeyId());
    const r = await check({ rootKeys: [delRoot.publicB64] });
    expect(r).toMatchObject({ ok: false, code: 'root_untrusted' });
    expect(r.reason).toContain('root.json is not signed by a pinned root key');
    const random = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }) as string;
    expect(await check({ rootKeys: [random] })).toMatchObject({ ok: false, code: 'root_untrusted' });
  });

  it('detects a tampered targets.json (hash vs snapshot)', async () => {
    const evil = Buffer.from(sha256Hex('evil'), 'hex').toString('base64');
    const good = Buffer.from(sha256Hex('image-v1'), 'hex').toString('base64');
    const proxy = await tamperProxy(server.url, 'targets', (b) => Buffer.from(b.toString().replace(good, evil)));
    try {
      const r = await check({ server: proxy.url });
      expect(r).toMatchObject({ ok: false, code: 'hash_mismatch' });
      expect(r.reason).toContain('targets.json hash does not match snapshot');
    } finally {
      await proxy.close();
    }
  });

  it('detects a tampered snapshot.json and a tampered timestamp.json and root.json', async () => {
    const snap = await tamperProxy(server.url, 'snapshot', (b) => Buffer.from(b.toString().replace(/"version":(\d+)/, (_m, v) => `"version":${Number(v) + 1}`)));
    try {
      const r = await check({ server: snap.url });
      expect(r).toMatchObject({ ok: false, code: 'hash_mismatch' });
      expect(r.reason).toContain('snapshot.json hash does not match timestamp');
    } finally {
      await snap.close();
    }
    const ts = await tamperProxy(server.url, 'timestamp', (b) => Buffer.from(b.toString().replace(/"expires":"(\d{4})/, (_m, y) => `"expires":"${Number(y) + 5}`)));
    try {
      const r = await check({ server: ts.url });
      expect(r).toMatchObject({ ok: false, code: 'signature_invalid' });
      expect(r.reason).toMatch(/^timestamp\.json has 0 valid signature/);
    } finally {
      await ts.close();
    }
    const root = await tamperProxy(server.url, 'root', (b) => Buffer.from(b.toString().replace('"consistent_snapshot":false', '"consistent_snapshot":true')));
    try {
      expect(await check({ server: root.url })).toMatchObject({ ok: false, code: 'root_untrusted' });
    } finally {
      await root.close();
    }
  });

  it('rejects expired metadata', async () => {
    const r = await check({ now: new Date(Date.now() + 30 * 86_400_000) });
    expect(r).toMatchObject({ ok: false, code: 'expired' });
    expect(r.reason).toMatch(/^timestamp\.json expired at \d{4}-/);
  });

  it('reports a missing tag and a digest mismatch', async () => {
    const missing = await check({ tag: 'v9' });
    expect(missing).toMatchObject({ ok: false, code: 'tag_missing', reason: 'tag v9 not found in targets' });
    const mismatch = await check({ expectedDigest: digestOf('other') });
    expect(mismatch).toMatchObject({ ok: false, code: 'digest_mismatch', digest: digestOf('image-v1') });
    expect(mismatch.reason).toBe(`digest mismatch: trust data has ${digestOf('image-v1')}, image is ${digestOf('other')}`);
  });

  it('reports a required delegation that does not exist', async () => {
    const r = await check({ delegations: ['targets/releases'] });
    expect(r).toMatchObject({ ok: false, code: 'delegation_missing' });
    expect(r.reason).toContain('required delegation targets/releases absent');
  });

  it('finds a tag in a delegation (explicitly required and by default via targets/releases)', async () => {
    const base = { gun: DEL, rootKeys: [delRoot.publicB64] };
    const required = await check({ ...base, tag: 'v2', delegations: ['targets/releases'] });
    expect(required).toMatchObject({ ok: true, digest: digestOf('image-v2') });
    expect(required.roles).toContain('targets/releases');
    const byDefault = await check({ ...base, tag: 'v2' });
    expect(byDefault).toMatchObject({ ok: true, digest: digestOf('image-v2') });
    expect(await check({ ...base, tag: 'v2', delegations: ['qa'] })).toMatchObject({ ok: false, code: 'tag_missing', reason: 'tag v2 not found in targets/qa' });
  });

  it('enforces the delegation threshold and rejects ambiguous digests', async () => {
    const base = { gun: DEL, rootKeys: [delRoot.publicB64], delegations: ['targets/releases', 'targets/qa'] };
    const notMet = await check({ ...base, tag: 'v2' });
    expect(notMet).toMatchObject({ ok: false, code: 'threshold_not_met' });
    expect(notMet.reason).toContain('found in 1 of 2');
    expect(await check({ ...base, tag: 'v2', threshold: 1 })).toMatchObject({ ok: true, digest: digestOf('image-v2') });
    const both = await check({ ...base, tag: 'v3', threshold: 2 });
    expect(both).toMatchObject({ ok: true, digest: digestOf('image-v3') });
    expect(both.roles).toEqual(expect.arrayContaining(['targets/releases', 'targets/qa']));
    expect(await check({ ...base, tag: 'v4' })).toMatchObject({ ok: false, code: 'ambiguous_digest' });
  });

  it('reports an unreachable server (closed port)', async () => {
    const port = await freePort();
    const r = await check({ server: `http://127.0.0.1:${port}` });
    expect(r).toMatchObject({ ok: false, code: 'unreachable' });
    expect(r.reason).toMatch(/^notary server unreachable: .*ECONNREFUSED/);
  });

  it('times out on a server that never answers', async () => {
    const proxy = await startProxy(server.url, () => undefined /* never respond */);
    try {
      const started = Date.now();
      const r = await check({ server: proxy.url, timeoutMs: 300 });
      expect(r).toMatchObject({ ok: false, code: 'unreachable' });
      expect(r.reason).toContain('timed out after 300 ms');
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      await proxy.close();
    }
  });

  it('follows the registry token flow on 401 and sends credentials only to the realm', async () => {
    const token = 'tok-' + sha256Hex(String(Math.random())).slice(0, 16);
    const seen: string[] = [];
    let proxyUrl = '';
    const proxy = await startProxy(server.url, async (req, res, forward) => {
      if (req.url?.startsWith('/token')) {
        const u = new URL(req.url, 'http://x');
        seen.push(`token ${u.searchParams.get('service')} ${u.searchParams.get('scope')}`);
        if (req.headers.authorization !== `Basic ${Buffer.from('alice:s3cret').toString('base64')}`) {
          res.writeHead(401).end();
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token }));
        return;
      }
      if (req.headers.authorization !== `Bearer ${token}`) {
        expect(req.headers.authorization).toBeUndefined();
        res.writeHead(401, { 'www-authenticate': `Bearer realm="${proxyUrl}/token",service="notary",scope="repository:${APP}:pull"` }).end();
        return;
      }
      const r = await forward();
      res.writeHead(r.status, { 'content-type': 'application/json' }).end(r.body);
    });
    proxyUrl = proxy.url;
    try {
      const ok = await check({ server: proxy.url, credentials: { username: 'alice', password: 's3cret' } });
      expect(ok).toMatchObject({ ok: true, digest: digestOf('image-v1') });
      expect(seen[0]).toBe(`token notary repository:${APP}:pull`);
      const denied = await check({ server: proxy.url, credentials: { username: 'alice', password: 'wrong' } });
      expect(denied).toMatchObject({ ok: false, code: 'unreachable' });
      expect(denied.reason).toContain('token endpoint answered HTTP 401');
    } finally {
      await proxy.close();
    }
  });
});
