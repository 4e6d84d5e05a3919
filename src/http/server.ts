import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Express } from 'express';
import type { Config } from '../config.js';

export interface RunningServer {
  server: http.Server | https.Server;
  url: string;
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
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections?.();
        setTimeout(() => server.closeAllConnections?.(), 10_000).unref();
      }),
  };
}
