/**
 * The plugin's HTTP server on a unix socket: the calls dockerd makes, each body read with a size
 * bound and checked with zod, each failure answered with the protocol's `{"Err": "..."}` (status
 * 500, as docker/go-plugins-helpers' sdk does). Nothing a request carries can crash the process
 * or leave a promise rejection unhandled.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { z } from 'zod';
import { DomainError } from '../core/errors.js';
import type { AuthzPlugin } from './authz.js';
import { auditedByBroker, type PluginEvent } from './broker-api.js';
import {
  authzRequestSchema,
  getSecretRequestSchema,
  IMPLEMENTS,
  PLUGIN_CONTENT_TYPE,
  volumeMountRequestSchema,
  volumeRequestSchema,
} from './protocol.js';
import type { SecretProvider } from './secret-provider.js';
import type { VolumeDriver } from './volume-driver.js';

/** dockerd sends authz request bodies of up to 1 MiB, base64-encoded inside JSON. */
const AUTHZ_BODY_LIMIT = 4 * 1024 * 1024;
const BODY_LIMIT = 256 * 1024;

export interface PluginServices {
  secrets: SecretProvider;
  volumes: VolumeDriver;
  authz: AuthzPlugin;
  report: (event: PluginEvent) => void;
  log: (message: string) => void;
}

/**
 * Who audits a call: 'plugin' calls are reported by the plugin; 'broker' calls reach a broker
 * route that audits them, so only refusals made before the broker was asked are reported;
 * 'self' handlers report what they decide themselves.
 */
type Audit = 'plugin' | 'broker' | 'self';

interface Route {
  action: string;
  audit: Audit;
  limit?: number;
  schema?: z.ZodTypeAny;
  handle(body: any): Promise<object>; // eslint-disable-line @typescript-eslint/no-explicit-any
}

class RequestError extends Error {}
class TooLargeError extends RequestError {}

function routes(s: PluginServices): Record<string, Route> {
  const volume = (action: string, audit: Audit, handle: Route['handle'], schema: z.ZodTypeAny = volumeRequestSchema): Route => ({ action, audit, schema, handle });
  return {
    '/Plugin.Activate': { action: 'docker.plugin.activate', audit: 'plugin', handle: async () => ({ Implements: [...IMPLEMENTS] }) },
    '/SecretProvider.GetSecret': {
      action: 'docker.secretprovider.get',
      audit: 'broker',
      schema: getSecretRequestSchema,
      handle: (b) => s.secrets.getSecret(b),
    },
    '/VolumeDriver.Create': volume('docker.volume.create', 'broker', async (b) => (await s.volumes.create(b.Name, b.Opts ?? {}), {})),
    '/VolumeDriver.Remove': volume('docker.volume.remove', 'plugin', async (b) => (await s.volumes.remove(b.Name), {})),
    '/VolumeDriver.Mount': volume('docker.volume.mount', 'broker', async (b) => ({ Mountpoint: await s.volumes.mount(b.Name, b.ID) }), volumeMountRequestSchema),
    '/VolumeDriver.Unmount': volume('docker.volume.unmount', 'plugin', async (b) => (await s.volumes.unmount(b.Name, b.ID), {}), volumeMountRequestSchema),
    '/VolumeDriver.Path': volume('docker.volume.path', 'plugin', async (b) => ({ Mountpoint: s.volumes.path(b.Name) })),
    '/VolumeDriver.Get': volume('docker.volume.get', 'plugin', async (b) => ({ Volume: s.volumes.get(b.Name) })),
    '/VolumeDriver.List': { action: 'docker.volume.list', audit: 'plugin', handle: async () => ({ Volumes: s.volumes.list() }) },
    '/VolumeDriver.Capabilities': { action: 'docker.volume.capabilities', audit: 'plugin', handle: async () => ({ Capabilities: { Scope: 'local' } }) },
    '/AuthZPlugin.AuthZReq': { action: 'docker.authz.request', audit: 'self', limit: AUTHZ_BODY_LIMIT, schema: authzRequestSchema, handle: (b) => s.authz.request(b) },
  };
}

function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        // stop reading; the Err answer goes out with Connection: close and the socket is then dropped
        req.pause();
        req.removeAllListeners('data');
        reject(new TooLargeError(`request body larger than ${limit} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function parseBody(raw: Buffer, schema: z.ZodTypeAny | undefined): unknown {
  if (!schema) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new RequestError('the request body is not valid JSON');
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new RequestError(`invalid request: ${issue.path.join('.') || '(body)'}: ${issue.message}`);
  }
  return parsed.data;
}

function send(res: http.ServerResponse, status: number, body: object): void {
  if (res.headersSent || res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': PLUGIN_CONTENT_TYPE, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** A name for the audit record: the volume, secret or API call the request is about. */
function resourceOf(route: Route, body: unknown): { kind: string; name: string } | undefined {
  const b = body as Record<string, unknown> | undefined;
  if (route.action.startsWith('docker.volume.') && typeof b?.Name === 'string') return { kind: 'volume', name: b.Name };
  if (route.action === 'docker.secretprovider.get' && typeof b?.SecretName === 'string') return { kind: 'secret', name: b.SecretName.slice(0, 200) };
  return undefined;
}

export function createPluginHandler(services: PluginServices): http.RequestListener {
  const table = routes(services);
  return (req, res) => {
    const url = (req.url ?? '/').split('?')[0]!;
    if (url === '/AuthZPlugin.AuthZRes') {
      // responses are not judged (the request was): answer without reading a possibly large body
      req.resume();
      send(res, 200, { Allow: true });
      return;
    }
    const route = table[url];
    if (!route || req.method !== 'POST') {
      req.resume();
      send(res, 404, { Err: `keywarden: unknown plugin call ${req.method} ${url.slice(0, 100)}` });
      return;
    }
    void (async () => {
      let body: unknown;
      try {
        body = parseBody(await readBody(req, route.limit ?? BODY_LIMIT), route.schema);
        const result = await route.handle(body);
        if (route.audit === 'plugin') services.report({ action: route.action, outcome: 'allow', resource: resourceOf(route, body) });
        send(res, 200, result);
      } catch (err) {
        const message = err instanceof RequestError || err instanceof DomainError ? err.message : `internal error: ${(err as Error)?.message ?? String(err)}`;
        if (!(err instanceof RequestError || err instanceof DomainError)) services.log(`${url}: ${(err as Error)?.stack ?? String(err)}`);
        if (route.audit !== 'broker' || !auditedByBroker(err)) {
          const malformed = err instanceof RequestError;
          services.report({ action: route.action, outcome: malformed ? 'error' : 'deny', resource: resourceOf(route, body), reason: message });
        }
        if (err instanceof TooLargeError) {
          res.setHeader('connection', 'close');
          res.once('finish', () => req.destroy());
        }
        send(res, 500, { Err: `keywarden: ${message}` });
      }
    })().catch((err) => services.log(`${url}: unexpected failure: ${String(err)}`));
  };
}

/**
 * Refuses to take over a socket some live process still serves; removes a stale one (a crashed
 * earlier run) so that listen() does not fail with EADDRINUSE.
 */
async function clearStaleSocket(socket: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socket);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new Error(`${socket} exists and is not a socket; refusing to replace it`);
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(socket);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) throw new Error(`another process is serving ${socket}; stop it first`);
  fs.unlinkSync(socket);
}

export interface PluginServer {
  socket: string;
  close(): Promise<void>;
}

/** Serves the plugin on `socket` (mode `mode`, 0660 by default). dockerd knows the plugin by the socket's file name. */
export async function listenPlugin(socket: string, services: PluginServices, mode = 0o660): Promise<PluginServer> {
  fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o700 });
  await clearStaleSocket(socket);
  const server = http.createServer({ requestTimeout: 120_000 }, createPluginHandler(services));
  server.on('clientError', (_err, sock) => sock.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => {
      server.off('error', reject);
      resolve();
    });
  });
  fs.chmodSync(socket, mode);
  server.on('error', (err) => services.log(`plugin socket error: ${err.message}`));
  return {
    socket,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        fs.rmSync(socket, { force: true });
      }),
  };
}
