import https from 'node:https';
import net from 'node:net';
import { expect } from 'vitest';

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  body: any;
}

/** One HTTPS request over a fresh connection (no agent, no session reuse). */
export function httpsRequest(
  baseUrl: string,
  path: string,
  opts: { ca: string; cert?: string; key?: string; method?: string; headers?: Record<string, string>; body?: string },
): Promise<RawResponse> {
  const url = new URL(path, baseUrl);
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname + url.search,
        method: opts.method ?? 'GET',
        headers: opts.headers,
        ca: opts.ca,
        cert: opts.cert,
        key: opts.key,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: any;
          try {
            body = text ? JSON.parse(text) : undefined;
          } catch {
            body = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (opts.body) req.write(opts.body);
    req.end();
  });
}

export function expectRawProblem(res: RawResponse, status: number, code: string): any {
  const ctx = `${res.status} ${res.text.slice(0, 300)}`;
  expect(res.status, ctx).toBe(status);
  expect(res.headers['content-type'], ctx).toMatch(/^application\/problem\+json/);
  expect(res.body.status, ctx).toBe(status);
  expect(res.body.code, ctx).toBe(code);
  expect(res.body.type).toBe(`https://keywarden.dev/problems/${code}`);
  return res.body;
}

/** A port that was free a moment ago on 127.0.0.1. */
export { freePort } from '../support/registry.js';

export function jwtPayload(token: string): Record<string, any> {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}
