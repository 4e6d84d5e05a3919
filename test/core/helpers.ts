import { expect } from 'vitest';
import type { Response } from 'supertest';

/**
 * Values that must never appear in an error body (secret values, client secrets, API keys).
 * Tests register them as they create them; every expectProblem() call checks against all of them.
 */
const sensitive = new Set<string>();

export function markSensitive(...values: string[]): void {
  for (const v of values) if (v && v.length >= 6) sensitive.add(v);
}

/**
 * A token's ttl as a lookup reads it back: what remains of `full` seconds, as in Vault. The lookup
 * may fall in a later second than the issuance (a loaded machine), so a few seconds less is right.
 */
export function remaining(full: number): unknown {
  return expect.toSatisfy((ttl: unknown) => typeof ttl === 'number' && Number.isInteger(ttl) && ttl <= full && ttl >= full - 5, `${full - 5}..${full} seconds`);
}

export function auth(key: string) {
  return { Authorization: `Bearer ${key}` };
}

/** Asserts an RFC 9457 problem response with a stable code, leaking nothing registered as sensitive. */
export function expectProblem(res: Response, status: number, code?: string): Record<string, any> {
  const ctx = `${res.status} ${res.text?.slice(0, 300)}`;
  expect(res.status, ctx).toBe(status);
  expect(res.headers['content-type'], ctx).toMatch(/^application\/problem\+json/);
  const body = JSON.parse(res.text);
  expect(body.status).toBe(status);
  expect(body.code).toMatch(/^[a-z][a-z0-9_]*$/);
  expect(body.type).toBe(`https://keywarden.dev/problems/${body.code}`);
  expect(typeof body.title).toBe('string');
  if (code !== undefined) expect(body.code, ctx).toBe(code);
  assertNoSensitive(res.text);
  return body;
}

export function assertNoSensitive(text: string): void {
  for (const s of sensitive) {
    expect(text.includes(s), `error body leaks a sensitive value`).toBe(false);
    const b64 = Buffer.from(s).toString('base64');
    if (b64.length >= 8) expect(text.includes(b64), `error body leaks a sensitive value (base64)`).toBe(false);
  }
}

export function b64(s: string | Buffer): string {
  return Buffer.from(s).toString('base64');
}

export function unb64(s: string): string {
  return Buffer.from(s, 'base64').toString('utf8');
}
