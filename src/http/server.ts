import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Express } from 'express';
import type { Config } from '../config.js';
import { ListMethodTakeover } from './list-connection.js';
import { ProblemError } from './problem.js';

export interface RunningServer {
  server: http.Server | https.Server;
  url: string;
  /** Connections moved off Node's native read path because they sent LIST (list-connection.ts). */
  listConnections(): number;
  close(): Promise<void>;
}

/**
 * Plain HTTP, or HTTPS when a certificate is configured. With a client CA, certificates are
 * requested but not required at the TLS layer, so token-authenticated callers still connect;
 * the route layer decides what an unverified or missing certificate means.
 */
export async function listen(app: Express, config: Pick<Config, 'listen' | 'tls'>): Promise<RunningServer> {
  let server: http.Server | https.Server;
  if (config.tls) {
    server = https.createServer(
      {
        cert: fs.readFileSync(config.tls.certFile),
        key: fs.readFileSync(config.tls.keyFile),
        ca: config.tls.clientCaFile ? fs.readFileSync(config.tls.clientCaFile) : undefined,
        requestCert: Boolean(config.tls.clientCaFile),
        rejectUnauthorized: false,
        minVersion: 'TLSv1.2',
      },
      app,
    );
  } else {
    server = http.createServer(app);
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
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `${config.tls ? 'https' : 'http'}://${host}:${address.port}`;
  return {
    server,
    url,
    listConnections: () => listMethod.connections,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections?.();
        setTimeout(() => server.closeAllConnections?.(), 10_000).unref();
      }),
  };
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
