import http from 'node:http';
import type net from 'node:net';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EgressPolicy } from '../../src/trust/registry/egress-policy.js';
import { ImageRefError, formatImageRef, parseImageRef } from '../../src/trust/registry/image-ref.js';
import {
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_MANIFEST,
  RegistryClient,
  RegistryError,
} from '../../src/trust/registry/registry-client.js';
import {
  freePort,
  pushRawManifest,
  pushTestImage,
  registryAvailable,
  startRegistry,
  startTokenAuthProxy,
  type TestRegistry,
  type TokenAuthProxy,
} from '../support/registry.js';

/** The image configs read back here are ones the test pushed: a typed view of the fields it checks. */
interface ImageConfigView {
  created?: string;
  os?: string;
  config: { User?: string; Labels?: Record<string, string> };
}

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function expectRegistryError(p: Promise<unknown>, code: string): Promise<RegistryError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).code).toBe(code);
    return err as RegistryError;
  }
  throw new Error(`expected RegistryError ${code}, but the call succeeded`);
}

describe('image-ref', () => {
  const D = `sha256:${'a'.repeat(64)}`;
  it('parses registry/repo:tag, @digest and tag@digest, with ports', () => {
    expect(parseImageRef('127.0.0.1:5000/team/app:v1')).toEqual({ registry: '127.0.0.1:5000', repository: 'team/app', tag: 'v1' });
    expect(parseImageRef(`registry.example.com/app@${D}`)).toEqual({ registry: 'registry.example.com', repository: 'app', digest: D });
    expect(parseImageRef(`localhost:5000/a/b/c:1.0-rc_1@${D}`)).toEqual({
      registry: 'localhost:5000',
      repository: 'a/b/c',
      tag: '1.0-rc_1',
      digest: D,
    });
    expect(parseImageRef('localhost/app:latest').registry).toBe('localhost');
  });
  it('formats back to the same string', () => {
    for (const s of ['127.0.0.1:5000/team/app:v1', `r.io/x/y@${D}`, `r.io:443/x:t@${D}`]) {
      expect(formatImageRef(parseImageRef(s))).toBe(s);
    }
  });
  it('rejects malformed references with ImageRefError', () => {
    const bad = [
      '',
      'app:v1', // no registry
      'team/app:v1', // "team" is not a registry host
      '127.0.0.1:5000/team/app', // neither tag nor digest
      '127.0.0.1:5000/Team/app:v1', // uppercase repo
      '127.0.0.1:5000/team/app:v1@sha256:abc', // short digest
      `127.0.0.1:5000/team/app@md5:${'a'.repeat(32)}`,
      '127.0.0.1:99999/app:v1', // port out of range
      'https://127.0.0.1:5000/app:v1',
      '127.0.0.1:5000/app:-bad',
      '127.0.0.1:5000//app:v1',
      '127.0.0.1:5000/app :v1',
    ];
    for (const s of bad) {
      expect(() => parseImageRef(s), s).toThrow(ImageRefError);
    }
  });
});

const avail = registryAvailable();
const d = avail.ok ? describe : describe.skip;

d('RegistryClient against a real docker-registry', () => {
  let reg: TestRegistry;
  let client: RegistryClient;

  beforeAll(async () => {
    reg = await startRegistry();
    client = new RegistryClient({ insecureRegistries: [reg.hostPort], timeoutMs: 5000 });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  it('resolves tag -> digest (HEAD with Docker-Content-Digest) and digest refs', async () => {
    const img = await pushTestImage(reg.hostPort, 'team/app', 'v1');
    expect(await client.resolveDigest(`${reg.hostPort}/team/app:v1`)).toBe(img.digest);
    expect(await client.resolveDigest({ registry: reg.hostPort, repository: 'team/app', tag: 'v1' })).toBe(img.digest);
    expect(await client.resolveDigest(`${reg.hostPort}/team/app@${img.digest}`)).toBe(img.digest);
    // a re-pushed tag resolves to the new digest
    const img2 = await pushTestImage(reg.hostPort, 'team/app', 'v1');
    expect(img2.digest).not.toBe(img.digest);
    expect(await client.resolveDigest(`${reg.hostPort}/team/app:v1`)).toBe(img2.digest);
    await expectRegistryError(client.resolveDigest(`${reg.hostPort}/team/app:nope`), 'not_found');
  });

  it('resolveDigest falls back to GET + sha256 of the body when HEAD is unsupported', async () => {
    const img = await pushTestImage(reg.hostPort, 'team/nohead', 'v1');
    const heads: string[] = [];
    const noHead: typeof fetch = async (input, init) => {
      if (init?.method === 'HEAD') {
        heads.push(String(input));
        return new Response(null, { status: 405 });
      }
      const res = await fetch(input, init);
      const headers = new Headers(res.headers);
      headers.delete('docker-content-digest');
      return new Response(await res.arrayBuffer(), { status: res.status, headers });
    };
    const c = new RegistryClient({ insecureRegistries: [reg.hostPort], fetchImpl: noHead });
    expect(await c.resolveDigest(`${reg.hostPort}/team/nohead:v1`)).toBe(img.digest);
    expect(heads).toHaveLength(1);
  });

  it('getManifest returns verified bytes, digest, media type and parsed JSON', async () => {
    const img = await pushTestImage(reg.hostPort, 'team/manifest', 'v1');
    const byTag = await client.getManifest(reg.hostPort, 'team/manifest', 'v1');
    expect(byTag.digest).toBe(img.digest);
    expect(byTag.mediaType).toBe(MEDIA_TYPE_OCI_MANIFEST);
    expect(byTag.bytes.equals(img.manifestBytes)).toBe(true);
    expect(byTag.json).toEqual(img.manifest);
    const byDigest = await client.getManifest(reg.hostPort, 'team/manifest', img.digest);
    expect(byDigest.digest).toBe(img.digest);
  });

  it('detects manifest and blob content that does not match the digest', async () => {
    const img = await pushTestImage(reg.hostPort, 'team/tamper', 'v1');
    const configDigest = (img.manifest.config as { digest: string }).digest;
    // a fetch that flips the first byte of every response body (a malicious / broken mirror)
    const tampering: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (init?.method === 'HEAD' || res.status !== 200) return res;
      const body = Buffer.from(await res.arrayBuffer());
      if (body.length > 0) body[0] = body[0]! ^ 0x01;
      return new Response(body, { status: res.status, headers: res.headers });
    };
    const evil = new RegistryClient({ insecureRegistries: [reg.hostPort], fetchImpl: tampering });
    const e1 = await expectRegistryError(evil.getManifest(reg.hostPort, 'team/tamper', img.digest), 'bad_response');
    expect(e1.message).toMatch(/digest/);
    const e2 = await expectRegistryError(evil.getBlob(reg.hostPort, 'team/tamper', configDigest), 'bad_response');
    expect(e2.message).toMatch(/digest/);
    // by tag: Docker-Content-Digest no longer matches the body
    await expectRegistryError(evil.getManifest(reg.hostPort, 'team/tamper', 'v1'), 'bad_response');
    // the honest client is fine
    const blob = await client.getBlob(reg.hostPort, 'team/tamper', configDigest);
    expect(sha256(blob)).toBe(configDigest);
    expect(JSON.parse(blob.toString())).toEqual(img.config);
    await expectRegistryError(client.getBlob(reg.hostPort, 'team/tamper', `sha256:${'0'.repeat(64)}`), 'not_found');
  });

  it('pushBlob / pushManifest round-trip and return content digests', async () => {
    const data = Buffer.from('{"hello":"world"}');
    const blob = await client.pushBlob(reg.hostPort, 'team/push', data);
    expect(blob).toEqual({ digest: sha256(data), size: data.length });
    // idempotent
    expect(await client.pushBlob(reg.hostPort, 'team/push', data)).toEqual(blob);
    const empty = await client.pushBlob(reg.hostPort, 'team/push', Buffer.from('{}'));
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPE_OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: empty.digest, size: 2 },
        layers: [{ mediaType: 'application/json', digest: blob.digest, size: blob.size }],
      }),
    );
    const digest = await client.pushManifest(reg.hostPort, 'team/push', 'art', manifest, MEDIA_TYPE_OCI_MANIFEST);
    expect(digest).toBe(sha256(manifest));
    expect(await client.resolveDigest(`${reg.hostPort}/team/push:art`)).toBe(digest);
    expect((await client.getBlob(reg.hostPort, 'team/push', blob.digest)).toString()).toBe('{"hello":"world"}');
  });

  it('getImageConfig returns User, labels and created, also through an index (linux/amd64 preferred)', async () => {
    const created = '2024-05-01T10:00:00Z';
    const img = await pushTestImage(reg.hostPort, 'team/cfg', 'v1', { user: '1000:1000', labels: { team: 'payments' }, created });
    const cfg = (await client.getImageConfig(`${reg.hostPort}/team/cfg:v1`)) as ImageConfigView;
    expect(cfg.config.User).toBe('1000:1000');
    expect(cfg.config.Labels).toEqual({ team: 'payments' });
    expect(cfg.created).toBe(created);

    const arm = await pushTestImage(reg.hostPort, 'team/cfg', 'arm', { user: 'root' });
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA_TYPE_OCI_INDEX,
        manifests: [
          { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: arm.digest, size: arm.manifestBytes.length, platform: { architecture: 'arm64', os: 'linux' } },
          { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: img.digest, size: img.manifestBytes.length, platform: { architecture: 'amd64', os: 'linux' } },
        ],
      }),
    );
    const indexDigest = await pushRawManifest(reg.hostPort, 'team/cfg', 'multi', index, MEDIA_TYPE_OCI_INDEX);
    expect(await client.resolveDigest(`${reg.hostPort}/team/cfg:multi`)).toBe(indexDigest);
    const viaIndex = (await client.getImageConfig({ registry: reg.hostPort, repository: 'team/cfg', digest: indexDigest })) as ImageConfigView;
    expect(viaIndex.config.User).toBe('1000:1000');
  });

  it('getReferrers falls back to the sha256-<hex> tag index (distribution 2.8 has no referrers API)', async () => {
    const img = await pushTestImage(reg.hostPort, 'team/refs', 'v1');
    expect(await client.pingReferrers(reg.hostPort, 'team/refs', img.digest)).toBe(false);
    expect(await client.getReferrers(reg.hostPort, 'team/refs', img.digest)).toEqual([]);
    const other = await pushTestImage(reg.hostPort, 'team/refs', 'other');
    const index = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPE_OCI_INDEX,
      manifests: [
        { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: other.digest, size: other.manifestBytes.length, artifactType: 'application/x-a' },
        { mediaType: MEDIA_TYPE_OCI_MANIFEST, digest: img.digest, size: img.manifestBytes.length, artifactType: 'application/x-b' },
      ],
    };
    await pushRawManifest(reg.hostPort, 'team/refs', img.digest.replace(':', '-'), Buffer.from(JSON.stringify(index)), MEDIA_TYPE_OCI_INDEX);
    const all = await client.getReferrers(reg.hostPort, 'team/refs', img.digest);
    expect(all.map((r) => r.artifactType)).toEqual(['application/x-a', 'application/x-b']);
    const onlyA = await client.getReferrers(reg.hostPort, 'team/refs', img.digest, 'application/x-a');
    expect(onlyA).toHaveLength(1);
    expect(onlyA[0]!.digest).toBe(other.digest);
  });

  it('refuses plain http for registries not listed as insecure', async () => {
    await pushTestImage(reg.hostPort, 'team/secure', 'v1');
    // reachable (explicitly allowed egress), but not configured for plain http
    const egress = new EgressPolicy({ insecureHosts: [], allowedHosts: [reg.hostPort] });
    const strict = new RegistryClient({ insecureRegistries: [], egress, timeoutMs: 5000 });
    const err = await expectRegistryError(strict.resolveDigest(`${reg.hostPort}/team/secure:v1`), 'insecure_refused');
    expect(err.message).toMatch(/KEYWARDEN_INSECURE_REGISTRIES/);
    await egress.close();
  });

  it('maps connection failures and hangs to unreachable / timeout', async () => {
    const port = await freePort();
    const c = new RegistryClient({ insecureRegistries: [`127.0.0.1:${port}`], timeoutMs: 2000 });
    await expectRegistryError(c.resolveDigest(`127.0.0.1:${port}/x/y:v1`), 'unreachable');

    const sockets = new Set<net.Socket>();
    const hang = http.createServer(() => {
      /* never answers */
    });
    hang.on('connection', (s) => sockets.add(s));
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
    const hp = `127.0.0.1:${(hang.address() as net.AddressInfo).port}`;
    try {
      const slow = new RegistryClient({ insecureRegistries: [hp], timeoutMs: 300 });
      await expectRegistryError(slow.getManifest(hp, 'x/y', 'v1'), 'timeout');
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => hang.close(() => r()));
    }
  });

  describe('bearer token flow (token proxy in front of the registry)', () => {
    let proxy: TokenAuthProxy;
    let digest: string;
    beforeAll(async () => {
      digest = (await pushTestImage(reg.hostPort, 'team/private', 'v1')).digest;
      proxy = await startTokenAuthProxy(reg.hostPort, { username: 'ci', password: 's3cret' });
    });
    afterAll(async () => {
      await proxy?.close();
    });

    it('gets a token from the realm with basic credentials, caches it, and retries', async () => {
      const seen: string[] = [];
      const c = new RegistryClient({
        insecureRegistries: [proxy.hostPort],
        credentials: async (r) => {
          seen.push(r);
          return { username: 'ci', password: 's3cret' };
        },
      });
      expect(await c.resolveDigest(`${proxy.hostPort}/team/private:v1`)).toBe(digest);
      expect(seen[0]).toBe(proxy.hostPort);
      expect(proxy.tokenRequests).toHaveLength(1);
      expect(proxy.tokenRequests[0]).toMatchObject({ authorized: true, service: 'keywarden-test' });
      expect(proxy.tokenRequests[0]!.scopes).toContain('repository:team/private:pull');

      // cached: no new token request for the same scope
      const m = await c.getManifest(proxy.hostPort, 'team/private', digest);
      expect(m.digest).toBe(digest);
      const cfg = (await c.getImageConfig(`${proxy.hostPort}/team/private@${digest}`)) as ImageConfigView;
      expect(cfg.os).toBe('linux');
      expect(proxy.tokenRequests).toHaveLength(1);

      // push needs a pull,push token (new scope) and goes through the proxy
      const blob = await c.pushBlob(proxy.hostPort, 'team/private', Buffer.from('pushed via proxy'));
      expect(proxy.tokenRequests).toHaveLength(2);
      expect(proxy.tokenRequests[1]!.scopes).toContain('repository:team/private:pull,push');
      expect((await client.getBlob(reg.hostPort, 'team/private', blob.digest)).toString()).toBe('pushed via proxy');

      // a revoked token is transparently replaced
      proxy.revokeTokens();
      expect(await c.resolveDigest(`${proxy.hostPort}/team/private:v1`)).toBe(digest);
      expect(proxy.tokenRequests).toHaveLength(3);
    });

    it('reports unauthorized for missing or wrong credentials', async () => {
      const anon = new RegistryClient({ insecureRegistries: [proxy.hostPort] });
      await expectRegistryError(anon.resolveDigest(`${proxy.hostPort}/team/private:v1`), 'unauthorized');
      const wrong = new RegistryClient({
        insecureRegistries: [proxy.hostPort],
        credentials: async () => ({ username: 'ci', password: 'nope' }),
      });
      const err = await expectRegistryError(wrong.resolveDigest(`${proxy.hostPort}/team/private:v1`), 'unauthorized');
      expect(err.message).toMatch(/token service/);
      const badStatic = new RegistryClient({ insecureRegistries: [proxy.hostPort], credentials: async () => ({ token: 'forged' }) });
      await expectRegistryError(badStatic.resolveDigest(`${proxy.hostPort}/team/private:v1`), 'unauthorized');
    });
  });

  it('uses basic auth when the registry answers with a Basic challenge', async () => {
    const img = await pushTestImage(reg.hostPort, 'team/basic', 'v1');
    const [upHost, upPort] = reg.hostPort.split(':');
    const expected = `Basic ${Buffer.from('u:p').toString('base64')}`;
    let sawAuth = 0;
    const srv = http.createServer((req, res) => {
      if (req.headers.authorization !== expected) {
        res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="test"' });
        res.end();
        return;
      }
      sawAuth++;
      const up = http.request({ host: upHost, port: Number(upPort), method: req.method, path: req.url, headers: req.headers }, (u) => {
        res.writeHead(u.statusCode ?? 502, u.headers);
        u.pipe(res);
      });
      req.pipe(up);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const hp = `127.0.0.1:${(srv.address() as net.AddressInfo).port}`;
    try {
      const c = new RegistryClient({ insecureRegistries: [hp], credentials: async () => ({ username: 'u', password: 'p' }) });
      expect(await c.resolveDigest(`${hp}/team/basic:v1`)).toBe(img.digest);
      expect(await c.resolveDigest(`${hp}/team/basic:v1`)).toBe(img.digest);
      expect(sawAuth).toBe(2);
      const anon = new RegistryClient({ insecureRegistries: [hp] });
      await expectRegistryError(anon.resolveDigest(`${hp}/team/basic:v1`), 'unauthorized');
    } finally {
      srv.closeAllConnections();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });
});
