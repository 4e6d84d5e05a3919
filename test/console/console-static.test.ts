/**
 * Serving the auditors' console (issue 16): its files at /console/ with a strict CSP and the other
 * security headers on every response, 503 while it is not built, 404 for unknown files, and
 * CSP violation reports taken (and only logged).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import supertest from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONSOLE_CSP } from '../../src/console/console-static-routes.js';
import { expectProblem } from '../core/helpers.js';
import { startTestBroker, type TestBroker } from '../support/broker.js';

const EXPECTED_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; report-uri /v1/console/csp-report";

function expectSecurityHeaders(res: supertest.Response) {
  expect(res.headers['content-security-policy']).toBe(EXPECTED_CSP);
  expect(res.headers['x-content-type-options']).toBe('nosniff');
  expect(res.headers['x-frame-options']).toBe('DENY');
  expect(res.headers['referrer-policy']).toBe('no-referrer');
}

describe('console static files', () => {
  let built: TestBroker;
  let unbuilt: TestBroker;
  const builtDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-console-built-'));
  const emptyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kw-console-empty-'));
  const INDEX = '<!doctype html><html><head><script type="module" src="app.js"></script><link rel="stylesheet" href="app.css"></head><body>console</body></html>';

  beforeAll(async () => {
    fs.writeFileSync(path.join(builtDir, 'index.html'), INDEX);
    fs.writeFileSync(path.join(builtDir, 'app.js'), 'console.log("kw");\n');
    fs.writeFileSync(path.join(builtDir, 'app.css'), 'body{color:#000}\n');
    fs.writeFileSync(path.join(builtDir, '.secret'), 'dotfile');
    built = await startTestBroker({ env: { KEYWARDEN_CONSOLE_DIR: builtDir } });
    unbuilt = await startTestBroker({ env: { KEYWARDEN_CONSOLE_DIR: emptyDir } });
  });
  afterAll(async () => {
    await built?.close();
    await unbuilt?.close();
    fs.rmSync(builtDir, { recursive: true, force: true });
    fs.rmSync(emptyDir, { recursive: true, force: true });
  });

  it('the CSP is strict: nothing inline, no eval, no framing', () => {
    expect(CONSOLE_CSP).toBe(EXPECTED_CSP);
    expect(CONSOLE_CSP).not.toMatch(/unsafe-inline|unsafe-eval|\*/);
  });

  it('serves index.html at /console/ (not cached) with the security headers; /console redirects', async () => {
    const res = await supertest(built.broker.app).get('/console/');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.text).toBe(INDEX);
    expect(res.headers['cache-control']).toBe('no-store');
    expectSecurityHeaders(res);
    const redirect = await supertest(built.broker.app).get('/console');
    expect(redirect.status).toBe(301);
    expect(redirect.headers.location).toBe('/console/');
    expectSecurityHeaders(redirect);
  });

  it('serves the bundle files with their types, and 404 problems for anything else', async () => {
    const js = await supertest(built.broker.app).get('/console/app.js');
    expect(js.status).toBe(200);
    expect(js.headers['content-type']).toMatch(/^(text|application)\/javascript/);
    expectSecurityHeaders(js);
    const css = await supertest(built.broker.app).get('/console/app.css');
    expect(css.status).toBe(200);
    expect(css.headers['content-type']).toMatch(/^text\/css/);
    for (const p of ['/console/missing.js', '/console/.secret', '/console/%2e%2e%2fpackage.json', '/console/a/b.js', '/console/..%2F..%2Fpackage.json']) {
      const res = await supertest(built.broker.app).get(p);
      expectProblem(res, 404);
      expectSecurityHeaders(res);
      expect(res.text).not.toContain('dotfile');
    }
  });

  it('answers 503 (and the API keeps working) when the console was not built', async () => {
    for (const p of ['/console/', '/console/app.js']) {
      const res = await supertest(unbuilt.broker.app).get(p);
      const body = expectProblem(res, 503, 'console_not_built');
      expect(body.detail).toBe('console not built: run npm run build:console');
      expectSecurityHeaders(res);
    }
    expect((await supertest(unbuilt.broker.app).get('/healthz')).status).toBe(200);
  });

  it('takes CSP reports of both formats (204), small bodies only, public', async () => {
    const app = built.broker.app;
    const legacy = await supertest(app)
      .post('/v1/console/csp-report')
      .set('Content-Type', 'application/csp-report')
      .send(JSON.stringify({ 'csp-report': { 'document-uri': 'http://x/console/', 'violated-directive': 'script-src', 'blocked-uri': 'inline' } }));
    expect(legacy.status, legacy.text).toBe(204);
    const reporting = await supertest(app)
      .post('/v1/console/csp-report')
      .set('Content-Type', 'application/reports+json')
      .send(JSON.stringify([{ type: 'csp-violation', body: { documentURL: 'http://x/console/', effectiveDirective: 'img-src', blockedURL: 'http://evil/' } }]));
    expect(reporting.status).toBe(204);
    expectProblem(await supertest(app).post('/v1/console/csp-report').set('Content-Type', 'application/csp-report').send(JSON.stringify({ pad: 'x'.repeat(20_000) })), 413);
    expectProblem(await supertest(app).post('/v1/console/csp-report').set('Content-Type', 'application/csp-report').send('{not json'), 400);
    expectProblem(await supertest(app).post('/v1/console/csp-report').set('Content-Type', 'text/plain').send('hello'), 415);
    const metrics = await supertest(app).get('/metrics');
    expect(metrics.text).toMatch(/^keywarden_console_csp_reports_total 2$/m);
  });
});
