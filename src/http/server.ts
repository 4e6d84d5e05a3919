import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Express } from 'express';
import type { Config } from '../config.js';
import { ListMethodTakeover } from './list-connection.js';
import { StartupError } from '../startup-errors.js';
import { ProblemError } from './problem.js';

export interface RunningServer {
  server: http.Server | https.Server;
  url: string;
  /** Connections moved off Node's native read path because they sent LIST (list-connection.ts). */
  listConnections(): number;
  /**
   * Stops accepting, lets requests in flight finish, and closes every connection still open
   * after `drainMs` (default 10 s), so a client that never lets go cannot hold the shutdown.
   */
  close(options?: { drainMs?: number }): Promise<void>;
}

/** A listen address that is bound but serves nothing yet (see bindServer). */
export interface BoundServer {
  server: http.Server | https.Server;
  url: string;
  /** Starts answering with `app`, the requests that arrived while starting included. */
  serve(app: Express): RunningServer;
  /** Gives the address back (start-up failed); requests held meanwhile are dropped. */
  close(): Promise<void>;
}

/** How long `close()` waits for requests in flight before it closes their connections. */
export const DEFAULT_DRAIN_MS = 10_000;

/** The listen address could not be bound: in use, not on this host, or a privileged port. */
export class ListenError extends StartupError {
  constructor(address: string, code: string | undefined, options?: { cause?: unknown }) {
    super(`cannot listen on ${address} (${listenReason(code)}); check KEYWARDEN_LISTEN`, options);
    this.name = 'ListenError';
  }
}

function listenReason(code: string | undefined): string {
  switch (code) {
    case 'EADDRINUSE':
      return 'address already in use: another process listens there';
    case 'EADDRNOTAVAIL':
      return 'no such address on this host';
    case 'EACCES':
    case 'EPERM':
      return "permission denied: ports below 1024 need privileges the broker's user lacks";
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_NONAME':
      return 'host name not found in DNS';
    default:
      return code ? `failed: ${code}` : 'failed';
  }
}

/**
 * Plain HTTP, or HTTPS when a certificate is configured. With a client CA, certificates are
 * requested but not required at the TLS layer, so token-authenticated callers still connect;
 * the route layer decides what an unverified or missing certificate means.
 */
export async function listen(app: Express, config: Pick<Config, 'listen' | 'tls'>): Promise<RunningServer> {
  return (await bindServer(config)).serve(app);
}

/**
 * Binds the listen address before anything else happens, so that an address in use stops the
 * start before a data dir, key, database or admin key is created (a probe with a throwaway
 * listener would leave a window in which another process takes the port). Connections are
 * accepted from now on; their requests wait, like connections in the kernel's backlog, until
 * serve() hands them to the app, and are dropped if the start fails.
 */
export async function bindServer(config: Pick<Config, 'listen' | 'tls'>): Promise<BoundServer> {
  let app: Express | undefined;
  const held: Array<[http.IncomingMessage, http.ServerResponse]> = [];
  const handler: http.RequestListener = (req, res) => {
    if (app) app(req, res);
    else held.push([req, res]);
  };
  let server: http.Server | https.Server;
  if (config.tls) {
    server = https.createServer(
      {
        cert: readTlsFile('KEYWARDEN_TLS_CERT', config.tls.certFile),
        key: readTlsFile('KEYWARDEN_TLS_KEY', config.tls.keyFile),
        ca: config.tls.clientCaFile ? readTlsFile('KEYWARDEN_TLS_CLIENT_CA', config.tls.clientCaFile) : undefined,
        requestCert: Boolean(config.tls.clientCaFile),
        rejectUnauthorized: false,
        minVersion: 'TLSv1.2',
      },
      handler,
    );
  } else {
    server = http.createServer(handler);
  }
  // Vault clients list with the LIST method, which Node's parser refuses: the connection that
  // sends it is taken over (list-connection.ts); every other error is answered as before
  const listMethod = new ListMethodTakeover(server);
  server.on('clientError', (err: Error & { code?: string }, socket: Socket) => {
    if (!listMethod.takeOver(err, socket)) answerClientError(err, socket);
  });
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  server.requestTimeout = 60_000;
  const { host: wantedHost, port: wantedPort } = config.listen;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const shown = wantedHost.includes(':') ? `[${wantedHost}]:${wantedPort}` : `${wantedHost}:${wantedPort}`;
      reject(new ListenError(shown, err.code, { cause: err }));
    };
    server.once('error', onError);
    server.listen(wantedPort, wantedHost, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `${config.tls ? 'https' : 'http'}://${host}:${address.port}`;
  const stop = (drainMs: number) =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections?.();
      setTimeout(() => server.closeAllConnections?.(), drainMs).unref();
    });
  return {
    server,
    url,
    serve(ready: Express): RunningServer {
      app = ready;
      for (const [req, res] of held.splice(0)) ready(req, res);
      return { server, url, listConnections: () => listMethod.connections, close: (options) => stop(options?.drainMs ?? DEFAULT_DRAIN_MS) };
    },
    async close() {
      for (const [, res] of held.splice(0)) res.socket?.destroy();
      await stop(0);
    },
  };
}

function readTlsFile(setting: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new StartupError(`cannot read ${setting} file ${file} (${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (code ?? 'failed')})`, { cause: err });
  }
}

/**
 * Errors Node's HTTP parser raises before Express sees the request (an invalid character in a
 * header, headers or request line too large, an unknown method, broken framing, a body cut
 * short, a request timeout). Node's own answer is an empty 400/431/408 with no content type;
 * this answers with a problem document instead, on the same terms as Node: only while the
 * socket is writable and no response to an in-flight request has started. The connection is
 * closed afterwards either way, since the parser cannot resynchronise on the stream.
 */
export function answerClientError(err: Error & { code?: string; reason?: string }, socket: Socket): void {
  const inFlight = (socket as Socket & { _httpMessage?: http.ServerResponse })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const problem = clientErrorProblem(err);
  const body = JSON.stringify(problem.toJSON());
  socket.write(
    `HTTP/1.1 ${problem.status} ${http.STATUS_CODES[problem.status]}\r\n` +
      'Content-Type: application/problem+json\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n` +
      'Cache-Control: no-store\r\n' +
      'X-Content-Type-Options: nosniff\r\n' +
      'Connection: close\r\n' +
      '\r\n' +
      body,
  );
  // end() flushes the answer before closing; destroy() guarantees the socket goes away even when
  // the peer never reads, so no half-parsed connection lingers
  socket.end(() => socket.destroy());
  socket.setTimeout(5000, () => socket.destroy());
}

function clientErrorProblem(err: Error & { code?: string; reason?: string }): ProblemError {
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    return new ProblemError(431, 'headers_too_large', 'Request header fields too large', `the request line and headers exceed ${http.maxHeaderSize} bytes`);
  }
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    return new ProblemError(408, 'request_timeout', 'Request timeout', 'the request was not received in time');
  }
  // llhttp's reason names the rule broken ("Invalid header value char"); it never echoes the input
  const reason = typeof err.reason === 'string' && err.reason ? err.reason : 'malformed request';
  return new ProblemError(400, 'malformed_request', 'Malformed HTTP request', `the request is not valid HTTP/1.1: ${reason}`);
}
