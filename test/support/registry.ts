/**
 * Test support: a real distribution registry (Debian's docker-registry 2.8.x)
 * on loopback with in-memory storage, a test-image pusher, and a tiny
 * bearer-token auth proxy in front of the registry.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

export const REGISTRY_BINARY = process.env.KEYWARDEN_DOCKER_REGISTRY_BIN ?? '/usr/bin/docker-registry';

/** Whether the registry binary is present; when not, the reason is printed once. */
export function registryAvailable(): { ok: boolean; reason?: string } {
  if (existsSync(REGISTRY_BINARY)) return { ok: true };
  const reason = `docker-registry binary not found at ${REGISTRY_BINARY} (install Debian's docker-registry or set KEYWARDEN_DOCKER_REGISTRY_BIN); skipping registry tests`;
  // CI installs the tools; there a missing binary is a failure, not a skip
  if (process.env.KEYWARDEN_REQUIRE_TOOLS === '1') throw new Error(reason);
  console.warn(reason);
  return { ok: false, reason };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (!addr || typeof addr === 'string') return reject(new Error('no port'));
      const port = addr.port;
      srv.close(() => resolve(port));
    });
  });
}

export interface TestRegistry {
  /** "127.0.0.1:PORT" */
  hostPort: string;
  url: string;
  stop(): Promise<void>;
}

export async function startRegistry(): Promise<TestRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'kw-registry-'));
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const cfg = join(dir, 'config.yml');
    writeFileSync(
      cfg,
      [
        'version: 0.1',
        'log:',
        '  level: error',
        '  accesslog:',
        '    disabled: true',
        'storage:',
        '  inmemory: {}',
        'http:',
        `  addr: 127.0.0.1:${port}`,
        '  secret: keywarden-test-secret',
        '',
      ].join('\n'),
    );
    const child: ChildProcess = spawn(REGISTRY_BINARY, ['serve', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const hostPort = `127.0.0.1:${port}`;
    const url = `http://${hostPort}`;
    const deadline = Date.now() + 15_000;
    let up = false;
    let dead = false;
    void exited.then(() => {
      dead = true;
    });
    while (Date.now() < deadline && !dead) {
      try {
        const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (res.status === 200) {
          up = true;
          break;
        }
      } catch {
        /* not up yet */
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    if (up) {
      return {
        hostPort,
        url,
        async stop() {
          if (child.exitCode === null && child.signalCode === null) {
            child.kill('SIGTERM');
            const t = setTimeout(() => child.kill('SIGKILL'), 3000);
            await exited;
            clearTimeout(t);
          }
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    if (!dead) child.kill('SIGKILL');
    await exited;
    lastError = new Error(`docker-registry did not come up on ${hostPort}: ${stderr}`);
  }
  rmSync(dir, { recursive: true, force: true });
  throw lastError;
}

// ------------------------------------------------------------------ pushing

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Minimal ustar archive with the given files. */
export function makeTar(files: Record<string, string | Buffer>): Buffer {
  const chunks: Buffer[] = [];
  for (const [name, content] of Object.entries(files)) {
    const data = Buffer.isBuffer(content) ? content : Buffer.from(content);
    const h = Buffer.alloc(512, 0);
    h.write(name, 0, 100, 'utf8');
    h.write('0000644\0', 100);
    h.write('0000000\0', 108);
    h.write('0000000\0', 116);
    h.write(data.length.toString(8).padStart(11, '0') + '\0', 124);
    h.write('00000000000\0', 136);
    h.write('        ', 148); // checksum placeholder
    h.write('0', 156);
    h.write('ustar\0', 257);
    h.write('00', 263);
    let sum = 0;
    for (const byte of h) sum += byte;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
    chunks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512, 0));
  }
  chunks.push(Buffer.alloc(1024, 0));
  return Buffer.concat(chunks);
}

async function uploadBlob(base: string, repo: string, data: Buffer, headers: Record<string, string> = {}): Promise<string> {
  const digest = sha256(data);
  const start = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers });
  await start.arrayBuffer();
  if (start.status !== 202) throw new Error(`blob upload start failed: HTTP ${start.status}`);
  const loc = new URL(start.headers.get('location')!, base);
  loc.searchParams.set('digest', digest);
  const put = await fetch(loc, {
    method: 'PUT',
    headers: { ...headers, 'Content-Type': 'application/octet-stream' },
    body: data,
  });
  const text = await put.text();
  if (put.status !== 201) throw new Error(`blob upload failed: HTTP ${put.status} ${text}`);
  return digest;
}

export interface PushedImage {
  digest: string;
  manifest: Record<string, unknown>;
  manifestBytes: Buffer;
  config: Record<string, unknown>;
}

/**
 * Pushes config blob + one gzip layer + OCI manifest to `registryHostPort/repo:tag`
 * through the plain registry HTTP API.
 */
export async function pushTestImage(
  registryHostPort: string,
  repo: string,
  tag: string,
  opts: { user?: string; labels?: Record<string, string>; created?: string; content?: string } = {},
): Promise<PushedImage> {
  const base = `http://${registryHostPort}`;
  const tar = makeTar({ 'hello.txt': opts.content ?? `hello ${randomBytes(8).toString('hex')}\n` });
  const layer = gzipSync(tar);
  const layerDigest = await uploadBlob(base, repo, layer);
  const created = opts.created ?? new Date().toISOString();
  const imageConfig: Record<string, unknown> = {
    Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
    Cmd: ['/hello'],
  };
  if (opts.user !== undefined) imageConfig.User = opts.user;
  if (opts.labels) imageConfig.Labels = opts.labels;
  const config: Record<string, unknown> = {
    architecture: 'amd64',
    os: 'linux',
    created,
    config: imageConfig,
    rootfs: { type: 'layers', diff_ids: [sha256(tar)] },
    history: [{ created, created_by: 'keywarden test pushTestImage' }],
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = await uploadBlob(base, repo, configBytes);
  const manifest = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: configBytes.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layer.length }],
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const res = await fetch(`${base}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' },
    body: manifestBytes,
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`manifest push failed: HTTP ${res.status} ${text}`);
  const digest = sha256(manifestBytes);
  const header = res.headers.get('docker-content-digest');
  if (header && header !== digest) throw new Error(`registry digest ${header} != ${digest}`);
  return { digest, manifest, manifestBytes, config };
}

/** Pushes a raw blob (test helper for hand-built artifacts). */
export async function pushRawBlob(registryHostPort: string, repo: string, data: Buffer): Promise<string> {
  return uploadBlob(`http://${registryHostPort}`, repo, data);
}

/** PUTs a raw manifest; returns its sha256 digest. */
export async function pushRawManifest(
  registryHostPort: string,
  repo: string,
  reference: string,
  bytes: Buffer,
  mediaType: string,
): Promise<string> {
  const res = await fetch(`http://${registryHostPort}/v2/${repo}/manifests/${reference}`, {
    method: 'PUT',
    headers: { 'Content-Type': mediaType },
    body: bytes,
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`manifest push failed: HTTP ${res.status} ${text}`);
  return sha256(bytes);
}

// ------------------------------------------------------------------ token auth proxy

export interface TokenAuthProxy {
  hostPort: string;
  /** each token request: scopes asked for and whether basic credentials were valid */
  tokenRequests: Array<{ scopes: string[]; service: string | null; authorized: boolean }>;
  /** registry requests answered 401 (no / bad bearer token) */
  challenges: number;
  /** registry requests forwarded upstream */
  forwarded: number;
  /** make every issued token invalid */
  revokeTokens(): void;
  close(): Promise<void>;
}

/**
 * A loopback proxy in front of `upstreamHostPort` that implements the
 * distribution bearer-token flow: `/v2/*` requires `Authorization: Bearer <t>`
 * (else 401 + WWW-Authenticate Bearer realm/service/scope), and `/token`
 * issues tokens for valid basic credentials.
 */
export async function startTokenAuthProxy(
  upstreamHostPort: string,
  creds: { username: string; password: string },
  opts: { expiresIn?: number } = {},
): Promise<TokenAuthProxy> {
  const tokens = new Set<string>();
  const state: TokenAuthProxy = {
    hostPort: '',
    tokenRequests: [],
    challenges: 0,
    forwarded: 0,
    revokeTokens: () => tokens.clear(),
    close: async () => undefined,
  };
  const [upHost, upPort] = upstreamHostPort.split(':');
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', `http://${req.headers.host}`);
    if (url.pathname === '/token') {
      const auth = req.headers.authorization ?? '';
      const expected = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
      const authorized = auth === expected;
      state.tokenRequests.push({ scopes: url.searchParams.getAll('scope'), service: url.searchParams.get('service'), authorized });
      if (!authorized) {
        res.writeHead(401, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }));
        return;
      }
      const token = randomBytes(16).toString('hex');
      tokens.add(token);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ token, expires_in: opts.expiresIn ?? 300, issued_at: new Date().toISOString() }));
      return;
    }
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (!bearer || !tokens.has(bearer)) {
      state.challenges++;
      const m = /^\/v2\/(.+?)\/(?:manifests|blobs|tags|referrers)\//.exec(url.pathname);
      const scope = m ? `repository:${m[1]}:${req.method === 'GET' || req.method === 'HEAD' ? 'pull' : 'pull,push'}` : '';
      const realm = `http://${state.hostPort}/token`;
      res.writeHead(401, {
        'Content-Type': 'application/json',
        'WWW-Authenticate': `Bearer realm="${realm}",service="keywarden-test"${scope ? `,scope="${scope}"` : ''}`,
      });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
      return;
    }
    state.forwarded++;
    const headers = { ...req.headers };
    delete headers.authorization;
    const up = http.request(
      { host: upHost, port: Number(upPort), method: req.method, path: req.url, headers },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
      },
    );
    up.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address() as net.AddressInfo;
  state.hostPort = `127.0.0.1:${addr.port}`;
  state.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return state;
}

// ------------------------------------------------------------------ counting proxy

export interface CountingProxy {
  hostPort: string;
  /** every request forwarded, as "METHOD /path" */
  requests: string[];
  /** TCP connections accepted (a client that keeps its connections alive opens few) */
  connections: number;
  close(): Promise<void>;
}

/**
 * A loopback forwarder in front of `upstreamHostPort` that records every request, so a test
 * (or a bench) can count what the broker asked the registry: a cached decision must ask
 * nothing, a tag at most one manifest HEAD.
 */
export async function startCountingProxy(upstreamHostPort: string): Promise<CountingProxy> {
  const [upHost, upPort] = upstreamHostPort.split(':');
  const agent = new http.Agent({ keepAlive: true });
  const state: CountingProxy = { hostPort: '', requests: [], connections: 0, close: async () => undefined };
  const server = http.createServer((req, res) => {
    state.requests.push(`${req.method} ${(req.url ?? '/').split('?')[0]}`);
    const up = http.request({ host: upHost, port: Number(upPort), method: req.method, path: req.url, headers: req.headers, agent }, (upRes) => {
      const headers = { ...upRes.headers };
      // the registry's absolute Location (blob uploads) must point back through the proxy
      if (typeof headers.location === 'string') headers.location = headers.location.replace(`//${upstreamHostPort}`, `//${state.hostPort}`);
      res.writeHead(upRes.statusCode ?? 502, headers);
      upRes.pipe(res);
    });
    up.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  server.on('connection', () => state.connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.hostPort = `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  state.close = () =>
    new Promise<void>((resolve) => {
      agent.destroy();
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return state;
}
