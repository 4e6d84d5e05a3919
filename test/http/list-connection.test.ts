import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import http from 'node:http';
import type { Express } from 'express';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen, type RunningServer } from '../../src/http/server.js';
import { ListConnection, listRequestStart } from '../../src/http/list-connection.js';
import { createCa, issue, writePems, type Issued } from '../support/pki.js';

/**
 * LIST costs nothing on connections that never send it: they stay on Node's native read path
 * (llhttp consumes the socket's handle, no JavaScript sees their bytes), and only a connection
 * whose client sends LIST is taken over by the rewriter. The app here reports, for each request,
 * what connection it came on; the broker-level LIST tests are in test/vault/vault-auth.test.ts.
 */

interface Seen {
  method: string;
  url: string;
  wrapped: boolean;
  /** true when Node's parser reads this socket natively (parser.consume of the handle) */
  native: boolean;
  ip: string | undefined;
  encrypted: boolean;
  authorized: boolean | null;
  peerCN: string | null;
  body: string;
}

/**
 * A plain request listener, not an Express app: the suite's contract hook checks every Express
 * app's responses against openapi.yaml (every Express app there is a broker).
 */
function reportingApp(delays: Record<string, number> = {}): Express {
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const socket = req.socket as tls.TLSSocket & { parser?: { _consumed?: boolean } };
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const seen: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        wrapped: socket instanceof ListConnection,
        native: socket.parser?._consumed === true,
        ip: socket.remoteAddress,
        encrypted: socket.encrypted === true,
        authorized: typeof socket.authorized === 'boolean' ? socket.authorized : null,
        peerCN: typeof socket.getPeerCertificate === 'function' ? ((socket.getPeerCertificate().subject?.CN as string | undefined) ?? null) : null,
        body: Buffer.concat(chunks).toString('latin1'),
      };
      const path = (req.url ?? '').split('?')[0];
      setTimeout(() => {
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(seen));
      }, delays[path] ?? 0);
    });
  };
  return handler as unknown as Express;
}

type Step = string | { responses: number };

/** One connection: writes each string (20 ms apart), or waits until that many responses arrived; then collects until close. */
function talk(connect: () => net.Socket, steps: Step[], limitMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect();
    let received = '';
    const guard = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connection still open after ${limitMs} ms; got: ${received.slice(0, 400)}`));
    }, limitMs);
    socket.on('data', (d) => (received += d.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(guard);
      resolve(received);
    });
    const ready = socket instanceof tls.TLSSocket ? 'secureConnect' : 'connect';
    socket.once(ready, async () => {
      for (const step of steps) {
        if (typeof step === 'string') {
          socket.write(step);
          await new Promise((r) => setTimeout(r, 20));
        } else {
          while (statusLines(received).length < step.responses && !socket.destroyed) await new Promise((r) => setTimeout(r, 5));
        }
      }
    });
  });
}

const statusLines = (text: string) => text.match(/HTTP\/1\.1 \d{3}/g) ?? [];
const reports = (text: string): Seen[] => (text.match(/\{"method"[^{}]*\}/g) ?? []).map((j) => JSON.parse(j));
const get = (path: string, close = false) => `GET ${path} HTTP/1.1\r\nHost: t\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;
const list = (path: string, close = false) => `LIST ${path} HTTP/1.1\r\nHost: t\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;
const post = (path: string, body: string, close = false) =>
  `POST ${path} HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${close ? 'Connection: close\r\n' : ''}\r\n${body}`;

describe('LIST takeover: only connections that send LIST leave the native path', () => {
  let server: RunningServer;
  const port = () => Number(new URL(server.url).port);
  const connect = () => net.connect(port(), '127.0.0.1');

  beforeAll(async () => {
    server = await listen(reportingApp({ '/slow': 150 }), { listen: { host: '127.0.0.1', port: 0 }, tls: undefined });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('GET and POST traffic (keep-alive, pipelined, bodies containing "LIST ") is never wrapped', async () => {
    const before = server.listConnections();
    const keepAlive = await talk(connect, [get('/a'), { responses: 1 }, post('/b', 'LIST /c HTTP/1.1\r\n\r\n'), { responses: 2 }, get('/d', true)]);
    const pipelined = await talk(connect, [get('/e') + post('/f', 'LIST /g HTTP/1.1\r\n\r\n') + get('/h', true)]);
    const seen = [...reports(keepAlive), ...reports(pipelined)];
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual(['GET /a', 'POST /b', 'GET /d', 'GET /e', 'POST /f', 'GET /h']);
    expect(seen.every((s) => !s.wrapped && s.native), JSON.stringify(seen)).toBe(true);
    expect(seen[1].body).toBe('LIST /c HTTP/1.1\r\n\r\n');
    expect(server.listConnections()).toBe(before);
  });

  it('a LIST takes over its connection only, which keeps serving keep-alive requests', async () => {
    const before = server.listConnections();
    const out = await talk(connect, [get('/one'), { responses: 1 }, list('/two?x=1'), { responses: 2 }, get('/three'), { responses: 3 }, list('/four', true)]);
    expect(statusLines(out)).toEqual(['HTTP/1.1 200', 'HTTP/1.1 200', 'HTTP/1.1 200', 'HTTP/1.1 200']);
    const seen = reports(out);
    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual(['GET /one', 'GET /two?x=1&list=true', 'GET /three', 'GET /four?list=true']);
    // native until the LIST, wrapped from then on; the client address is the socket's
    expect(seen.map((s) => [s.native, s.wrapped])).toEqual([[true, false], [false, true], [false, true], [false, true]]);
    expect(seen.every((s) => s.ip === '127.0.0.1')).toBe(true);
    expect(server.listConnections()).toBe(before + 1);
    // and the next connection is native again
    const next = reports(await talk(connect, [get('/five', true)]));
    expect(next).toMatchObject([{ native: true, wrapped: false }]);
    expect(server.listConnections()).toBe(before + 1);
  });

  it('a LIST pipelined behind a request still in flight is answered after it, in order', async () => {
    const out = await talk(connect, [get('/slow') + list('/after') + post('/body', 'LIST /not-a-request HTTP/1.1\r\n\r\n') + get('/last', true)]);
    expect(reports(out).map((s) => `${s.method} ${s.url} ${s.wrapped}`)).toEqual([
      'GET /slow false',
      'GET /after?list=true true',
      'POST /body true',
      'GET /last true',
    ]);
  });

  it('request lines split across reads: "LIS" | "T ..." and "LIST" | " ..." are served', async () => {
    for (const [a, b] of [
      ['LIS', 'T /split HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n'],
      ['LIST', ' /split HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n'],
      [get('/first') + 'LIS', 'T /split HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n'],
    ]) {
      const out = await talk(connect, [a, b]);
      expect(reports(out).pop(), JSON.stringify([a, b, out])).toMatchObject({ url: '/split?list=true', wrapped: true });
    }
  });

  it('what cannot be recognised for sure is refused as any bad method (400 problem), as are LIST look-alikes', async () => {
    const before = server.listConnections();
    // "L" | "IST": the "L" is gone from the packet llhttp reports, and "PROPF" | "IST" fails at the same byte
    const split = await talk(connect, ['L', 'IST /x HTTP/1.1\r\nHost: t\r\n\r\n']);
    const unlink = await talk(connect, ['UNLIST /x HTTP/1.1\r\nHost: t\r\n\r\n']);
    for (const out of [split, unlink]) {
      expect(statusLines(out), out).toEqual(['HTTP/1.1 400']);
      expect(out).toContain('"code":"malformed_request"');
    }
    // split the same way after a keep-alive request ("LI" ended the previous read): that request is answered, then the 400
    const afterGet = await talk(connect, [get('/first') + 'LI', 'ST /x HTTP/1.1\r\nHost: t\r\n\r\n']);
    expect(statusLines(afterGet), afterGet).toEqual(['HTTP/1.1 200', 'HTTP/1.1 400']);
    expect(afterGet).toContain('"code":"malformed_request"');
    expect(server.listConnections()).toBe(before);
    // LISTEN shares LIST's first three bytes: the connection is taken over, and its new parser refuses it the same way
    const listen = await talk(connect, ['LISTEN /x HTTP/1.1\r\nHost: t\r\n\r\n']);
    expect(statusLines(listen), listen).toEqual(['HTTP/1.1 400']);
    expect(listen).toContain('application/problem+json');
    expect(listen).toContain('"code":"malformed_request"');
  });

  it('other parser errors keep their answers and are not taken over', async () => {
    const before = server.listConnections();
    const badHeader = await talk(connect, ['GET / HTTP/1.1\r\nHost: t\r\nX-Bad: a\u0000b\r\n\r\n']);
    expect(statusLines(badHeader)).toEqual(['HTTP/1.1 400']);
    expect(badHeader).toContain('"code":"malformed_request"');
    const huge = await talk(connect, [`GET /${'p'.repeat(20_000)} HTTP/1.1\r\nHost: t\r\n\r\n`]);
    expect(statusLines(huge)).toEqual(['HTTP/1.1 431']);
    expect(server.listConnections()).toBe(before);
  });

  it('an idle taken-over connection is closed by the keep-alive timeout like any other', async () => {
    const keepAlive = server.server.keepAliveTimeout;
    server.server.keepAliveTimeout = 100;
    try {
      const t0 = Date.now();
      const out = await talk(connect, [list('/idle')], 5_000);
      expect(reports(out)).toMatchObject([{ wrapped: true }]);
      // Node adds 1 s to the advertised keep-alive timeout
      expect(Date.now() - t0).toBeLessThan(4_000);
    } finally {
      server.server.keepAliveTimeout = keepAlive;
    }
  });

  it('recognises LIST only at the byte llhttp stops at, after "LI" that starts the method', () => {
    const at = (s: string, e: number) => listRequestStart(Buffer.from(s, 'latin1'), e)?.toString('latin1');
    expect(at('LIST /a', 2)).toBe('LIST /a');
    expect(at('x\r\nLIS', 5)).toBe('LIS');
    expect(at('IST /a', 1)).toBeUndefined();
    expect(at('UNLIST /a', 4)).toBeUndefined();
    expect(at('LINT /a', 3)).toBeUndefined();
  });
});

describe('LIST takeover over TLS', () => {
  let ca: Issued;
  let server: RunningServer;
  let pemDir: string;
  let clientCert: Issued;

  beforeAll(async () => {
    ca = await createCa('list-takeover-ca');
    const cert = await issue(ca, { cn: 'localhost', ips: ['127.0.0.1'], usage: 'server' });
    clientCert = await issue(ca, { cn: 'lister', usage: 'client' });
    const pems = writePems({ 'server.pem': cert.certPem, 'server-key.pem': cert.keyPem, 'ca.pem': ca.certPem });
    pemDir = pems.dir;
    server = await listen(reportingApp(), {
      listen: { host: '127.0.0.1', port: 0 },
      tls: { certFile: pems.paths['server.pem'], keyFile: pems.paths['server-key.pem'], clientCaFile: pems.paths['ca.pem'] },
    });
  });
  afterAll(async () => {
    await server?.close();
    if (pemDir) fs.rmSync(pemDir, { recursive: true, force: true });
  });

  const connect = () =>
    tls.connect({ port: Number(new URL(server.url).port), host: '127.0.0.1', ca: ca.certPem, servername: 'localhost', cert: clientCert.certPem, key: clientCert.keyPem });

  it('plain HTTPS requests stay native; a LIST is rewritten on the decrypted stream, with the TLS state of its socket', async () => {
    const before = server.listConnections();
    const plain = reports(await talk(connect, [get('/a'), { responses: 1 }, get('/b', true)]));
    expect(plain).toMatchObject([
      { wrapped: false, native: true, encrypted: true },
      { wrapped: false, native: true, encrypted: true },
    ]);
    expect(server.listConnections()).toBe(before);

    const out = await talk(connect, [get('/c'), { responses: 1 }, list('/d'), { responses: 2 }, post('/e', 'LIST /f HTTP/1.1\r\n\r\n', true)]);
    const seen = reports(out);
    expect(seen.map((s) => `${s.method} ${s.url} ${s.wrapped}`)).toEqual(['GET /c false', 'GET /d?list=true true', 'POST /e true']);
    // what the broker reads from a TLS connection (encrypted, the verified client certificate) survives the takeover
    for (const s of seen) expect(s).toMatchObject({ encrypted: true, authorized: true, peerCN: 'lister', ip: '127.0.0.1' });
    expect(server.listConnections()).toBe(before + 1);
  });
});

/** Collects what a connection receives until it closes; rejects past `limitMs` (the connection is still open). */
function untilClosed(socket: net.Socket, limitMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let received = '';
    const guard = setTimeout(() => {
      socket.destroy();
      reject(new Error(`connection still open after ${limitMs} ms; got: ${received.slice(0, 400)}`));
    }, limitMs);
    socket.on('data', (d) => (received += d.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(guard);
      resolve(received);
    });
  });
}

/** Writes `text` one byte per `everyMs` until it is all sent or the connection closes. */
async function dribble(socket: net.Socket, text: string, everyMs: number): Promise<void> {
  for (const byte of text) {
    if (socket.destroyed || socket.writableEnded) return;
    socket.write(byte);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

const opened = (socket: net.Socket) => new Promise<void>((resolve) => socket.once('connect', () => resolve()));
const until = async (condition: () => boolean, what: string, limitMs = 5_000) => {
  const deadline = Date.now() + limitMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`not within ${limitMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('LIST request heads are bound by the header timeout (a target sent a byte at a time)', () => {
  let server: RunningServer;
  const HEADERS_TIMEOUT_MS = 2_000;
  const connect = () => net.connect(Number(new URL(server.url).port), '127.0.0.1');
  // far longer than the header timeout: without a bound the server would keep reading it for minutes
  const endlessTarget = `/v1/secret/metadata/${'a'.repeat(3_000)}`;

  beforeAll(async () => {
    server = await listen(reportingApp(), { listen: { host: '127.0.0.1', port: 0 }, tls: undefined });
    server.server.headersTimeout = HEADERS_TIMEOUT_MS;
  });
  afterAll(async () => {
    await server?.close({ drainMs: 0 });
  });

  it('after a complete request on the connection: closed with a 408 once the header timeout has passed', async () => {
    const socket = connect();
    const closed = untilClosed(socket, 6 * HEADERS_TIMEOUT_MS);
    await opened(socket);
    socket.write(get('/first'));
    let received = '';
    socket.on('data', (d) => (received += d.toString('latin1')));
    await until(() => statusLines(received).length === 1, 'the first response');
    socket.write('LIST ');
    void dribble(socket, endlessTarget, 50);
    const out = await closed;
    expect(statusLines(out), out).toEqual(['HTTP/1.1 200', 'HTTP/1.1 408']);
    expect(out).toContain('"code":"request_timeout"');
    // the held-back LIST never reached the app
    expect(reports(out).map((s) => s.url)).toEqual(['/first']);
  });

  it('on a fresh connection whose first request is a LIST: closed with a 408 the same way', async () => {
    const before = server.listConnections();
    const socket = connect();
    const closed = untilClosed(socket, 6 * HEADERS_TIMEOUT_MS);
    await opened(socket);
    socket.write('LIST ');
    void dribble(socket, endlessTarget, 50);
    const out = await closed;
    expect(statusLines(out), out).toEqual(['HTTP/1.1 408']);
    expect(server.listConnections()).toBe(before + 1);
  });

  it('slow headers after a complete LIST target are bound too, from the first byte of the request line', async () => {
    const socket = connect();
    const closed = untilClosed(socket, 6 * HEADERS_TIMEOUT_MS);
    await opened(socket);
    socket.write('LIST /v1/secret/metadata/app HTTP/1.1\r\nHost: t\r\n');
    void dribble(socket, `X-Slow: ${'s'.repeat(3_000)}`, 50);
    expect(statusLines(await closed)).toEqual(['HTTP/1.1 408']);
  });

  it('the deadline is per request: slow heads that together take longer than one timeout are all served on one connection', async () => {
    const socket = connect();
    const closed = untilClosed(socket, 10 * HEADERS_TIMEOUT_MS);
    await opened(socket);
    let received = '';
    socket.on('data', (d) => (received += d.toString('latin1')));
    // five heads of about a quarter of the timeout each: together longer than one timeout
    const heads = 5;
    const pieces = 8;
    const pieceMs = (0.25 * HEADERS_TIMEOUT_MS) / pieces;
    for (let i = 1; i <= heads; i++) {
      const head = list(`/v1/secret/metadata/n${i}`, i === heads);
      const size = Math.ceil(head.length / pieces);
      for (let at = 0; at < head.length; at += size) {
        socket.write(head.slice(at, at + size));
        await new Promise((r) => setTimeout(r, pieceMs));
      }
      await until(() => statusLines(received).length === i, `response ${i}`);
    }
    const out = await closed;
    expect(statusLines(out), out).toEqual(Array(heads).fill('HTTP/1.1 200'));
    expect(reports(out).map((s) => `${s.url} ${s.wrapped}`)).toEqual(Array.from({ length: heads }, (_, i) => `/v1/secret/metadata/n${i + 1}?list=true true`));
  });
});

describe('the connection limit (server.maxConnections)', () => {
  let server: RunningServer;
  const logLines: Array<{ level: number; msg: string; maxConnections?: number }> = [];
  const connect = () => net.connect(Number(new URL(server.url).port), '127.0.0.1');
  const open: net.Socket[] = [];

  beforeAll(async () => {
    const logger = pino({ level: 'info' }, { write: (line: string) => void logLines.push(JSON.parse(line)) });
    server = await listen(reportingApp(), { listen: { host: '127.0.0.1', port: 0 }, tls: undefined, maxConnections: 2 }, { logger });
  });
  afterAll(async () => {
    for (const socket of open) socket.destroy();
    await server?.close({ drainMs: 0 });
  });

  /** A kept-alive connection that has had `first` answered. */
  async function served(first: string): Promise<{ socket: net.Socket; received: () => string }> {
    const socket = connect();
    open.push(socket);
    let received = '';
    socket.on('data', (d) => (received += d.toString('latin1')));
    socket.on('error', () => {});
    await opened(socket);
    socket.write(first);
    await until(() => statusLines(received).length === 1, `an answer to ${first.split('\r\n')[0]}`);
    return { socket, received: () => received };
  }

  it('closes connections over the limit unanswered, counts a taken-over LIST connection once, and serves again once one closes', async () => {
    expect(server.server.maxConnections).toBe(2);
    const viaList = await served(list('/held'));
    const plain = await served(get('/held'));
    expect(reports(viaList.received())).toMatchObject([{ wrapped: true }]);

    const third = connect();
    const refused = untilClosed(third, 5_000);
    third.on('connect', () => third.write(get('/over-the-limit', true)));
    expect(await refused).toBe('');
    expect(logLines.some((l) => l.level === 40 && /connection limit reached/.test(l.msg) && l.maxConnections === 2), JSON.stringify(logLines)).toBe(true);

    plain.socket.destroy();
    // the server counts the closed connection down asynchronously: retry until it accepts again
    let out = '';
    for (let attempt = 0; attempt < 50 && statusLines(out).length === 0; attempt++) {
      out = await talk(connect, [get('/after', true)], 5_000);
      if (statusLines(out).length === 0) await new Promise((r) => setTimeout(r, 20));
    }
    expect(reports(out)).toMatchObject([{ url: '/after' }]);
    // the taken-over connection was never cut
    expect(viaList.socket.destroyed).toBe(false);
  });
});

describe('a takeover that fails on Node internals', () => {
  let server: RunningServer;
  const logLines: Array<{ level: number; msg: string; path?: string; err?: { message: string } }> = [];
  const connect = () => net.connect(Number(new URL(server.url).port), '127.0.0.1');

  /** Hides Node's connection listeners from the takeover on the next connections (a renamed listener in a later Node). */
  let hideListeners = false;

  beforeAll(async () => {
    const logger = pino({ level: 'info' }, { write: (line: string) => void logLines.push(JSON.parse(line)) });
    server = await listen(reportingApp({ '/slow': 150 }), { listen: { host: '127.0.0.1', port: 0 }, tls: undefined }, { logger });
    server.server.on('connection', (socket: net.Socket) => {
      if (hideListeners) socket.listeners = () => [];
    });
    // Node's connection listener refusing the wrapper stands for any internal shape the takeover does not expect
    const emit = server.server.emit.bind(server.server) as (event: string | symbol, ...args: unknown[]) => boolean;
    server.server.emit = ((event: string | symbol, ...args: unknown[]) => {
      if (event === 'connection' && args[0] instanceof ListConnection) throw new TypeError('unexpected internal shape');
      return emit(event, ...args);
    }) as typeof server.server.emit;
  });
  afterAll(async () => {
    await server?.close({ drainMs: 0 });
  });

  it('answers the LIST with a Vault-shaped 400 and logs why; the broker keeps serving', async () => {
    // pipelined behind a slow request, so the failure happens later, in an event callback (where a throw would crash the process)
    for (const bytes of [list('/v1/secret/metadata/app'), get('/slow') + list('/v1/secret/metadata/app')]) {
      const out = await talk(connect, [bytes]);
      const status = statusLines(out);
      expect(status[status.length - 1], out).toBe('HTTP/1.1 400');
      expect(out).toMatch(/Content-Type: application\/json\r\n/);
      expect(JSON.parse(out.slice(out.lastIndexOf('\r\n\r\n') + 4))).toEqual({ errors: ['the request is not valid HTTP/1.1: Invalid method encountered'] });
    }
    const failures = logLines.filter((l) => l.level === 50 && /LIST takeover failed/.test(l.msg));
    expect(failures, JSON.stringify(logLines)).toHaveLength(2);
    expect(failures[0].path).toBe('/v1/secret/metadata/app');
    expect(reports(await talk(connect, [get('/still-serving', true)]))).toMatchObject([{ url: '/still-serving', native: true }]);
  });

  it('a Node listener not found by name: the LIST is refused the same way, and logged', async () => {
    const before = logLines.length;
    hideListeners = true;
    try {
      const out = await talk(connect, [list('/v1/sys/mounts')]);
      expect(statusLines(out), out).toEqual(['HTTP/1.1 400']);
      expect(out.slice(out.lastIndexOf('\r\n\r\n') + 4)).toBe('{"errors":["the request is not valid HTTP/1.1: Invalid method encountered"]}');
    } finally {
      hideListeners = false;
    }
    const failures = logLines.slice(before).filter((l) => l.level === 50 && /LIST takeover failed/.test(l.msg));
    expect(failures).toMatchObject([{ path: '/v1/sys/mounts', err: { message: expect.stringContaining('not found by name') } }]);
  });
});
