import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Express } from 'express';
import pino, { type Logger } from 'pino';
import { DEFAULT_MAX_CONNECTIONS, type Config } from '../config.js';
import { answerClientError, requestTargetOf } from './client-errors.js';
import { ListMethodTakeover, type ParserError } from './list-connection.js';
import { StartupError } from '../startup-errors.js';

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

/** At most one log line per this long about connections refused at the limit (a flood would flood the log). */
const DROP_LOG_INTERVAL_MS = 60_000;

/** What the listener needs from the configuration; tests give the listen address (and TLS) only. */
export type ServerConfig = Pick<Config, 'listen' | 'tls'> & Partial<Pick<Config, 'maxConnections' | 'vaultKvMount'>>;

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
export async function listen(app: Express, config: ServerConfig, options: { logger?: Logger } = {}): Promise<RunningServer> {
  return (await bindServer(config, options)).serve(app);
}

/**
 * Binds the listen address before anything else happens, so that an address in use stops the
 * start before a data dir, key, database or admin key is created (a probe with a throwaway
 * listener would leave a window in which another process takes the port). Connections are
 * accepted from now on; their requests wait, like connections in the kernel's backlog, until
 * serve() hands them to the app, and are dropped if the start fails.
 */
export async function bindServer(config: ServerConfig, options: { logger?: Logger } = {}): Promise<BoundServer> {
  const logger = options.logger ?? pino({ level: 'silent' });
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
  const clientErrors = { vaultKvMount: config.vaultKvMount ?? 'secret' };
  // Vault clients list with the LIST method, which Node's parser refuses: the connection that
  // sends it is taken over (list-connection.ts); every other error is answered as before. A
  // takeover that fails on Node's internals refuses that LIST like any bad method, and says so.
  const listMethod = new ListMethodTakeover(server, (failure, err, socket) => {
    logger.error(
      { err: { message: failure instanceof Error ? failure.message : String(failure) }, path: pathForLog(err), node: process.version },
      'LIST takeover failed (Node internals not as expected): the request is refused with 400',
    );
    answerSafely(err, socket);
  });
  // an exception here would escape from Node's parser callbacks and end the process
  const answerSafely = (err: ParserError, socket: Duplex) => {
    try {
      answerClientError(err, socket, clientErrors);
    } catch (failure) {
      logger.error({ err: { message: failure instanceof Error ? failure.message : String(failure) }, code: err.code }, 'answering a malformed request failed: connection closed');
      socket.destroy();
    }
  };
  server.on('clientError', (err: ParserError, socket: Duplex) => {
    if (!listMethod.takeOver(err, socket)) answerSafely(err, socket);
  });
  server.keepAliveTimeout = 65_000;
  // also bounds a LIST request head, whose target list-connection.ts holds back from the parser
  server.headersTimeout = 66_000;
  server.requestTimeout = 60_000;
  // connections beyond it are closed as they arrive (Node's 'drop'), so idle or slow clients
  // cannot use up the process's file descriptors
  server.maxConnections = config.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  let dropped = 0;
  let lastDropLog = -Infinity;
  server.on('drop', () => {
    dropped++;
    const now = Date.now();
    if (now - lastDropLog < DROP_LOG_INTERVAL_MS) return;
    lastDropLog = now;
    logger.warn({ maxConnections: server.maxConnections, droppedSinceLastWarning: dropped }, 'connection limit reached: new connections are closed (KEYWARDEN_MAX_CONNECTIONS)');
    dropped = 0;
  });
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

/** The refused request's path for a log line: never its query (it may hold a secret). */
function pathForLog(err: ParserError): string | undefined {
  return requestTargetOf(err)?.split('?')[0];
}

function readTlsFile(setting: string, file: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new StartupError(`cannot read ${setting} file ${file} (${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (code ?? 'failed')})`, { cause: err });
  }
}
