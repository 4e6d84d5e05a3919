import fs from 'node:fs';
import type { Response } from 'supertest';
import supertest from 'supertest';
import { expect } from 'vitest';
import type { AuditEvent } from '../../src/audit/audit-types.js';
import type { TestBroker } from '../support/broker.js';

export const UA = 'keywarden-audit-test/1.0';

export function auth(key: string) {
  return { Authorization: `Bearer ${key}`, 'User-Agent': UA };
}

/** Every stored event, ascending by number (queued ones included), straight from the database. */
export async function allEvents(tb: TestBroker): Promise<AuditEvent[]> {
  return tb.broker.services.auditQuery.query({ order: 'asc', limit: 1_000_000 });
}

export function expectProblemCode(res: Response, status: number, code?: string): Record<string, any> {
  const ctx = `${res.status} ${res.text?.slice(0, 300)}`;
  expect(res.status, ctx).toBe(status);
  expect(res.headers['content-type'], ctx).toMatch(/^application\/problem\+json/);
  const body = JSON.parse(res.text);
  expect(body.status).toBe(status);
  if (code) expect(body.code, ctx).toBe(code);
  return body;
}

/** Reads a streamed (non-JSON) body as text. */
export async function textOf(req: supertest.Test): Promise<{ res: Response; text: string }> {
  const res = await req.buffer(true).parse((r, cb) => {
    let data = '';
    r.setEncoding('utf8');
    r.on('data', (chunk: string) => (data += chunk));
    r.on('end', () => cb(null, data));
  });
  return { res, text: res.body as string };
}

/** Asserts no sensitive value (or its base64/base64url form) occurs anywhere in `haystack`. */
export function expectNoSensitive(haystack: string, values: Iterable<string>, where: string): void {
  for (const v of values) {
    if (!v || v.length < 6) continue;
    const forms = new Set([v, Buffer.from(v).toString('base64'), Buffer.from(v).toString('base64url'), encodeURIComponent(v)]);
    for (const f of forms) expect(haystack.includes(f), `${where} contains a sensitive value (${v.slice(0, 6)}…)`).toBe(false);
  }
}

function jsonLines(file: string): Array<Record<string, unknown>> {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
}

/** The events of a JSONL mirror (its signed tree head lines left out). */
export function readJsonl(file: string): AuditEvent[] {
  return jsonLines(file).filter((l) => l.type === undefined) as unknown as AuditEvent[];
}

/** The signed tree heads of a JSONL mirror. */
export function readTreeHeads(file: string): Array<{ type: 'tree-head'; treeSize: number; rootHash: string; checkpoint: string }> {
  return jsonLines(file).filter((l) => l.type === 'tree-head') as never;
}

/** A minimal RFC 4180 parser (quoted cells, doubled quotes, CRLF). */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(cell);
      cell = '';
    } else if (c === '\r' && text[i + 1] === '\n') {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
      i++;
    } else if (c === '\n') {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
    } else cell += c;
  }
  if (quoted) throw new Error('unterminated quoted cell');
  if (cell !== '' || row.length) {
    row.push(cell);
    rows.push(row);
  }
  return rows;
}

export function jwtPayload(token: string): Record<string, any> {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
}

export { capture, eventsAfter, headSeq } from '../support/audit-events.js';
