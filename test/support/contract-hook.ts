/**
 * Validates every response of the broker in the test suite against openapi.yaml (vitest
 * setupFiles runs this module in every test file's worker), so the contract cannot drift:
 *
 * - supertest (tb.request, supertest(app)): the response is checked before the test sees it; a
 *   violation rejects the request with a ContractViolation naming method, path, status and the
 *   schema errors.
 * - Everything else served in-process by a broker's Express app (fetch/http/undici against a
 *   listening broker, CLI subprocesses talking to it, mTLS): the server side records each
 *   finished response, and the test fails in afterEach with the same message.
 *
 * Not covered: brokers in another process (`keywarden serve` spawned by a test), and the
 * problem documents that server.ts writes to the raw socket for HTTP parser errors.
 * Set KEYWARDEN_CONTRACT_HOOK=off to run without it (e.g. to bisect a failure), or =collect to
 * let supertest requests go on and list all of a test's violations at its end.
 */
import http from 'node:http';
import supertest from 'supertest';
import { afterAll, afterEach } from 'vitest';
import { ContractViolation, contractViolations, type ObservedResponse } from './contract.js';

const mode = process.env.KEYWARDEN_CONTRACT_HOOK ?? 'on';
const enabled = mode !== 'off';

// the patches are per process (node:http and supertest's module are shared by the test files a
// worker runs), the afterEach hooks per test file
const state = ((globalThis as Record<symbol, unknown>)[Symbol.for('keywarden.contractHook')] ??= {
  patched: false,
  /** Violations seen on the server side since the last check. */
  serverSideViolations: [] as string[],
}) as { patched: boolean; serverSideViolations: string[] };
const serverSideViolations = state.serverSideViolations;

/** Returns and forgets the server-side violations recorded so far (for the hook's own test). */
export function drainServerSideViolations(): string[] {
  return serverSideViolations.splice(0);
}

function takeServerSideViolations(): void {
  if (serverSideViolations.length === 0) return;
  const problems = serverSideViolations.splice(0);
  throw new ContractViolation(problems);
}

// ---------------------------------------------------------------------------- supertest

interface SuperagentResponse {
  status: number;
  text?: unknown;
  body?: unknown;
  headers: Record<string, string | undefined>;
}

function supertestBody(res: SuperagentResponse): string | undefined {
  if (typeof res.text === 'string') return res.text;
  if (Buffer.isBuffer(res.body)) return res.body.toString('utf8');
  if (typeof res.body === 'string') return res.body;
  return undefined; // not buffered (e.g. application/x-ndjson): the server side checks it
}

type AssertFn = (this: { method: string; url: string }, resError: unknown, res: SuperagentResponse | undefined, fn?: (err: unknown, res: unknown) => void) => void;

function hookSupertest(): void {
  const proto = (supertest as unknown as { Test: { prototype: { assert: AssertFn } } }).Test.prototype;
  const original = proto.assert;
  proto.assert = function (resError, res, fn) {
    if (res && typeof res.status === 'number') {
      const problems = contractViolations({
        method: this.method,
        url: this.url,
        status: res.status,
        contentType: res.headers['content-type'],
        body: supertestBody(res),
      });
      if (problems.length > 0) {
        fn?.call(this, new ContractViolation(problems), res);
        return;
      }
    }
    original.call(this, resError, res, fn);
  };
}

// ---------------------------------------------------------------------------- server side

const captured = new WeakMap<http.ServerResponse, Buffer[]>();

function capture(res: http.ServerResponse, chunk: unknown, encoding: unknown): void {
  // only responses of an Express app (every Express app in the suite is a broker)
  if (!(res as http.ServerResponse & { app?: unknown }).app || chunk == null || typeof chunk === 'function') return;
  let chunks = captured.get(res);
  if (!chunks) captured.set(res, (chunks = []));
  if (typeof chunk === 'string') chunks.push(Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8'));
  else if (chunk instanceof Uint8Array) chunks.push(Buffer.from(chunk));
}

function checkServerSide(res: http.ServerResponse): void {
  const req = (res as http.ServerResponse & { req?: http.IncomingMessage & { originalUrl?: string } }).req;
  if (!req) return;
  const observed: ObservedResponse = {
    method: req.method ?? 'GET',
    url: req.originalUrl ?? req.url ?? '/',
    status: res.statusCode,
    contentType: res.getHeader('content-type')?.toString(),
    body: Buffer.concat(captured.get(res) ?? []).toString('utf8'),
  };
  try {
    serverSideViolations.push(...contractViolations(observed));
  } catch (err) {
    serverSideViolations.push(`${observed.method} ${observed.url}: the contract check failed: ${String(err)}`);
  }
}

function hookServerResponses(): void {
  const proto = http.ServerResponse.prototype as http.ServerResponse & Record<string, unknown>;
  const write = proto.write as (...args: unknown[]) => boolean;
  const end = proto.end as (...args: unknown[]) => http.ServerResponse;
  proto.write = function (this: http.ServerResponse, ...args: unknown[]) {
    capture(this, args[0], args[1]);
    return write.apply(this, args);
  } as typeof proto.write;
  proto.end = function (this: http.ServerResponse & { app?: unknown }, ...args: unknown[]) {
    const first = !this.writableEnded;
    if (first) capture(this, args[0], args[1]);
    const result = end.apply(this, args);
    if (first && this.app) checkServerSide(this);
    return result;
  } as typeof proto.end;
}

if (enabled) {
  if (!state.patched) {
    state.patched = true;
    if (mode !== 'collect') hookSupertest();
    hookServerResponses();
  }
  afterEach(takeServerSideViolations);
  afterAll(takeServerSideViolations);
}
