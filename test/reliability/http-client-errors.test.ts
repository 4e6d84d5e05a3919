import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listen, type RunningServer } from '../../src/http/server.js';
import { requestTargetOf } from '../../src/http/client-errors.js';
import { createCa, issue, writePems } from '../support/pki.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

/**
 * Requests Node's HTTP parser rejects before Express runs. Sent as raw bytes to a broker
 * listening on a real loopback port (HTTP and HTTPS), each answer must be a problem document
 * with the connection closed afterwards, and a body cut short must neither hang nor give a 500.
 */

interface RawResponse {
  raw: string;
  status?: number;
  headers: Record<string, string>;
  body: string;
  closedAfterMs: number;
}

type Connect = () => net.Socket;

/** Sends `bytes`, optionally half-closes, and collects everything until the server closes (bounded). */
function exchange(connect: Connect, bytes: string | Buffer, options: { halfClose?: boolean; limitMs?: number } = {}): Promise<RawResponse> {
  const limitMs = options.limitMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect();
    const chunks: Buffer[] = [];
    const guard = setTimeout(() => {
      socket.destroy();
      reject(new Error(`server kept the connection open for more than ${limitMs} ms; got: ${Buffer.concat(chunks).toString('latin1').slice(0, 200)}`));
    }, limitMs);
    socket.on('data', (d) => chunks.push(d));
    socket.on('error', () => {
      // a reset after the answer is fine; what was received is judged below
    });
    socket.on('close', () => {
      clearTimeout(guard);
      const raw = Buffer.concat(chunks).toString('latin1');
      const split = raw.indexOf('\r\n\r\n');
      const head = split >= 0 ? raw.slice(0, split) : raw;
      const [statusLine, ...headerLines] = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of headerLines) {
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(statusLine ?? '')?.[1];
      resolve({ raw, status: status ? Number(status) : undefined, headers, body: split >= 0 ? raw.slice(split + 4) : '', closedAfterMs: Date.now() - started });
    });
    const send = () => {
      socket.write(bytes);
      if (options.halfClose) socket.end();
    };
    if (socket instanceof tls.TLSSocket) socket.once('secureConnect', send);
    else socket.once('connect', send);
  });
}

function expectProblemAnswer(res: RawResponse, status: number, code: string): Record<string, any> {
  const ctx = res.raw.slice(0, 400);
  expect(res.status, ctx).toBe(status);
  expect(res.headers['content-type'], ctx).toBe('application/problem+json');
  expect(res.headers.connection?.toLowerCase(), ctx).toBe('close');
  expect(Number(res.headers['content-length']), ctx).toBe(Buffer.byteLength(res.body, 'latin1'));
  const body = JSON.parse(res.body);
  expect(body).toMatchObject({ status, code, type: `https://keywarden.dev/problems/${code}` });
  expect(typeof body.title).toBe('string');
  expect(typeof body.detail).toBe('string');
  return body;
}

const request = (lines: string[], body = '') => lines.join('\r\n') + '\r\n\r\n' + body;

/** Each malformed request, what Node's parser makes of it, and the problem it must get. */
const malformed: Array<{ name: string; bytes: string; status: number; code: string }> = [
  { name: 'NUL in a header value', bytes: request(['GET /healthz HTTP/1.1', 'Host: x', 'X-Probe: a\u0000b']), status: 400, code: 'malformed_request' },
  { name: 'DEL in a header value', bytes: request(['GET /healthz HTTP/1.1', 'Host: x', 'X-Probe: a\u007fb']), status: 400, code: 'malformed_request' },
  { name: 'DEL in a header name', bytes: request(['GET /healthz HTTP/1.1', 'Host: x', 'X-Pro\u007fbe: a']), status: 400, code: 'malformed_request' },
  { name: 'a huge query string', bytes: request([`GET /healthz?q=${'a'.repeat(20_000)} HTTP/1.1`, 'Host: x']), status: 431, code: 'headers_too_large' },
  { name: 'a huge path', bytes: request([`GET /${'p'.repeat(20_000)} HTTP/1.1`, 'Host: x']), status: 431, code: 'headers_too_large' },
  {
    name: 'too many header bytes',
    bytes: request(['GET /healthz HTTP/1.1', 'Host: x', ...Array.from({ length: 400 }, (_, i) => `X-Filler-${i}: ${'f'.repeat(60)}`)]),
    status: 431,
    code: 'headers_too_large',
  },
  { name: 'an unknown method', bytes: request(['FROBNICATE /healthz HTTP/1.1', 'Host: x']), status: 400, code: 'malformed_request' },
  { name: 'a negative Content-Length', bytes: request(['POST /v1/groups HTTP/1.1', 'Host: x', 'Content-Type: application/json', 'Content-Length: -1'], '{}'), status: 400, code: 'malformed_request' },
  {
    name: 'both Content-Length and Transfer-Encoding',
    bytes: request(['POST /v1/groups HTTP/1.1', 'Host: x', 'Content-Type: application/json', 'Content-Length: 2', 'Transfer-Encoding: chunked'], '2\r\n{}\r\n0\r\n\r\n'),
    status: 400,
    code: 'malformed_request',
  },
  {
    name: 'a bad chunk size',
    bytes: request(['POST /v1/groups HTTP/1.1', 'Host: x', 'Content-Type: application/json', 'Transfer-Encoding: chunked'], 'zz\r\n{}\r\n0\r\n\r\n'),
    status: 400,
    code: 'malformed_request',
  },
  { name: 'a broken request line', bytes: 'GET\u0000/ HTTP/1.1\r\n\r\n', status: 400, code: 'malformed_request' },
];

describe('HTTP-level errors are problem documents', () => {
  let tb: TestBroker;
  let plain: RunningServer;
  let secure: RunningServer;
  let pemDir: string;
  const port = (s: RunningServer) => Number(new URL(s.url).port);

  beforeAll(async () => {
    tb = await startTestBroker();
    plain = await listen(tb.broker.app, { listen: { host: '127.0.0.1', port: 0 }, tls: undefined });
    const ca = await createCa('kw-http-errors-ca');
    const server = await issue(ca, { cn: '127.0.0.1', ips: ['127.0.0.1'], usage: 'server' });
    const pems = writePems({ 'server.pem': server.certPem, 'server.key': server.keyPem });
    pemDir = pems.dir;
    secure = await listen(tb.broker.app, { listen: { host: '127.0.0.1', port: 0 }, tls: { certFile: pems.paths['server.pem'], keyFile: pems.paths['server.key'] } });
  });
  afterAll(async () => {
    await plain?.close();
    await secure?.close();
    await tb?.close();
    if (pemDir) fs.rmSync(pemDir, { recursive: true, force: true });
  });

  const overHttp: Connect = () => net.connect(port(plain), '127.0.0.1');
  const overHttps: Connect = () => tls.connect({ port: port(secure), host: '127.0.0.1', rejectUnauthorized: false });

  it('the raw harness sees an ordinary answer from the same listener', async () => {
    const res = await exchange(overHttp, request(['GET /healthz HTTP/1.1', 'Host: x', 'Connection: close']));
    expect(res.status, res.raw).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ status: 'ok' });
  });

  for (const c of malformed) {
    it(`${c.name}: ${c.status} ${c.code}, then the connection closes`, async () => {
      const res = await exchange(overHttp, c.bytes);
      expectProblemAnswer(res, c.status, c.code);
    });
  }

  it('the HTTPS listener answers the same way', async () => {
    expectProblemAnswer(await exchange(overHttps, malformed[0].bytes), 400, 'malformed_request');
    expectProblemAnswer(await exchange(overHttps, malformed[3].bytes), 431, 'headers_too_large');
  });

  it('a body cut short gets a 400 problem (never a 500) and the connection closes', async () => {
    const body = '{"name":"cut';
    const res = await exchange(
      overHttp,
      request(['POST /v1/groups HTTP/1.1', 'Host: x', `Authorization: Bearer ${tb.adminKey}`, 'Content-Type: application/json', `Content-Length: ${body.length + 100}`], body),
      { halfClose: true },
    );
    expectProblemAnswer(res, 400, 'malformed_request');
    expect(res.raw).not.toMatch(/^HTTP\/1\.1 5/m);
    // nothing was created from the partial body
    expect((await tb.request.get('/v1/groups/cut').set({ Authorization: `Bearer ${tb.adminKey}` })).status).toBe(404);
  });

  it('a method the parser accepts but no route serves is a problem document too', async () => {
    const res = await exchange(overHttp, request(['PROPFIND /v1/groups HTTP/1.1', 'Host: x', `Authorization: Bearer ${tb.adminKey}`, 'Connection: close']));
    expect(res.status, res.raw).toBeGreaterThanOrEqual(400);
    expect(res.status, res.raw).toBeLessThan(500);
    expect(res.headers['content-type'], res.raw).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(res.body)).toMatchObject({ status: res.status, code: expect.any(String), title: expect.any(String) });
  });
});

/**
 * On the Vault-compatible paths the same refusals come in Vault's shape, `{"errors": [...]}` as
 * exactly application/json, decided by the request line's path when the parser's bytes hold it.
 */
describe('HTTP-level errors on Vault paths are Vault errors', () => {
  let tb: TestBroker;
  let server: RunningServer;
  const connect: Connect = () => net.connect(Number(new URL(server.url).port), '127.0.0.1');

  beforeAll(async () => {
    tb = await startTestBroker();
    server = await listen(tb.broker.app, { listen: { host: '127.0.0.1', port: 0 }, tls: undefined, vaultKvMount: tb.config.vaultKvMount });
  });
  afterAll(async () => {
    await server?.close();
    await tb?.close();
  });

  function expectVaultAnswer(res: RawResponse, status: number, message: RegExp, name: string): void {
    const ctx = `${name}: ${res.raw.slice(0, 400)}`;
    expect(res.status, ctx).toBe(status);
    expect(res.headers['content-type'], ctx).toBe('application/json');
    expect(res.headers.connection?.toLowerCase(), ctx).toBe('close');
    expect(Number(res.headers['content-length']), ctx).toBe(Buffer.byteLength(res.body, 'latin1'));
    const body = JSON.parse(res.body);
    expect(Object.keys(body)).toEqual(['errors']);
    expect(body.errors).toHaveLength(1);
    expect(body.errors[0]).toMatch(message);
  }

  const kv = () => `/v1/${tb.config.vaultKvMount}/data/app`;
  const vaultCases = (): Array<{ name: string; bytes: string; status: number; message: RegExp }> => [
    { name: 'NUL in a header', bytes: request(['GET /v1/sys/health HTTP/1.1', 'Host: x', 'X-Probe: a\u0000b']), status: 400, message: /^the request is not valid HTTP\/1\.1: Invalid header value char$/ },
    { name: 'an unknown method', bytes: request([`FROBNICATE ${kv()} HTTP/1.1`, 'Host: x']), status: 400, message: /Invalid method/ },
    { name: 'an absolute-form target', bytes: request(['GET http://x/v1/sys/health?y=1 HTTP/1.1', 'Host: x', 'X-Probe: a\u0000b']), status: 400, message: /Invalid header value char/ },
    { name: 'a negative Content-Length', bytes: request([`POST ${kv()} HTTP/1.1`, 'Host: x', 'Content-Length: -1'], '{}'), status: 400, message: /not valid HTTP\/1\.1/ },
    { name: 'both Content-Length and Transfer-Encoding', bytes: request([`POST ${kv()} HTTP/1.1`, 'Host: x', 'Content-Length: 2', 'Transfer-Encoding: chunked'], '2\r\n{}\r\n0\r\n\r\n'), status: 400, message: /not valid HTTP\/1\.1/ },
    { name: 'a bad chunk size', bytes: request([`POST ${kv()} HTTP/1.1`, 'Host: x', 'Transfer-Encoding: chunked'], 'zz\r\n{}\r\n0\r\n\r\n'), status: 400, message: /not valid HTTP\/1\.1/ },
    { name: 'an oversized query', bytes: request([`GET /v1/auth/token/lookup-self?q=${'a'.repeat(20_000)} HTTP/1.1`, 'Host: x']), status: 431, message: /^the request line and headers exceed \d+ bytes$/ },
    { name: 'too many header bytes', bytes: request([`GET ${kv()} HTTP/1.1`, 'Host: x', ...Array.from({ length: 400 }, (_, i) => `X-Filler-${i}: ${'f'.repeat(60)}`)]), status: 431, message: /exceed/ },
    { name: 'a LIST with NUL in a header (parsed after the takeover rewrote it)', bytes: request([`LIST /v1/${tb.config.vaultKvMount}/metadata/app HTTP/1.1`, 'Host: x', 'X-Probe: a\u0000b']), status: 400, message: /Invalid header value char/ },
  ];

  it('each malformed request on a Vault path gets a Vault error, then the connection closes', async () => {
    for (const c of vaultCases()) {
      expectVaultAnswer(await exchange(connect, c.bytes), c.status, c.message, c.name);
    }
  });

  it('behind a pipelined request, the refused request decides by its own path', async () => {
    // the refusal goes out before the answer to the request in front of it (nothing of that had been sent yet, as in Node)
    const refusal = (raw: string) => raw.slice(raw.indexOf('HTTP/1.1 400 ')).split(/(?=HTTP\/1\.1 \d{3} )/)[0];
    const vaultThenNative = request(['GET /v1/sys/health HTTP/1.1', 'Host: x']) + request(['GET /v1/groups HTTP/1.1', 'Host: x', 'X-Probe: a\u0000b']);
    expect(refusal((await exchange(connect, vaultThenNative)).raw)).toMatch(/^HTTP\/1\.1 400 [^]*Content-Type: application\/problem\+json\r\n[^]*"code":"malformed_request"/);
    // a request answered asynchronously in front (an API key to look up): an answer already started would leave the refusal unanswered
    const nativeThenVault = request(['GET /v1/groups HTTP/1.1', 'Host: x', `Authorization: Bearer kw_${'x'.repeat(30)}`]) + request(['GET /v1/sys/health HTTP/1.1', 'Host: x', 'X-Probe: a\u0000b']);
    expect(refusal((await exchange(connect, nativeThenVault)).raw)).toMatch(
      /^HTTP\/1\.1 400 [^]*Content-Type: application\/json\r\n[^]*\r\n\r\n\{"errors":\["the request is not valid HTTP\/1\.1: Invalid header value char"\]\}$/,
    );
  });

  it('native paths, and requests whose request line is not known, keep problem documents', async () => {
    expectProblemAnswer(await exchange(connect, request(['GET /v1/groups HTTP/1.1', 'Host: x', 'X-Probe: a\u0000b'])), 400, 'malformed_request');
    // POST /v1/auth/token is the native token endpoint; only /v1/auth/token/ is Vault's
    expectProblemAnswer(await exchange(connect, request(['POST /v1/auth/token HTTP/1.1', 'Host: x', 'Content-Length: -1'])), 400, 'malformed_request');
    // a request line the parser cannot read names no path
    expectProblemAnswer(await exchange(connect, 'GET\u0000/v1/sys/health HTTP/1.1\r\n\r\n'), 400, 'malformed_request');
  });
});

describe('the request target of a refused request, from the bytes the parser reports', () => {
  const at = (text: string, errorAt: number) => requestTargetOf({ rawPacket: Buffer.from(text, 'latin1'), bytesParsed: errorAt });

  it('is the last complete request line at or before the error', () => {
    const two = 'GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\nPOST /v1/groups HTTP/1.1\r\nX: a\u0000';
    expect(at(two, two.length - 1)).toBe('/v1/groups');
    expect(at(two, 20)).toBe('/v1/sys/health');
    expect(at('FROBNICATE /v1/sys/health HTTP/1.1\r\n', 1)).toBe('/v1/sys/health');
  });

  it('is unknown when the line is cut off, unreadable, or not in the packet', () => {
    expect(at('GET /v1/sys/hea', 5)).toBeUndefined();
    expect(at('GET\u0000/v1/sys/health HTTP/1.1\r\n', 3)).toBeUndefined();
    expect(at('X-Probe: a\u0000b\r\n', 11)).toBeUndefined();
    expect(requestTargetOf({})).toBeUndefined();
  });
});
